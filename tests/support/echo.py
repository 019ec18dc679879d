"""A real upstream for tests and the demo: stdlib `http.server`, independent of fastgw's code.

It echoes what it received as JSON and has a few endpoints for streaming, slowness and faults:
  /stream?size=N        chunked response of N bytes      /bytes?size=N   Content-Length response
  /close?size=N         close-delimited response          /sleep?ms=N     answer after N ms
  /status/N             answer with status N
  /upload               consume the body, return its size and sha256
  /_sleeping            the targets of the /sleep requests held right now (a test waits on it)
  /_received            how many requests each path received ({"paths": {path: count}})
  ?header=Name:Value    (on an echo) a response field to send, repeatable; a Content-Type given
                        replaces the echo's application/json
Run: python -m tests.support.echo --port 9000 [--name a] [--record deliveries.txt]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024

# the targets of the /sleep requests being held (the server's threads share it)
_sleeping: list[str] = []
_sleeping_lock = threading.Lock()
# requests received by path (without the query), for the tests that count what reached here
_received: dict[str, int] = {}
_received_lock = threading.Lock()


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo/1"
    # The head and the body are written separately: without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms per response on a reused connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _consume_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    digest.update(data)
                    total += len(data)
                    left -= len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    break
                digest.update(data)
                total += len(data)
                left -= len(data)
        return total, digest.hexdigest()

    def _send_json(
        self, status: int, payload: object, fields: list[tuple[str, str]] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        name = getattr(self.server, "name", None)
        if name:
            self.send_header("X-Upstream-Name", name)
        fields = fields or []
        for field, value in fields:
            self.send_header(field, value)
        if not any(field.lower() == "content-type" for field, _ in fields):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        record = getattr(self.server, "record", None)
        if record is not None:  # deliveries, written before answering: a crash keeps them
            record.write(f"{self.command} {self.path}\n")
            record.flush()
        path = urlsplit(self.path).path
        query = self._query()
        with _received_lock:
            _received[path] = _received.get(path, 0) + 1
        if path == "/upload":
            size, sha = self._consume_body()
            self._send_json(200, {"size": size, "sha256": sha})
            return
        body = self._read_body()
        if path == "/_sleeping":
            with _sleeping_lock:
                held = list(_sleeping)
            self._send_json(200, {"sleeping": held})
            return
        if path == "/_received":
            with _received_lock:
                counts = dict(_received)
            self._send_json(200, {"paths": counts})
            return
        if path.startswith("/sleep"):
            self._sleep(self.path, int(query.get("ms", "1000")) / 1000)
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self.send_response(status)
            if status not in (204, 304):
                self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/stream":
            self._stream(int(query.get("size", "0")), chunked=True)
            return
        if path == "/bytes":
            self._stream(int(query.get("size", "0")), chunked=False)
            return
        if path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * int(query.get("size", "10")))
            self.close_connection = True
            return
        fields = [
            (name.strip(), value.strip())
            for name, _, value in (
                item.partition(":")
                for item in parse_qs(urlsplit(self.path).query).get("header", [])
            )
        ]
        self._send_json(
            200,
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            },
            fields,
        )

    @staticmethod
    def _sleep(target: str, seconds: float) -> None:
        with _sleeping_lock:
            _sleeping.append(target)
        try:
            time.sleep(seconds)
        finally:
            with _sleeping_lock:
                _sleeping.remove(target)

    def _stream(self, size: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"x" * CHUNK
        left = size
        while left:
            data = block[: min(left, CHUNK)]
            if chunked:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            left -= len(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _EchoServer(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops connections under 100 concurrent clients.
    request_queue_size = 1024
    daemon_threads = True


def make_server(port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = _EchoServer((host, port), EchoHandler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="echo upstream for tests and the demo")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", help="sent back in X-Upstream-Name (which target answered)")
    parser.add_argument("--record", help="append each request's method and target to this file")
    args = parser.parse_args()
    server = make_server(args.port, args.host)
    server.name = args.name  # type: ignore[attr-defined]
    server.record = open(args.record, "a") if args.record else None  # type: ignore[attr-defined]  # noqa: SIM115
    print(f"READY http://{args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
