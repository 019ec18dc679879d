"""Instructions a request costs over HTTPS and over plain HTTP, counted by callgrind in the real
gateway: what TLS adds, a figure the box's noise cannot move (bench/tls.py gives the wall clock).

bench/instructions.py drives in-memory transports, which have no TLS. Here the gateway runs
under callgrind with one listener of each kind in front of an nginx upstream, and one keep-alive
client (Python's ssl over a real socket) sends SMALL, then LARGE requests in two runs; the
difference per request is the figure, so start-up and the handshake cancel out. Only the
gateway's user-space instructions count (callgrind sees no kernel).

    .venv/bin/python bench/tls_instructions.py
Needs valgrind and nginx (apt-get install valgrind nginx-light).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    LOOPBACK,
    RESULTS_ROOT,
    Processes,
    Setup,
    find_tool,
    free_port,
    import_test_support,
    make_results_dir,
    start_upstream,
)

SMALL, LARGE = 500, 1500  # requests of the two runs; their difference is what counts
START_TIMEOUT = 180.0  # seconds for the gateway to listen under callgrind (it runs ~50x slower)
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def gateway_config(plain: int, tls: int, upstream: int, cert: Path, key: Path) -> str:
    config = {
        "_format_version": "3.0",
        "_fastgw": {
            "listen": f"{LOOPBACK}:{plain}, {LOOPBACK}:{tls} ssl",
            "ssl_cert": str(cert),
            "ssl_cert_key": str(key),
        },
        "services": [{"url": f"http://{LOOPBACK}:{upstream}", "routes": [{"paths": ["/"]}]}],
    }
    return json.dumps(config, indent=2) + "\n"


def connect(port: int, tls: bool, deadline: float) -> socket.socket:
    while True:
        try:
            sock = socket.create_connection((LOOPBACK, port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not listen on {port} in time") from None
            time.sleep(0.2)
    if not tls:
        return sock
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the figure is the gateway's, not the verification's
    return context.wrap_socket(sock)


def drive(sock: socket.socket, count: int) -> None:
    """`count` requests one after another on one connection, each answer read in full."""
    for _ in range(count):
        sock.sendall(REQUEST)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)


def count_instructions(config: Path, port: int, tls: bool, requests: int, log: Path) -> int:
    out = log.with_suffix(".callgrind")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
            "-m", "fastgw", "run", "-c", str(config), "--workers", "1",
            "--admin-listen", "off", "--log-level", "warning"]  # fmt: skip
    with open(log, "wb") as output:
        gateway = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        sock = connect(port, tls, time.monotonic() + START_TIMEOUT)
        with sock:
            drive(sock, requests)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=120)
    match = re.search(r"Collected : (\d+)", log.read_text(errors="replace"))
    if match is None:
        raise SystemExit(f"no instruction count in {log}")
    return int(match.group(1))


def main() -> int:
    nginx = find_tool("nginx")
    if nginx is None or find_tool("valgrind") is None:
        print("needs nginx and valgrind: apt-get install -y nginx-light valgrind", file=sys.stderr)
        return 2
    import_test_support()
    from tests.support.tls import make_pki

    results_dir = make_results_dir(RESULTS_ROOT, "tls-instructions")
    (results_dir / "logs").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-tlsi-")))
        pki = make_pki(work_dir)
        procs = Processes(results_dir / "logs", pin=False)
        stack.callback(procs.stop_all)
        setup = Setup(procs=procs, work_dir=work_dir, results_dir=results_dir, nginx=nginx)
        start_upstream(setup)
        plain, tls = free_port(), free_port()
        config = setup.write_config(
            "gateway.json",
            gateway_config(plain, tls, setup.upstream_port, pki.default.cert, pki.default.key),
        )
        logs = results_dir / "logs"
        per_request = {}
        for name, port, over_tls in (("http", plain, False), ("https", tls, True)):
            small, large = (
                count_instructions(config, port, over_tls, count, logs / f"{name}-{count}.log")
                for count in (SMALL, LARGE)
            )
            per_request[name] = (large - small) / (LARGE - SMALL)
    http, https = per_request["http"], per_request["https"]
    report = (
        "| over | instructions a request |\n|---|---:|\n"
        f"| http | {http:,.0f} |\n| https | {https:,.0f} |\n| what TLS adds | {https - http:,.0f} |"
    )
    (results_dir / "tls-instructions.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
