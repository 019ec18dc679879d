"""One log file: batches of lines from the loop, written by a thread of its own.

The event loop never touches the file: a batch (the plugin flushes every FLUSH_SECONDS or at
FLUSH_RECORDS lines, handler.py) becomes one bytes object handed to the file's writer thread,
which appends it with one write (O_APPEND, so workers sharing the file never split each other's
lines). A full disk, a missing directory or a slow disk cost lines, counted and logged once per
interval, never a request: the queue towards the thread is bounded in bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time

from fastgw.observability.ratelog import KeyedRateLimitedLog

log = logging.getLogger("fastgw.file_log")

# Bytes waiting for the writer thread beyond which new batches are dropped (a stuck disk).
MAX_QUEUED_BYTES = 16 * 1024 * 1024
# A file that cannot be opened (deleted directory) is tried again at most this often.
REOPEN_RETRY_SECONDS = 1.0
# Kong's: rw-r--r--
FILE_MODE = 0o644
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

_REOPEN = b"reopen"
_STOP = b"stop"


class LogFile:
    """Appends batches of lines to `path`; `write` is the loop's one call, once per batch."""

    def __init__(self, path: str, reopen_each_write: bool = False) -> None:
        self.path = path
        self.reopen_each_write = reopen_each_write
        self.written = 0  # lines on disk
        self.dropped = 0  # lines lost (full disk, no directory, stuck disk, a bug)
        self.users = 0  # plugin instances sharing this file
        self._lock = threading.Lock()  # written / dropped / queued, shared with the thread
        self._queued = 0
        self._queue: queue.SimpleQueue[bytes | tuple[bytes, int]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._logs = KeyedRateLimitedLog(log, logging.ERROR)

    # -- the loop's side ------------------------------------------------------------------------

    def write(self, lines: list[bytes]) -> None:
        """Queue `lines` (JSON lines without their newlines) for the writer thread, or drop
        them (counted) when the bytes waiting for it would pass MAX_QUEUED_BYTES."""
        if not lines:
            return
        count = len(lines)
        lines.append(b"")
        data = b"\n".join(lines)
        with self._lock:
            if self._queued + len(data) > MAX_QUEUED_BYTES:
                self.dropped += count
                stuck = True
            else:
                self._queued += len(data)
                stuck = False
        if stuck:
            self._logs.emit(
                "stuck",
                "file-log: %s is not keeping up (%d MiB waiting); dropping lines",
                self.path,
                MAX_QUEUED_BYTES >> 20,
            )
            return
        self._ensure_thread()
        self._queue.put((data, count))

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the writer thread (bounded by MAX_QUEUED_BYTES)."""
        return self._queued

    def reopen(self) -> None:
        """Reopen the file before the next write (after logrotate moved it)."""
        self._ensure_thread()
        self._queue.put(_REOPEN)

    def close(self) -> None:
        """Stop the thread once what is queued is written (waits for it: shutdown only)."""
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=5.0)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"file-log {self.path}", daemon=True
            )
            self._thread.start()

    def _count(self, *, written: int = 0, dropped: int = 0, done: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dropped += dropped
            self._queued -= done

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        fd = -1
        retry_at = 0.0
        broken_line = False  # a write stopped mid-line: the next batch starts on a new line
        while True:
            item = self._queue.get()
            if item == _STOP:
                break
            if item == _REOPEN:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                retry_at = 0.0
                continue
            assert isinstance(item, tuple)
            data, count = item
            if fd >= 0 and self.reopen_each_write:
                os.close(fd)
                fd = -1
            if fd < 0 and time.monotonic() >= retry_at:
                fd = self._open()
                if fd < 0:
                    retry_at = time.monotonic() + REOPEN_RETRY_SECONDS
            if fd < 0:
                self._count(dropped=count, done=len(data))
                continue
            if broken_line:
                data = b"\n" + data
            written = self._write(fd, data)
            broken_line = 0 < written < len(data)
            if written == len(data):
                self._count(written=count, done=len(data))
            else:
                # whole lines up to the failure made it; the rest is lost
                kept = data[:written].count(b"\n")
                self._count(written=kept, dropped=count - kept, done=len(data))
                if written == 0 or broken_line:
                    os.close(fd)  # the next batch reopens: the file may have been replaced
                    fd = -1
        if fd >= 0:
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, OPEN_FLAGS, FILE_MODE)
        except OSError as error:
            self._logs.emit(
                f"open {error.errno}",
                "file-log: cannot open %s (%s); dropping lines until it can",
                self.path,
                error.strerror or error,
            )
            return -1

    def _write(self, fd: int, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(fd, view[done:])
            except InterruptedError:
                continue
            except OSError as error:
                reason = "disk full" if error.errno == errno.ENOSPC else error.strerror
                self._logs.emit(
                    f"write {error.errno}",
                    "file-log: cannot write %s (%s); dropping lines",
                    self.path,
                    reason or error,
                )
                break
        return done


# one LogFile per path in this process: instances (and reloads) writing one file share it
_files: dict[str, LogFile] = {}


def acquire(path: str, reopen_each_write: bool) -> LogFile:
    file = _files.get(path)
    if file is None:
        file = _files[path] = LogFile(path, reopen_each_write)
    file.reopen_each_write = file.reopen_each_write or reopen_each_write
    file.users += 1
    return file


def release(file: LogFile) -> None:
    file.users -= 1
    if file.users <= 0:
        if _files.get(file.path) is file:
            del _files[file.path]
        file.close()
