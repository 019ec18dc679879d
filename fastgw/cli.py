"""The `fastgw` command: `run` (with worker processes), `check`, `reload`, `--version`; and what
runs in one worker (a Gateway, its signals, its control socket).

Workers are forked processes sharing the listen port through SO_REUSEPORT (fastgw.process: the
supervisor restarts a worker that dies, forwards SIGTERM/SIGINT so every worker drains before
exiting, and turns SIGHUP into a validated reload of every worker). The top process writes a pid
file for `fastgw reload`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from fastgw import __version__, build_info
from fastgw.config import GatewayConfig, load_config, parse_listen, parse_listeners
from fastgw.errors import ConfigError
from fastgw.process.limits import client_connection_limit, raise_open_file_limit
from fastgw.process.supervisor import PidFile, Supervisor
from fastgw.process.worker import Launch, LoopErrors, Supervised, read_config

if TYPE_CHECKING:
    from fastgw.gateway import Gateway

log = logging.getLogger("fastgw")


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
    for line in error.lines(source):
        print(line, file=stream)


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
    plugins = sum(1 for _ in config.plugin_entries())
    print(
        f"{path}: ok ({len(config.services)} services, {routes} routes, {plugins} plugins, "
        f"{len(config.consumers)} consumers)"
    )
    for line in config.warning_lines():
        print(line)
    return 0


def _run(args: argparse.Namespace, config: GatewayConfig) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    for line in config.warning_lines():
        log.warning("%s", line)
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
            return run_worker(config, launch, None)
        return Supervisor(config, launch, workers, run_worker).run()


def _raise_open_file_limit() -> None:
    before, after = raise_open_file_limit()
    raised = f" (raised from {before})" if after != before else ""
    log.info(
        "open-file limit %d%s: up to %d client connections per worker",
        after,
        raised,
        client_connection_limit(after),
    )


def run_worker(config: GatewayConfig, launch: Launch, supervised: Supervised | None) -> int:
    """One worker: a Gateway on a uvloop loop until SIGTERM/SIGINT drains it."""
    import uvloop

    return uvloop.run(_serve(config, launch, supervised))


async def _serve(config: GatewayConfig, launch: Launch, supervised: Supervised | None) -> int:
    from fastgw.admin import snapshot
    from fastgw.gateway import Gateway
    from fastgw.process.control import ControlServer, Siblings

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(LoopErrors())
    gateway = Gateway(
        config,
        listen=launch.listen,
        admin_listen=launch.admin,
        reuse_port=supervised is not None,
        node_id=supervised.node_id if supervised is not None else None,
        siblings=Siblings(supervised.run_dir, supervised.slot) if supervised else None,
    )
    try:
        await gateway.start()
    except OSError as error:
        log.error("cannot listen: %s", error)
        return 1
    signals = _WorkerSignals(gateway, launch.config_path)
    signals.install(loop, supervised is None)
    control = None
    if supervised is not None:
        control = ControlServer(
            supervised.run_dir, supervised.slot, lambda: snapshot(gateway.stats()), signals.reload
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


class _WorkerSignals:
    """A worker's signals: SIGTERM/SIGINT drain, SIGUSR1 reopens files, SIGHUP reloads the file
    (alone) or nothing (under a supervisor, which validates and sends the text instead)."""

    def __init__(self, gateway: Gateway, config_path: str) -> None:
        self.gateway = gateway
        self.config_path = config_path
        self.stopping: list[asyncio.Task[None]] = []
        self.reloads: list[asyncio.Task[str | None]] = []

    def install(self, loop: asyncio.AbstractEventLoop, alone: bool) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGUSR1, self.gateway.reopen)
        # a supervised worker's stray SIGHUP changes nothing: its reloads come by control socket
        loop.add_signal_handler(signal.SIGHUP, self.reload_file if alone else lambda: None)

    def stop(self) -> None:
        if not self.stopping:
            log.info("draining")
            self.stopping.append(asyncio.get_running_loop().create_task(self.gateway.stop()))

    def reload_file(self) -> None:
        self.reloads[:] = [task for task in self.reloads if not task.done()]
        self.reloads.append(asyncio.get_running_loop().create_task(self.reload(None)))

    async def reload(self, text: str | None) -> str | None:
        """Reload the config file (or `text`, the supervisor's): None, or why not."""
        path = self.config_path
        new, problems = read_config(path, text)
        if new is None:
            for line in problems:
                log.error("reload: %s", line)
            log.error("reload: %s is invalid; nothing changed", path)
            return "; ".join(problems)
        if text is None:  # a supervisor logged those of the text it sends
            for line in new.warning_lines():
                log.warning("reload: %s", line)
        try:
            await self.gateway.reload(new)
        except Exception as error:
            log.exception("reload: failed; nothing changed")
            return f"{type(error).__name__}: {error}"
        log.info("reload: %s applied (generation %d)", path, self.gateway.generation)
        return None
