"""Soak: a bounded run of mixed valid and hostile traffic against a gateway this script starts.

Starts the echo upstream (tests/support/echo.py) and `fastgw run` on 127.0.0.1, then keeps a few
dozen clients busy with valid requests (keep-alive, pipelined, bodies both ways, chunked, local
401s) and hostile ones (smuggling heads, bad chunks, oversized heads and URIs, slowloris, clients
vanishing mid-request). Every answer is checked; anything unexpected is an error. A row per
interval reports the traffic, the errors and the gateway's RSS and open descriptors.

    .venv/bin/python bench/soak.py                  # 10 minutes
    .venv/bin/python bench/soak.py --duration 60 --interval 10

Exit status 1 when any error was seen, the gateway died or its RSS kept growing. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0  # seconds for the upstream and the gateway to come up
SCENARIO_TIMEOUT = 10.0  # no single scenario may take longer: a hang is an error
HEAD_TIMEOUT = 2  # the gateway's head_timeout here: slowloris clients meet it within a run
MAX_BODY = 1024 * 1024
SLOWLORIS_CLIENTS = 4  # of the clients, this many drip heads (each holds a connection ~2 s)
# RSS growth over the second half of the run that counts as a leak (allocator noise is far less)
LEAK_MIB = 20

CONFIG = """\
_format_version: "3.0"
_fastgw:
  admin_listen: null
  head_timeout: {head_timeout}
  keepalive_timeout: 15
  max_body_size: {max_body}
services:
  - name: echo
    url: http://127.0.0.1:{upstream_port}
    read_timeout: 5000
    retries: 0
    routes:
      - paths: [/echo, /upload, /stream, /bytes, /close, /sleep]
        strip_path: false
      - paths: [/deny]
        plugins:
          - name: request-termination
            config: {{status_code: 401, message: Unauthorized}}
