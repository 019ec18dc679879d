"""The worker processes of one `--workers N` instance: the control socket each one serves.

Each worker listens on `<run dir>/worker-<slot>.sock` (a directory the supervisor makes, 0700).
The worker a scrape reaches asks the others for a `snapshot` (its counters as JSON) and answers
for the whole instance; the supervisor sends `reload` with the config text it validated. A
request is one command line, then its payload until the client shuts its sending side down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("fastgw")

SOCKET_PREFIX = "worker-"
SOCKET_SUFFIX = ".sock"
# A sibling that does not answer a snapshot in this long is left out of the scrape (it may be
# restarting); the scrape answers with the others rather than hang.
SNAPSHOT_TIMEOUT = 2.0
# A reload builds and starts new plugin instances; this bounds how long the supervisor waits.
RELOAD_TIMEOUT = 30.0
# Commands and config texts are small; a peer sending more is not one of ours.
MAX_REQUEST_BYTES = 16 * 1024 * 1024

SNAPSHOT = b"snapshot"
RELOAD = b"reload"


def socket_path(directory: str | Path, slot: int) -> Path:
    return Path(directory) / f"{SOCKET_PREFIX}{slot}{SOCKET_SUFFIX}"


class Siblings:
    """The other workers of this instance, as the admin listener asks them."""

    def __init__(self, directory: str | Path, slot: int) -> None:
        self.directory = Path(directory)
        self.own = socket_path(directory, slot)

    def paths(self) -> list[Path]:
        try:
            found = sorted(self.directory.glob(f"{SOCKET_PREFIX}*{SOCKET_SUFFIX}"))
        except OSError:
            return []
        return [path for path in found if path != self.own]

    async def snapshots(self) -> list[dict[str, Any]]:
        """Every other worker's snapshot that arrives in time (a missing one is logged)."""
        results = await asyncio.gather(*(self._ask(path) for path in self.paths()))
        return [result for result in results if result is not None]

    async def _ask(self, path: Path) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT):
                reply = await request(path, SNAPSHOT)
            document = orjson.loads(reply)
        except (OSError, TimeoutError, orjson.JSONDecodeError) as error:
            log.warning("metrics: worker %s did not answer (%s); left out", path.name, error)
            return None
        return document if isinstance(document, dict) else None


async def request(path: Path, command: bytes, payload: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(command + b"\n" + payload)
        writer.write_eof()
        return await reader.read(MAX_REQUEST_BYTES)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class ControlServer:
    """A worker's control socket: `snapshot` and `reload` (the supervisor's)."""

    def __init__(
        self,
        directory: str | Path,
        slot: int,
        snapshot: Callable[[], dict[str, Any]],
        reload: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self.path = socket_path(directory, slot)
        self._snapshot = snapshot
        self._reload = reload
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a crashed predecessor's
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                data = await reader.read(MAX_REQUEST_BYTES)
            command, _, payload = data.partition(b"\n")
            if command == SNAPSHOT:
                writer.write(orjson.dumps(self._snapshot()))
            elif command == RELOAD:
                error = await self._reload(payload.decode("utf-8", "replace"))
                writer.write(b"ok" if error is None else b"error: " + error.encode())
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        except Exception:
            log.exception("control socket request failed")
        finally:
            writer.close()


def reload_worker(path: Path, text: str, timeout: float = RELOAD_TIMEOUT) -> str:
    """(Supervisor, blocking) have one worker reload `text`: "ok", or why not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(RELOAD + b"\n" + text.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace") or "no answer"
    except OSError as error:
        return f"unreachable ({error})"


def make_run_directory() -> str:
    import tempfile

    directory = tempfile.mkdtemp(prefix="fastgw-")
    os.chmod(directory, 0o700)
    return directory
