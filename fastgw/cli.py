"""The `fastgw` command: `run` (with worker processes), `check`, `--version`.

Workers are forked processes sharing the listen port through SO_REUSEPORT; the parent restarts a
worker that dies and forwards SIGTERM/SIGINT so every worker drains before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Literal

from fastgw import __version__, build_info
from fastgw.config import GatewayConfig, load_config, parse_listen, parse_listeners
from fastgw.edge_config import Listener
from fastgw.errors import ConfigError
from fastgw.ratelog import KeyedRateLimitedLog

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
    check = commands.add_parser("check", help="validate a config and exit")
    check.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as error:
        for path, reason in error.problems:
            print(f"{path}: {reason}", file=sys.stderr)
        print(f"{args.config}: {len(error.problems)} error(s)", file=sys.stderr)
        return 1
    if args.command == "check":
        return _check(args.config, config)
    return _run(args, config)


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
    if workers == 1:
        return _worker(config, listen, admin, reuse_port=False)
    return _supervise(config, listen, admin, workers)


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


def _worker(
    config: GatewayConfig,
    listen: tuple[Listener, ...] | None,
    admin: tuple[str, int] | Literal["off"] | None,
    *,
    reuse_port: bool,
) -> int:
    import uvloop

    from fastgw.gateway import Gateway

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(LoopErrors())
        gateway = Gateway(config, listen=listen, admin_listen=admin, reuse_port=reuse_port)
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

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
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
        log.info("stopped")
        return 0

    return uvloop.run(serve())


def _supervise(
    config: GatewayConfig,
    listen: tuple[Listener, ...] | None,
    admin: tuple[str, int] | Literal["off"] | None,
    workers: int,
) -> int:
    children: dict[int, int] = {}  # pid -> slot
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = _worker(config, listen, admin, reuse_port=True)
            finally:
                os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(workers):
        spawn(slot)
    log.info("supervising %d workers", workers)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        slot = children.pop(pid)
        if stopping:
            continue
        log.error("worker %d exited (%s); restarting", pid, code)
        status = 1
        time.sleep(RESTART_BACKOFF_SECONDS)
        if not stopping:
            spawn(slot)
    return 0 if stopping else status
