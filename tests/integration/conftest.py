"""Loopback fixtures for the proxy tests: a real echo upstream, the gateway, and a raw HTTP client.

The upstream (tests/support/echo.py) runs as a subprocess so its threads and memory stay out of
the gateway's process. The gateway runs either embedded (its own uvloop loop in a thread, so the
tests can use plain blocking sockets and still inspect the pools) or through the CLI in a
subprocess (memory, signals, workers). Every socket has a timeout so a bug cannot hang the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) may not have the repo root
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
SOCKET_TIMEOUT = 5.0  # no single read or write in these tests should take longer
GATEWAY_HOST = "gw.test"

# Ports of gateways' TLS listeners: `connect` speaks TLS to these (see the `wire` fixture).
TLS_PORTS: set[int] = set()


def test_pki() -> Any:
    """The session's test CA and certificates (tests/support/tls.py), made on first use."""
    from tests.support.tls import session_pki

    return session_pki()


def client_tls_context() -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(test_pki().ca))


# -- processes ------------------------------------------------------------------------------------


class LineReader:
    """Collects a subprocess's output lines in a thread, so waiting for one never blocks forever."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[re.Match[str]]:
        """The first `count` lines matching `pattern`, waiting up to `timeout` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {count} line(s) matching {pattern!r} within {timeout}s; got:\n"
                        + "\n".join(self.lines[-30:])
                    )
                self._cond.wait(left)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def stop_process(proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class EchoUpstream:
    port: int
    proc: subprocess.Popen[str]


@pytest.fixture(scope="session")
def echo() -> Iterator[EchoUpstream]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.support.echo", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        match = LineReader(proc.stdout).wait_for(r"READY http://127\.0\.0\.1:(\d+)")[0]
        yield EchoUpstream(int(match.group(1)), proc)
    finally:
        stop_process(proc)


def free_port() -> int:
    """A port nothing listens on (bound and released; fine on loopback for a test run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sleeping(echo_port: int) -> list[str]:
    """The targets of the /sleep requests the echo upstream holds right now."""
    import json
    import urllib.request

    url = f"http://127.0.0.1:{echo_port}/_sleeping"
    with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT) as answer:
        return list(json.load(answer)["sleeping"])


def wait_upstream_holds(echo_port: int, *targets: str, timeout: float = 10.0) -> None:
    """Until the echo upstream holds every one of `targets` (a request in flight is upstream)."""
    deadline = time.monotonic() + timeout
    while True:
        held = sleeping(echo_port)
        if all(held.count(target) >= targets.count(target) for target in targets):
            return
        assert time.monotonic() < deadline, f"upstream holds {held}, not {targets}"
        time.sleep(0.01)


@pytest.fixture(scope="session")
def closed_port() -> int:
    return free_port()


# -- configuration --------------------------------------------------------------------------------


def proxy_config(echo_port: int, closed_port: int, **settings: object) -> str:
    """The config most proxy tests use; `settings` go into the `_fastgw` section."""
    fastgw = "".join(f"  {key}: {value}\n" for key, value in settings.items())
    return f"""\
_format_version: "3.0"
_fastgw:
  admin_listen: null
{fastgw}
services:
  - name: echo
    url: http://127.0.0.1:{echo_port}
    retries: 0
    routes:
      - name: plain
        paths: [/echo, /upload, /stream, /bytes, /close, /sleep, /status]
        strip_path: false
      - name: strip
        paths: [/strip]
      - name: preserve
        paths: [/preserve]
        strip_path: false
        preserve_host: true
      - name: deny
        paths: [/deny]
        plugins:
          - name: request-termination
            config:
              status_code: 401
              message: Unauthorized
  - name: based
    url: http://127.0.0.1:{echo_port}/base
    routes:
      - paths: [/based]
  - name: slow
    url: http://127.0.0.1:{echo_port}
    read_timeout: 300
    retries: 0
    routes:
      - paths: [/slow]
  - name: dead
    url: http://127.0.0.1:{closed_port}
    retries: 1
    routes:
      - paths: [/dead]
"""


# -- the embedded gateway -------------------------------------------------------------------------


class EmbeddedGateway:
    """A `Gateway` on port 0 in its own uvloop loop and thread.

    With `tls`, it listens on a plain and a TLS port (the test PKI's default certificate) and
    `port`, where the tests' clients connect, is the TLS one.
    """

    def __init__(self, config_text: str, tls: bool = False) -> None:
        import dataclasses

        import uvloop

        from fastgw.config import CertificatePair, Listener, parse_config
        from fastgw.gateway import Gateway

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = parse_config(config_text, env={})
        listeners = (Listener("127.0.0.1", 0),)
        if tls:
            pair = CertificatePair(*test_pki().default.texts())
            settings = dataclasses.replace(config.settings, ssl_certificate=pair)
            config = dataclasses.replace(config, settings=settings)
            listeners = (Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, True))

        async def start() -> Gateway:
            gateway = Gateway(config, listen=listeners, admin_listen="off")
            await gateway.start()
            return gateway

        self.gateway = self.run(start())
        self.plain_port = self.gateway.addresses[0][1]
        self.port = self.plain_port
        self.scheme = "http"
        if tls:
            self.tls_port = self.port = self.gateway.addresses[1][1]
            self.scheme = "https"
            TLS_PORTS.add(self.tls_port)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the gateway's loop (its state is only consistent there)."""

        async def wrapper() -> Any:
            return fn()

        return self.run(wrapper())

    def pool(self, index: int = 0) -> Any:
        return self.gateway.pools[index]

    def pool_state(self, index: int = 0) -> tuple[int, int]:
        """(idle, busy) connection counts of a service's upstream pool."""

        def read() -> tuple[int, int]:
            pool = self.gateway.pools[index]
            return sum(1 for c in pool.idle if not c.closed), len(pool.busy)

        return self.call(read)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        """Poll `predicate` (run on the gateway's loop) until true or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return True
            time.sleep(0.02)
        return bool(self.call(predicate))

    def close(self) -> None:
        TLS_PORTS.discard(getattr(self, "tls_port", 0))  # the port may serve plain HTTP next
        try:
            self.run(self.gateway.stop(drain_timeout=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def gateway_config(echo: EchoUpstream, closed_port: int) -> Callable[..., str]:
    """`proxy_config` for this session's upstream: call it with `_fastgw` settings."""

    def make(**settings: object) -> str:
        return proxy_config(echo.port, closed_port, **settings)

    return make


@pytest.fixture
def wire() -> str:
    """How the tests' clients reach embedded gateways: "http", or "https" where a module
    parametrizes this fixture to run its cases over TLS too."""
    return "http"


@pytest.fixture
def make_gateway(
    echo: EchoUpstream, closed_port: int, wire: str
) -> Iterator[Callable[..., EmbeddedGateway]]:
    started: list[EmbeddedGateway] = []

    def make(config_text: str | None = None, **settings: object) -> EmbeddedGateway:
        text = config_text or proxy_config(echo.port, closed_port, **settings)
        gateway = EmbeddedGateway(text, tls=wire == "https")
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., EmbeddedGateway]) -> EmbeddedGateway:
    return make_gateway()