"""


# -- processes ------------------------------------------------------------------------------------


class Process:
    """A child process whose output lines are collected (and written to a log file)."""

    def __init__(self, argv: list[str], log_path: Path, stream: str) -> None:
        self.log_path = log_path
        self.lines: list[str] = []
        self._log = log_path.open("w")
        kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, text=True, **kwargs)  # type: ignore[call-overload]
        threading.Thread(target=self._pump, daemon=True).start()
        self.stream = stream

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(self.lines[-10:])
        raise SystemExit(f"{self.stream}: no line matching {pattern!r}; output:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# -- a small HTTP/1.1 client ----------------------------------------------------------------------


class Closed(Exception):
    """The gateway closed the connection (or reset it)."""


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, dict[bytes, bytes], bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        raise Closed from error
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (204, 304) or status < 200:
        return status, headers, b""
    try:
        if headers.get(b"transfer-encoding") == b"chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return status, headers, bytes(body)
                body += (await reader.readexactly(size + 2))[:-2]
        length = int(headers.get(b"content-length", b"0"))
        return status, headers, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        raise Closed from error


async def closed_after(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True when the gateway closes the connection (without sending more) within `timeout`."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def request(method: str, target: str, headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    head = f"{method} {target} HTTP/1.1\r\nHost: soak.test\r\n{headers}{length}\r\n"
    return head.encode() + body


# -- scenarios: each returns None when everything was as expected, else what went wrong ------------


@dataclass
class Client:
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            await self.drop()
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self.reader, self.writer

    async def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def fresh(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def finish(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def valid_get(client: Client) -> str | None:
    reader, writer = await client.connection()
    n = random.randrange(1_000_000)
    writer.write(request("GET", f"/echo/{n}?q={n}"))
    status, _, body = await read_response(reader)
    if status != 200 or f"/echo/{n}?q={n}".encode() not in body:
        return f"GET /echo: {status} {body[:80]!r}"
    return None


async def valid_upload(client: Client) -> str | None:
    reader, writer = await client.connection()
    size = random.choice([1, 4096, 70_000, 300_000])
    if random.random() < 0.5:
        writer.write(request("POST", "/upload", body=b"u" * size))
    else:
        writer.write(request("POST", "/upload", "Transfer-Encoding: chunked\r\n"))
        for start in range(0, size, 16_384):
            piece = b"u" * min(16_384, size - start)
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
    status, _, body = await read_response(reader)
    if status != 200 or f'"size": {size},'.encode() not in body:
        return f"POST /upload {size}: {status} {body[:80]!r}"
    return None


async def valid_download(client: Client) -> str | None:
    reader, writer = await client.connection()
    endpoint = random.choice(["/bytes", "/stream", "/close"])
    size = random.choice([0, 10, 100_000, 1_000_000])
    writer.write(request("GET", f"{endpoint}?size={size}"))
    status, _, body = await read_response(reader)
    if status != 200 or body != b"x" * size:
        return f"GET {endpoint}?size={size}: {status}, {len(body)} bytes"
    return None


async def valid_pipeline(client: Client) -> str | None:
    reader, writer = await client.connection()
    writer.write(
        request("GET", "/sleep?ms=20")
        + request("POST", "/deny", body=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        + request("GET", "/echo/third")
        + request("HEAD", "/bytes?size=5")
        + request("GET", "/echo/fifth")
    )
    got = []
    for head_only in (False, False, False, True, False):
        status, _, body = await read_response(reader, head_only)
        got.append((status, body[:200]))
    expected = [200, 401, 200, 200, 200]
    if [status for status, _ in got] != expected or b"/echo/third" not in got[2][1]:
        return f"pipeline: {got}"
    if b"/echo/fifth" not in got[4][1]:
        return f"pipeline out of order: {got}"
    return None


async def valid_deny(client: Client) -> str | None:
    reader, writer = await client.connection()
    writer.write(request("GET", "/deny"))
    status, _, body = await read_response(reader)
    return None if status == 401 else f"GET /deny: {status} {body[:80]!r}"


async def expect_refusal(port: int, raw: bytes, status: int, name: str) -> str | None:
    reader, writer = await fresh(port)
    try:
        writer.write(raw)
        got, headers, _ = await read_response(reader)
        if got != status or headers.get(b"connection") != b"close":
            return f"{name}: {got}, expected {status} and close"
        if not await closed_after(reader):
            return f"{name}: not closed after the error"
        return None
    except Closed:
        return f"{name}: closed without an answer"
    finally:
        await finish(writer)


HOSTILE_HEADS = [
    ("cl+te", request("POST", "/echo", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"), 400),
    ("te-gzip", request("POST", "/echo", "Transfer-Encoding: gzip, chunked\r\n"), 501),
    ("cl-dup", request("POST", "/echo", "Content-Length: 1\r\nContent-Length: 2\r\n"), 400),
    ("obs-fold", request("GET", "/echo", "X-A: 1\r\n folded\r\n"), 400),
    ("ws-colon", request("GET", "/echo", "X-A : 1\r\n"), 400),
    ("nul", request("GET", "/echo", "X-A: a\x00b\r\n"), 400),
    ("long-uri", request("GET", "/echo/" + "u" * 9000), 414),
    ("big-head", request("GET", "/echo", "X-Big: " + "b" * 40_000 + "\r\n"), 431),
    ("many-headers", request("GET", "/echo", "X-H: v\r\n" * 101), 431),
    ("http-2", b"GET /echo HTTP/2.0\r\nHost: soak.test\r\n\r\n", 505),
    (
        "garbage",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n",
        400,
    ),
    ("too-big-body", request("POST", "/upload", f"Content-Length: {MAX_BODY + 1}\r\n"), 413),
]


async def hostile_head(client: Client) -> str | None:
    name, raw, status = random.choice(HOSTILE_HEADS)
    return await expect_refusal(client.port, raw, status, name)


# A bad chunk after a good one: the head went upstream; the answer is still a 400. An endless
# chunk extension is cut at 16 KiB past its allowance, counted from the end of the read that
# completed the head: when the gateway gets head and extension in one read (it is busy), that
# read is not counted and the body timeout (408) ends the connection instead.
BAD_CHUNKS = [(b"zz\r\n", {400}), (b"3\r\nabcX", {400}), (b"1;" + b"e" * 20_000, {400, 408})]


async def hostile_chunk(client: Client) -> str | None:
    reader, writer = await fresh(client.port)
    tail, expected = random.choice(BAD_CHUNKS)
    try:
        writer.write(request("POST", "/upload", "Transfer-Encoding: chunked\r\n") + b"3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(tail)
        status, _, _ = await read_response(reader)
        return None if status in expected else f"bad chunk {tail[:8]!r}: {status}"
    except Closed:
        return "bad chunk: closed without an answer"
    finally:
        await finish(writer)


async def hostile_vanish(client: Client) -> str | None:
    """A client that goes away mid-head, mid-body or mid-response: nothing to check but health."""
    reader, writer = await fresh(client.port)
    kind = random.randrange(3)
    if kind == 0:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: so")
    elif kind == 1:
        writer.write(request("POST", "/upload", "Content-Length: 100000\r\n") + b"x" * 5000)
    else:
        writer.write(request("GET", "/bytes?size=5000000"))
        with contextlib.suppress(Exception):
            await reader.readexactly(1000)
    await writer.drain()
    writer.transport.abort()
    return None


async def slowloris(client: Client) -> str | None:
    """A head dripped a byte every 100 ms: 408 at head_timeout, then closed."""
    reader, writer = await fresh(client.port)
    started = time.monotonic()
    raw = b"GET /echo HTTP/1.1\r\nHost: soak.test\r\nX-Slow: " + b"s" * 200
    try:
        for byte in raw:
            writer.write(bytes([byte]))
            try:
                status, _, _ = await asyncio.wait_for(read_response(reader), 0.1)
            except TimeoutError:
                continue
            elapsed = time.monotonic() - started
            if status != 408 or not HEAD_TIMEOUT <= elapsed < HEAD_TIMEOUT + 1:
                return f"slowloris: {status} after {elapsed:.2f} s"
            return None
        return "slowloris: never timed out"
    except Closed:
        return "slowloris: closed without a 408"
    finally:
        await finish(writer)


VALID = [valid_get, valid_get, valid_get, valid_upload, valid_download, valid_pipeline, valid_deny]
HOSTILE = [hostile_head, hostile_head, hostile_chunk, hostile_vanish]


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # valid scenarios, this interval

    def record(self, name: str, error: str | None, elapsed: float, valid: bool) -> None:
        if error is None:
            self.ok[name] += 1
            if valid:
                self.latencies.append(elapsed)
        else:
            self.errors[name] += 1
            self.examples.setdefault(name, error)


async def worker(port: int, tally: Tally, deadline: float, slow: bool) -> None:
    client = Client(port)
    while time.monotonic() < deadline:
        if slow:
            scenario, valid = slowloris, False
        elif random.random() < 0.7:
            scenario, valid = random.choice(VALID), True
        else:
            scenario, valid = random.choice(HOSTILE), False
        started = time.monotonic()
        try:
            error = await asyncio.wait_for(scenario(client), SCENARIO_TIMEOUT)
        except TimeoutError:
            error = "timed out (hang?)"
        except Closed:
            error = "connection closed unexpectedly"
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is not None or not valid:
            await client.drop()  # after an error the connection's state is unknown
        tally.record(scenario.__name__, error, time.monotonic() - started, valid)
    await client.drop()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(
    args: argparse.Namespace, gateway: Process, port: int
) -> tuple[list[dict[str, object]], Tally]:
    tally = Tally()
    deadline = time.monotonic() + args.duration
    tasks = [
        asyncio.create_task(worker(port, tally, deadline, slow=index < SLOWLORIS_CLIENTS))
        for index in range(args.clients)
    ]
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    last_ok = last_errors = 0
    print(
        f"{'time':>6} {'valid ok':>9} {'hostile ok':>10} {'errors':>7} {'p99 ms':>7} "
        f"{'RSS MiB':>8} {'fds':>5}",
        flush=True,
    )
    while True:
        remaining = deadline - time.monotonic()
        await asyncio.sleep(min(args.interval, max(remaining, 0)))
        now = time.monotonic() - started
        valid_ok = sum(tally.ok[f.__name__] for f in set(VALID))
        total_ok = sum(tally.ok.values())
        total_errors = sum(tally.errors.values())
        row = {
            "time": round(now),
            "valid_ok": valid_ok,
            "hostile_ok": total_ok - valid_ok,
            "ok_interval": total_ok - last_ok,
            "errors": total_errors - last_errors,
            "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 1),
            "rss_mib": round(rss_mib(gateway.proc.pid), 1),
            "fds": open_fds(gateway.proc.pid),
        }
        tally.latencies.clear()
        last_ok, last_errors = total_ok, total_errors
        rows.append(row)
        print(
            f"{row['time']:>5}s {row['valid_ok']:>9} {row['hostile_ok']:>10} {row['errors']:>7} "
            f"{row['p99_ms']:>7} {row['rss_mib']:>8} {row['fds']:>5}",
            flush=True,
        )
        if gateway.proc.poll() is not None or time.monotonic() >= deadline:
            break
    await asyncio.gather(*tasks, return_exceptions=True)
    # after the storm: the gateway still answers a plain request
    client = Client(port)
    try:
        after = await asyncio.wait_for(valid_get(client), SCENARIO_TIMEOUT)
    except Exception as error:  # any failure here is the finding
        after = repr(error)
    finally:
        await client.drop()
    tally.record("after-soak GET", after, 0, False)
    return rows, tally


def markdown_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| time | valid ok | hostile ok | ok/interval | errors | p99 valid | gateway RSS | fds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['time']} s | {row['valid_ok']} | {row['hostile_ok']} | {row['ok_interval']} "
            f"| {row['errors']} | {row['p99_ms']} ms | {row['rss_mib']} MiB | {row['fds']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between rows")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.clients <= SLOWLORIS_CLIENTS:
        parser.error(f"--clients must be above {SLOWLORIS_CLIENTS}")
    random.seed(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="fastgw-soak-"))
    python = sys.executable
    upstream = Process(
        [python, "-m", "tests.support.echo", "--port", "0"], workdir / "upstream.log", "upstream"
    )
    gateway: Process | None = None
    try:
        upstream_port = int(upstream.wait_for(r"READY http://127\.0\.0\.1:(\d+)").group(1))
        config = workdir / "gateway.yaml"
        config.write_text(
            CONFIG.format(head_timeout=HEAD_TIMEOUT, max_body=MAX_BODY, upstream_port=upstream_port)
        )
        argv = [python, "-m", "fastgw", "run", "-c", str(config), "--listen", f"{HOST}:0"]
        gateway = Process([*argv, "--admin-listen", "off"], workdir / "gateway.log", "gateway")
        port = int(gateway.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        print(
            f"soak: {args.duration:.0f} s, {args.clients} clients ({SLOWLORIS_CLIENTS} slowloris), "
            f"gateway pid {gateway.proc.pid} on :{port}; logs in {workdir}",
            flush=True,
        )
        rows, tally = asyncio.run(run(args, gateway, port))
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()

    print("\n" + markdown_table(rows))
    print("\nscenarios (ok / errors):")
    for name in sorted(set(tally.ok) | set(tally.errors)):
        print(f"  {name:16} {tally.ok[name]:>8} / {tally.errors[name]}")
    for name, example in tally.examples.items():
        print(f"  first error in {name}: {example}")
    problems = [line for line in gateway.lines if re.search(r" (ERROR|CRITICAL) ", line)]
    warnings = [line for line in gateway.lines if " WARNING " in line]
    print(f"\ngateway log: {len(problems)} error line(s), {len(warnings)} warning line(s)")
    for line in (problems + warnings)[:10]:
        print("  " + line)
    half = [float(row["rss_mib"]) for row in rows[len(rows) // 2 :]]  # type: ignore[arg-type]
    growth = (half[-1] - half[0]) if len(half) > 1 else 0.0
    print(f"RSS over the second half: {growth:+.1f} MiB")
    failed = (
        sum(tally.errors.values()) > 0
        or bool(problems)
        or gateway.proc.returncode not in (0, -15)
        or growth > LEAK_MIB
    )
    print("result:", "FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
