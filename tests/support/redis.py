"""Real Redis for tests: one `redis-server`, or a Redis Cluster of three masters, on free
loopback ports, with nothing persisted (stdlib only; `redis-server` and `redis-cli` on the PATH).

    with RedisServer() as redis:
        redis.cli("SET", "k", "v")
        redis.kill()        # SIGKILL
        redis.start()       # again, same port, empty
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 10.0
CLUSTER_MASTERS = 3
# The cluster bus listens on port + 10000, so data ports stay below this.
MAX_CLUSTER_PORT = 65535 - 10000
# Nothing persisted; and a master syncs a new replica at once: Redis 7 defaults to a diskless sync
# that waits 5 s for more replicas to join (`repl-diskless-sync-delay`), as long as a test's wait.
DATA_SERVER_OPTIONS = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")


def binaries() -> tuple[str, str]:
    """Paths of redis-server and redis-cli; a clear error when they are missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError(
            "redis-server and redis-cli are needed for the Redis tests: "
            "`apt-get install -y redis-server` (`make test` does it when it may)"
        )
    return server, cli


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A loopback port free a moment ago (and its cluster bus port, for cluster nodes)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster:
            return port
        if port <= MAX_CLUSTER_PORT and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`; `start`/`kill`/`stop`, or a context."""

    def __init__(
        self,
        port: int | None = None,
        *,
        cluster_node: bool = False,
        replica_of: int | None = None,
        sentinel_of: tuple[str, int] | None = None,
    ) -> None:
        """`replica_of`: a master's port; `sentinel_of`: (master name, port) to monitor, which
        makes this process a Sentinel."""
        self.server, self.cli_path = binaries()
        self.cluster_node = cluster_node
        self.replica_of = replica_of
        self.sentinel_of = sentinel_of
        self.port = port if port is not None else free_port(cluster=cluster_node)
        self._dir = tempfile.TemporaryDirectory(prefix="fastgw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [self.server]
        if self.sentinel_of is not None:
            # a Sentinel rewrites its config file, so it gets one of its own
            name, master_port = self.sentinel_of
            config = Path(self._dir.name) / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {name} 127.0.0.1 {master_port} 1\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 3000\n"
            )
            command += [str(config), "--sentinel"]
        command += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            *(() if self.sentinel_of else DATA_SERVER_OPTIONS),
            "--dir",
            self._dir.name,
            "--logfile",
            str(Path(self._dir.name) / "redis.log"),
        ]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.cluster_node:
            command += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(Path(self._dir.name) / f"nodes-{self.port}.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                if self.cli("PING", timeout=1) == "PONG":
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server not answering after {START_TIMEOUT}s")
            time.sleep(0.02)

    def log(self) -> str:
        path = Path(self._dir.name) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str, timeout: float = 5.0) -> str:
        """One redis-cli command against this server; its output without the last newline."""
        done = subprocess.run(
            [self.cli_path, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout.decode(errors="replace").rstrip("\n")

    def cli_bytes(self, *args: str) -> bytes:
        """Raw output (values are binary): `--no-raw` off, nothing decoded."""
        done = subprocess.run(
            [self.cli_path, "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
            capture_output=True,
            timeout=5.0,
            check=False,
        )
        return done.stdout

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no save."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisCluster:
    """Three masters, no replicas, all 16384 slots assigned (`redis-cli --cluster create`)."""

    def __init__(self, masters: int = CLUSTER_MASTERS) -> None:
        self.nodes = [RedisServer(cluster_node=True) for _ in range(masters)]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        created = subprocess.run(
            [
                self.nodes[0].cli_path,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout.decode()}")
        deadline = time.monotonic() + START_TIMEOUT
        while not all("cluster_state:ok" in node.cli("CLUSTER", "INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("Redis Cluster not ok after start")
            time.sleep(0.05)

    def keys(self) -> list[str]:
        """Every key on every master."""
        found: list[str] = []
        for node in self.nodes:
            found += [key for key in node.cli("--scan").splitlines() if key]
        return found

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
