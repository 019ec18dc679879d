"""The `fastgw` command: `run` (with worker processes), `check`, `reload`, `--version`.

Workers are forked processes sharing the listen port through SO_REUSEPORT; the parent restarts a
worker that dies, forwards SIGTERM/SIGINT so every worker drains before exiting, and turns SIGHUP
into a validated reload of every worker. The top process writes a pid file for `fastgw reload`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from fastgw import __version__, build_info
from fastgw.config import GatewayConfig, load_config, parse_config, parse_listen, parse_listeners
from fastgw.config.edge import Listener
from fastgw.errors import ConfigError
from fastgw.observability.ratelog import KeyedRateLimitedLog

log = logging.getLogger("fastgw")

# A worker that keeps dying right after start is not restarted in a tight loop.
RESTART_BACKOFF_SECONDS = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgw", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action="version", version=f"fastgw {__version__} ({build_info.build()})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", required=True, help="declarative config (YAML or JSON)")
    run.add_argument(
        "--listen",
        help='proxy addresses, e.g. "127.0.0.1:8000, 127.0.0.1:8443 ssl" (overrides the config)',
    )
    run.add_argument("--admin-listen", help="admin address, or 'off'")
    run.add_argument("--workers", help="worker processes: a number or 'auto'")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--pid-file", help=f"where the running instance's pid goes ({PID_HELP})")
    check = commands.add_parser("check", help="validate a config and exit")
    check.add_argument("-c", "--config", required=True)
    reload = commands.add_parser(
        "reload", help="validate a config, then have the running instance reload it (SIGHUP)"
    )
    reload.add_argument("-c", "--config", required=True, help="the config the instance runs")
    reload.add_argument("--pid-file", help=f"the running instance's pid file ({PID_HELP})")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print_problems(error, args.config)
        return 1
    if args.command == "check":
        return _check(args.config, config)
    if args.command == "reload":
        return _signal_reload(args)
    return _run(args, config)


# `fastgw reload -c X` finds the instance that `fastgw run -c X` started, with no flag on either.
PID_HELP = "default: the config's path with .pid appended"


def pid_file_for(args: argparse.Namespace) -> Path:
    return Path(args.pid_file) if args.pid_file else Path(f"{args.config}.pid")


def print_problems(error: ConfigError, source: str, stream: TextIO = sys.stderr) -> None:
    """The lines `fastgw check` prints for an invalid config (reloads log the same)."""
    for line in problem_lines(error, source):
        print(line, file=stream)


def problem_lines(error: ConfigError, source: str) -> list[str]:
    lines = [f"{path}: {reason}" for path, reason in error.problems]
    lines.append(f"{source}: {len(error.problems)} error(s)")
    return lines


def _signal_reload(args: argparse.Namespace) -> int:
    pid_file = pid_file_for(args)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as error:
        print(f"{pid_file}: cannot read the running instance's pid ({error})", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"{pid_file}: no process {pid} (a stale pid file?)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"{pid_file}: not allowed to signal process {pid}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok; reload signalled to pid {pid}")
    return 0


def _check(path: str, config: GatewayConfig) -> int:
    """The config is valid; now ask what it depends on outside (each plugin's IdP, when it
    answers) whether it can work: an issuer mismatch fails every request, so it fails check."""
    from fastgw.gateway import probe_plugins

    logging.getLogger("fastgw").setLevel(logging.CRITICAL)  # check prints its own findings
    findings = asyncio.run(probe_plugins(config))
    errors = [(where, message) for where, kind, message in findings if kind == "error"]
    for where, kind, message in findings:
        print(
            f"{where}: {message}" if kind == "error" else f"{where}: note: {message}",
            file=sys.stderr if kind == "error" else sys.stdout,
        )
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    routes = sum(len(service.routes) for service in config.services)
    plugins = len(config.plugins) + sum(
        len(s.plugins) + sum(len(r.plugins) for r in s.routes) for s in config.services
    )
    print(
        f"{path}: ok ({len(config.services)} services, {routes} routes, {plugins} plugins, "
        f"{len(config.consumers)} consumers)"
    )
    return 0


def _run(args: argparse.Namespace, config: GatewayConfig) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    try:
        listen = parse_listeners(args.listen, "--listen") if args.listen else None
        admin: tuple[str, int] | Literal["off"] | None = None  # None: the config's
        if args.admin_listen:
            admin = (
                "off"
                if args.admin_listen == "off"
                else parse_listen(args.admin_listen, "--admin-listen")
            )
        workers = config.settings.workers
        if args.workers:
            workers = (os.cpu_count() or 1) if args.workers == "auto" else int(args.workers)
            if workers < 1:
                raise ValueError
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except ValueError:
        print("--workers: must be a number >= 1 or 'auto'", file=sys.stderr)
        return 1
    _raise_open_file_limit()
    launch = Launch(args.config, listen, admin)
    with PidFile(pid_file_for(args)):
        if workers == 1:
            return _worker(config, launch, supervised=None)
        return Supervisor(config, launch, workers).run()


class PidFile:
    """The top process's pid, for `fastgw reload` (and logrotate's `kill -USR1`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = False

    def __enter__(self) -> PidFile:
        try:
            self.path.write_text(f"{os.getpid()}\n")
            self.written = True
        except OSError as error:
            log.warning(
                "cannot write the pid file %s (%s): reload with kill -HUP %d",
                self.path,
                error.strerror or error,
                os.getpid(),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.written:
            return
        with contextlib.suppress(OSError, ValueError):
            if int(self.path.read_text().strip()) == os.getpid():
                self.path.unlink()


def _raise_open_file_limit() -> None:
    from fastgw.gateway import client_connection_limit, raise_open_file_limit

    before, after = raise_open_file_limit()
    raised = f" (raised from {before})" if after != before else ""
    log.info(
        "open-file limit %d%s: up to %d client connections per worker",
        after,
        raised,
        client_connection_limit(after),
    )


class LoopErrors:
    """The worker loop's exception handler: one line per kind of error, rate-limited.

    What reaches it comes from uvloop's transports and servers (a peer resetting mid-write, an
    accept failing): repeatable at will by clients, so never a log flood and never a traceback
    unless the exception is not an OSError (then it is a bug and the traceback helps).
    """

    def __init__(self) -> None:
        self._logs = KeyedRateLimitedLog(log, logging.ERROR)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        message = str(context.get("message") or "event loop error")
        error = context.get("exception")
        kind = f"{type(error).__name__}:{message[:60]}"
        emit = self._logs.emit
        if not isinstance(error, BaseException):
            emit(kind, "event loop: %s", message)
        elif isinstance(error, OSError):
            emit(kind, "event loop: %s: %s", message, error)
        else:
            emit(kind, "event loop: %s: %r", message, error, exc_info=error)


@dataclass(frozen=True, slots=True)
class Launch:
    """How the instance was started: its config file and the command line's overrides."""

    config_path: str
    listen: tuple[Listener, ...] | None
    admin: tuple[str, int] | Literal["off"] | None


@dataclass(frozen=True, slots=True)
class Supervised:
    """A worker's place in a `--workers N` instance."""

    run_dir: str
    slot: int
    node_id: str


def read_config(path: str, text: str | None = None) -> tuple[GatewayConfig | None, list[str]]:
    """(config, []) or (None, the lines `fastgw check` prints): a reload's validation."""
    try:
        if text is None:
            return load_config(path), []
        return parse_config(text, source=path), []
    except ConfigError as error:
        return None, problem_lines(error, path)


def _worker(config: GatewayConfig, launch: Launch, *, supervised: Supervised | None) -> int:
    import uvloop

    from fastgw.admin import snapshot
    from fastgw.gateway import Gateway
    from fastgw.process.control import ControlServer, Siblings

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(LoopErrors())
        siblings = None
        if supervised is not None:
            siblings = Siblings(supervised.run_dir, supervised.slot)
        gateway = Gateway(
            config,
            listen=launch.listen,
            admin_listen=launch.admin,
            reuse_port=supervised is not None,
            node_id=supervised.node_id if supervised is not None else None,
            siblings=siblings,
        )
        try:
            await gateway.start()
        except OSError as error:
            log.error("cannot listen: %s", error)
            return 1
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not stopping:
                log.info("draining")
                stopping.append(loop.create_task(gateway.stop()))

        async def reload(text: str | None) -> str | None:
            """Reload the config file (or `text`, the supervisor's): None, or why not."""
            new, problems = read_config(launch.config_path, text)
            if new is None:
                for line in problems:
                    log.error("reload: %s", line)
                log.error("reload: %s is invalid; nothing changed", launch.config_path)
                return "; ".join(problems)
            try:
                await gateway.reload(new)
            except Exception as error:
                log.exception("reload: failed; nothing changed")
                return f"{type(error).__name__}: {error}"
            log.info("reload: %s applied (generation %d)", launch.config_path, gateway.generation)
            return None

        reloads: list[asyncio.Task[str | None]] = []

        def reload_file() -> None:
            reloads[:] = [task for task in reloads if not task.done()]
            reloads.append(loop.create_task(reload(None)))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        loop.add_signal_handler(signal.SIGUSR1, gateway.reopen)
        control = None
        if supervised is None:
            loop.add_signal_handler(signal.SIGHUP, reload_file)
        else:
            # the supervisor validates and sends the text; a stray SIGHUP changes nothing
            loop.add_signal_handler(signal.SIGHUP, lambda: None)
            control = ControlServer(
                supervised.run_dir, supervised.slot, lambda: snapshot(gateway.stats()), reload
            )
            await control.start()
        addresses = ", ".join(str(listener) for listener in gateway.bound_listeners)
        admin_addresses = ", ".join(f"{h}:{p}" for h, p in gateway.admin_addresses) or "off"
        log.info(
            "fastgw %s (%s) listening on %s (admin %s)",
            __version__,
            build_info.build(),
            addresses,
            admin_addresses,
        )
        await gateway.serve_forever()
        if control is not None:
            await control.stop()
        log.info("stopped")
        return 0

    return uvloop.run(serve())


class Supervisor:
    """Forks the workers, restarts one that dies, and turns signals into work for them.

    SIGTERM/SIGINT: every worker drains and exits. SIGHUP: the config file is validated here
    (errors are logged as `fastgw check` prints them, and nothing changes), then each worker
    reloads the validated text through its control socket. SIGUSR1: forwarded (files reopen).
    Signals arrive through a wakeup fd, so the loop below does the work, not a signal handler.
    """

    def __init__(self, config: GatewayConfig, launch: Launch, workers: int) -> None:
        self.config = config
        self.text: str | None = None  # the text of the last reload applied
        self.launch = launch
        self.workers = workers
        self.node_id = str(uuid.uuid4())
        self.children: dict[int, int] = {}  # pid -> slot
        self.restarts: list[tuple[float, int]] = []  # (when, slot)
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        from fastgw.process.control import make_run_directory

        self.run_dir = make_run_directory()
        wakeup_read, wakeup_write = socket.socketpair()
        wakeup_read.setblocking(False)
        wakeup_write.setblocking(False)
        self._wakeup = (wakeup_read, wakeup_write)
        signal.set_wakeup_fd(wakeup_write.fileno())
        for signum in SUPERVISOR_SIGNALS:
            signal.signal(signum, _ignore_in_handler)
        try:
            for slot in range(self.workers):
                self._spawn(slot)
            log.info("supervising %d workers", self.workers)
            while self.children or (self.restarts and not self.stopping):
                self._wait()
        finally:
            signal.set_wakeup_fd(-1)
            wakeup_read.close()
            wakeup_write.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 0 if self.stopping else self.status

    def _wait(self) -> None:
        timeout = 1.0
        if self.restarts:
            timeout = max(0.0, min(when for when, _ in self.restarts) - time.monotonic())
        readable, _, _ = select.select([self._wakeup[0]], [], [], timeout)
        signals = b""
        if readable:
            with contextlib.suppress(BlockingIOError):
                signals = self._wakeup[0].recv(4096)
        for signum in dict.fromkeys(signals):  # each kind once per wakeup, in arrival order
            self._on_signal(signum)
        self._reap()
        now = time.monotonic()
        due = [slot for when, slot in self.restarts if when <= now]
        self.restarts = [(when, slot) for when, slot in self.restarts if when > now]
        if not self.stopping:
            for slot in due:
                self._spawn(slot)

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self.restarts.clear()
            self._forward(signal.SIGTERM)
        elif signum == signal.SIGHUP and not self.stopping:
            self._reload()
        elif signum == signal.SIGUSR1:
            self._forward(signal.SIGUSR1)

    def _forward(self, signum: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None or self.stopping:
                continue
            log.error("worker %d exited (%s); restarting", pid, code)
            self.status = 1
            self.restarts.append((time.monotonic() + RESTART_BACKOFF_SECONDS, slot))

    def _reload(self) -> None:
        from fastgw.process.control import reload_worker, socket_path

        path = self.launch.config_path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            log.error("reload: cannot read %s (%s); nothing changed", path, error)
            return
        config, problems = read_config(path, text)
        if config is None:
            for line in problems:
                log.error("reload: %s", line)
            log.error("reload: %s is invalid; nothing changed", path)
            return
        self.config, self.text = config, text
        for pid, slot in sorted(self.children.items(), key=lambda item: item[1]):
            answer = reload_worker(socket_path(self.run_dir, slot), text)
            if answer == "ok":
                log.info("reload: worker %d (pid %d) reloaded %s", slot, pid, path)
            else:
                log.error("reload: worker %d (pid %d): %s", slot, pid, answer)

    def _spawn(self, slot: int) -> None:
        supervised = Supervised(self.run_dir, slot, self.node_id)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for signum in SUPERVISOR_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                for sock in self._wakeup:
                    sock.close()
                code = _worker(self.config, self.launch, supervised=supervised)
            finally:
                os._exit(code)
        self.children[pid] = slot


SUPERVISOR_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


def _ignore_in_handler(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the supervisor's loop; nothing to do here."""
