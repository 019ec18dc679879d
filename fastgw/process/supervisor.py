"""The top process of a `--workers N` instance: forks the workers, restarts one that dies, turns
signals into work for them; and the pid file `fastgw reload` finds the instance by.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fastgw.config import GatewayConfig
from fastgw.process.control import make_run_directory, reload_worker, socket_path
from fastgw.process.worker import Launch, Supervised, read_config

log = logging.getLogger("fastgw")

# A worker that keeps dying right after start is not restarted in a tight loop.
RESTART_BACKOFF_SECONDS = 1.0

# What runs in a forked worker: the config, the launch, its slot; returns the exit code.
RunWorker = Callable[[GatewayConfig, Launch, Supervised], int]


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


class Supervisor:
    """Forks the workers, restarts one that dies, and turns signals into work for them.

    SIGTERM/SIGINT: every worker drains and exits. SIGHUP: the config file is validated here
    (errors are logged as `fastgw check` prints them, and nothing changes), then each worker
    reloads the validated text through its control socket. SIGUSR1: forwarded (files reopen).
    Signals arrive through a wakeup fd, so the loop below does the work, not a signal handler.
    """

    def __init__(
        self, config: GatewayConfig, launch: Launch, workers: int, run_worker: RunWorker
    ) -> None:
        self.config = config
        self.run_worker = run_worker
        self.text: str | None = None  # the text of the last reload applied
        self.launch = launch
        self.workers = workers
        self.node_id = str(uuid.uuid4())
        self.children: dict[int, int] = {}  # pid -> slot
        self.restarts: list[tuple[float, int]] = []  # (when, slot)
        self.stopping = False
        self.status = 0

    def run(self) -> int:
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
        for line in config.warning_lines():
            log.warning("reload: %s", line)
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
                code = self.run_worker(self.config, self.launch, supervised)
            finally:
                os._exit(code)
        self.children[pid] = slot


SUPERVISOR_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


def _ignore_in_handler(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the supervisor's loop; nothing to do here."""