# -- a scripted upstream -------------------------------------------------------------------------


class RawConnection:
    """One upstream-side connection of a `RawUpstream`, for scripts to read from and write to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(256 * 1024)
        except OSError:
            return False
        self.buffer += data
        return bool(data)

    def read_head(self) -> bytes | None:
        """The next request head (without the blank line), or None when the peer closed."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not self._fill():
                return None
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    def read_exactly(self, size: int) -> int:
        """Read and drop `size` body bytes; returns how many arrived before the peer closed."""
        got = min(size, len(self.buffer))
        del self.buffer[:got]
        while got < size:
            if not self._fill():
                break
            take = min(size - got, len(self.buffer))
            del self.buffer[:take]
            got += take
        return got

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class RawUpstream:
    """A socket server running `script(conn)` on each connection; the connection closes when the
    script returns. For upstream behaviour the echo server will not show (faults, stalls)."""

    def __init__(self, script: Callable[[RawConnection], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []  # request lines, as the scripts read them
        self.live: list[RawConnection] = []  # every connection accepted, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(SOCKET_TIMEOUT)
        conn = RawConnection(sock)
        self.live.append(conn)
        original = conn.read_head

        def read_head() -> bytes | None:
            head = original()
            if head is not None:
                self.requests.append(head.split(b"\r\n", 1)[0])
            return head

        conn.read_head = read_head  # type: ignore[method-assign]
        with sock, contextlib.suppress(OSError):
            self.script(conn)

    def close(self) -> None:
        self.listener.close()


def single_route_config(port: int, **service: object) -> str:
    """`/` to 127.0.0.1:`port`; `service` adds service fields (e.g. read_timeout=300)."""
    extra = "".join(f"    {key}: {value}\n" for key, value in service.items())
    return f"""\
_format_version: "3.0"
services:
  - url: http://127.0.0.1:{port}
    retries: 0
{extra}    routes:
      - paths: [/]
"""


def request_length(data: bytes | bytearray) -> int | None:
    """Bytes of the first complete request in `data`, read the way a strict upstream frames it
    (Content-Length or chunked, never both, trailers included); None while incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    fields = [line.split(b":", 1) for line in bytes(data[:end]).lower().split(b"\r\n")[1:] if line]
    lengths = [value.strip() for name, value in fields if name == b"content-length"]
    codings = [value.strip() for name, value in fields if name == b"transfer-encoding"]
    if (lengths and codings) or len(lengths) > 1 or codings not in ([], [b"chunked"]):
        raise ValueError(f"ambiguous framing from the gateway: {bytes(data[:end])!r}")
    pos = end + 4
    if not codings:
        size = int(lengths[0]) if lengths else 0
        return pos + size if len(data) >= pos + size else None
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(data[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            while (eol := data.find(b"\r\n", pos)) >= 0:
                trailer_line = data[pos:eol]
                pos = eol + 2
                if not trailer_line:
                    return pos
            return None
        if len(data) < pos + size + 2:
            return None
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        pos += size + 2


class RecordingUpstream(RawUpstream):
    """Records the exact bytes of every request it gets and answers each with 200 whose body is
    the request line (so responses show which request they answer). A target containing
    `/slow` is answered after SLOW_ANSWER seconds.

    `received`: each complete request, head and body as framed on the wire, in arrival order.
    `unfinished`: what a connection held of a request that never completed when it ended.
    `errors`: framing that a strict upstream would have to guess about (must stay empty)."""

    SLOW_ANSWER = 0.3

    def __init__(self, *, answer_first: bool = False) -> None:
        """`answer_first`: answer as soon as a request's head is in, then read its body (an
        upstream that ignores bodies: where a body the gateway did not frame would be read as
        the next request)."""
        self.received: list[bytes] = []
        self.unfinished: list[bytes] = []
        self.errors: list[str] = []
        self.answer_first = answer_first
        super().__init__(self._record)

    @staticmethod
    def _answer(conn: RawConnection, line: bytes) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(line), line))

    def _record(self, conn: RawConnection) -> None:
        answered = False
        while True:
            if self.answer_first and not answered and conn.buffer.find(b"\r\n\r\n") >= 0:
                answered = True
                self._answer(conn, bytes(conn.buffer[: conn.buffer.find(b"\r\n")]))
            try:
                size = request_length(conn.buffer)
            except ValueError as error:
                self.errors.append(str(error))
                return
            if size is None:
                if not conn._fill():
                    if conn.buffer:
                        self.unfinished.append(bytes(conn.buffer))
                    return
                continue
            raw = bytes(conn.buffer[:size])
            del conn.buffer[:size]
            self.received.append(raw)
            line = raw.split(b"\r\n", 1)[0]
            if b"/slow" in line:
                time.sleep(self.SLOW_ANSWER)
            if answered:
                answered = False
            else:
                self._answer(conn, line)

    def pending(self) -> bytes:
        """What the live connections hold of requests not complete yet."""
        return b"".join(bytes(conn.buffer) for conn in self.live)


def recording_config(port: int, **settings: object) -> str:
    """`/` to a recording upstream; `/deny` and `/forbid` answered by request-termination."""
    fastgw = "".join(f"  {key}: {value}\n" for key, value in settings.items())
    return f"""\
_format_version: "3.0"
_fastgw:
  admin_listen: null
{fastgw}
services:
  - name: recorded
    url: http://127.0.0.1:{port}
    retries: 0
    routes:
      - name: recorded
        paths: [/]
        strip_path: false
      - name: deny
        paths: [/deny]
        plugins:
          - name: request-termination
            config:
              status_code: 401
              message: Unauthorized
      - name: forbid
        paths: [/forbid]
        plugins:
          - name: request-termination
            config:
              status_code: 403
              message: Forbidden
"""


@pytest.fixture
def recording_gateway(
    make_gateway: Callable[..., EmbeddedGateway],
) -> Iterator[Callable[..., tuple[EmbeddedGateway, RecordingUpstream]]]:
    """`recording_gateway(answer_first=False, **settings)`: an embedded gateway in front of a
    RecordingUpstream; `settings` go into `_fastgw`."""
    upstreams: list[RecordingUpstream] = []

    def make(
        *, answer_first: bool = False, **settings: object
    ) -> tuple[EmbeddedGateway, RecordingUpstream]:
        upstream = RecordingUpstream(answer_first=answer_first)
        upstreams.append(upstream)
        return make_gateway(recording_config(upstream.port, **settings)), upstream

    yield make
    for upstream in upstreams:
        upstream.close()


@pytest.fixture
def raw_gateway(
    make_gateway: Callable[..., EmbeddedGateway],
) -> Iterator[Callable[..., tuple[EmbeddedGateway, RawUpstream]]]:
    """`raw_gateway(script, **service)`: a scripted upstream and an embedded gateway routing `/`
    to it; `service` goes into the service's config (single_route_config)."""
    upstreams: list[RawUpstream] = []

    def make(
        script: Callable[[RawConnection], None], **service: object
    ) -> tuple[EmbeddedGateway, RawUpstream]:
        upstream = RawUpstream(script)
        upstreams.append(upstream)
        return make_gateway(single_route_config(upstream.port, **service)), upstream

    yield make
    for upstream in upstreams:
        upstream.close()


# -- the gateway through its CLI ------------------------------------------------------------------


class CliGateway:
    """`fastgw run` in a subprocess; `port` is read from its start-up log."""

    def __init__(
        self,
        config_path: Path,
        *args: str,
        listen: str | None = "127.0.0.1:0",
        nofile: int | None = None,
    ) -> None:
        command = [PYTHON, "-m", "fastgw", "run", "-c", str(config_path)]
        if listen is not None:  # None: the config's listeners
            command += ["--listen", listen]
        if nofile is not None:
            # soft and hard limit both (sh's ulimit sets both), so the gateway cannot raise it;
            # exec keeps the pid
            command = ["sh", "-c", f'ulimit -n {int(nofile)} && exec "$0" "$@"', *command]
        self.proc = subprocess.Popen(
            [*command, "--admin-listen", "off", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = LineReader(self.proc.stderr)
        self.pid = self.proc.pid
        self.port = 0

    def wait_listening(self, workers: int = 1, timeout: float = 15.0) -> int:
        matches = self.log.wait_for(r"listening on 127\.0\.0\.1:(\d+)", workers, timeout)
        self.port = int(matches[0].group(1))
        return self.port

    def signal(self, signum: int = signal.SIGTERM) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., CliGateway]]:
    started: list[CliGateway] = []

    def run(
        config_text: str, *args: str, listen: str | None = "127.0.0.1:0", nofile: int | None = None
    ) -> CliGateway:
        config = tmp_path / f"gateway-{len(started)}.yaml"
        config.write_text(config_text)
        cli = CliGateway(config, *args, listen=listen, nofile=nofile)
        started.append(cli)
        return cli

    yield run
    for cli in started:
        cli.stop()


# -- a raw HTTP/1.1 client ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes = b""
    chunked: bool = False  # the body came with chunked framing
    http_version: str = "HTTP/1.1"
    raw_head: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def names(self) -> list[str]:
        return [key for key, _ in self.headers]


class Client:
    """One connection; sends raw bytes and parses responses independently of fastgw's code.

    To a gateway's TLS port (TLS_PORTS) it speaks TLS, verifying the test CA's certificate."""

    def __init__(self, port: int, timeout: float = SOCKET_TIMEOUT) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if port in TLS_PORTS:
            sock = client_tls_context().wrap_socket(sock, server_hostname=GATEWAY_HOST)
        self.sock = sock
        self.buffer = bytearray()

    # sending

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        host: str | None = GATEWAY_HOST,
    ) -> Response:
        self.send(build_request(method, target, headers, body, host=host))
        return self.read_response(head=method == "HEAD")

    # receiving

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(256 * 1024)
        except (ssl_module().SSLEOFError, ssl_module().SSLZeroReturnError):
            return False  # a TLS peer that closed without close_notify
        if not data:
            return False
        self.buffer += data
        return True

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buffer)} of {size} bytes")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if not self._fill():
                raise ConnectionError("closed in the middle of a line")

    def read_head(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                return head
            if not self._fill():
                raise ConnectionError(f"closed before a full head; got {bytes(self.buffer)!r}")

    def read_response(self, *, head: bool = False, sink: Any = None) -> Response:
        """The next response; with `sink` (e.g. a hashlib object) the body goes there instead."""
        raw = self.read_head()
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = [
            (name.strip().lower(), value.strip())
            for name, value in (line.split(":", 1) for line in lines[1:])
        ]
        response = Response(int(status), reason, headers, http_version=version, raw_head=raw)
        code = response.status
        if head or code in (204, 304) or 100 <= code < 200:
            return response
        collected: list[bytes] = []
        add = sink.update if sink is not None else collected.append
        te = (response.header("transfer-encoding") or "").lower()
        if te == "chunked":
            response.chunked = True
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():  # trailers, then the empty line
                        pass
                    break
                self._read_into(size, add)
                if self.read_exactly(2) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
        elif response.header("content-length") is not None:
            self._read_into(int(response.header("content-length") or 0), add)
        else:
            add(self.read_until_closed())
        response.body = b"".join(collected)
        return response

    def _read_into(self, size: int, add: Callable[[bytes], Any]) -> None:
        left = size
        while left:
            if not self.buffer and not self._fill():
                raise ConnectionError(f"closed with {left} of {size} body bytes missing")
            part = bytes(self.buffer[:left])
            del self.buffer[: len(part)]
            add(part)
            left -= len(part)

    def read_until_closed(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True when the peer closes within `timeout` without sending anything more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl_module().SSLError):
            return True
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)
        if data:
            self.buffer += data
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def ssl_module() -> Any:
    import ssl

    return ssl


def build_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host: str | None = GATEWAY_HOST,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = {name.lower() for name, _ in headers or ()}
    lines += [f"{name}: {value}" for name, value in headers or ()]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(port: int, timeout: float = SOCKET_TIMEOUT) -> Client:
        client = Client(port, timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
