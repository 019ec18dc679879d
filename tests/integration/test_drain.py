"""Draining without losing requests: wrk keeps 50 keep-alive connections busy across a SIGTERM.

A request a client sent on an idle keep-alive connection just as the drain began must still be
answered (with `connection: close`); closing idle connections at once, as nginx does on SIGQUIT,
loses it (wrk counts it as a read error). Reconnects refused once the listener closed are
nothing lost: no request went out on them (wrk counts them as write errors).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

WRK_TIMEOUT = 60.0  # wrk runs -d2s; this only bounds a hang
MARK_AFTER = 300  # responses wrk's first thread has had before the SIGTERM goes

# wrk's Lua: a mark file once the load runs, so the test signals mid-load without a sleep
MARK_SCRIPT = """
local count = 0
function response(status, headers, body)
  count = count + 1
  if count == %d then
    local mark = io.open("%s", "w")
    mark:write("running")
    mark:close()
  end
end
"""

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")


def wrk_errors(output: str) -> dict[str, int]:
    """wrk's socket error counts (all zero when it printed no such line) and non-2xx count."""
    counts = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx": 0, "requests": 0}
    found = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if found:
        for key, value in zip(("connect", "read", "write", "timeout"), found.groups(), strict=True):
            counts[key] = int(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        counts["non_2xx"] = int(non_2xx.group(1))
    requests = re.search(r"(\d+) requests in", output)
    if requests:
        counts["requests"] = int(requests.group(1))
    return counts


def start_wrk(url: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    mark = tmp_path / "wrk-running"
    script = tmp_path / "mark.lua"
    script.write_text(MARK_SCRIPT % (MARK_AFTER, mark))
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c50", "-d2s", "-s", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return wrk, mark


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "wrk ended before the load ran"
        assert time.monotonic() < deadline, "wrk never got going"
        time.sleep(0.01)


@pytest.mark.parametrize("workers", [1, 2])
def test_no_request_is_lost_across_a_sigterm(run_cli, gateway_config, tmp_path, workers) -> None:
    cli = run_cli(gateway_config(), "--workers", str(workers))
    port = cli.wait_listening(workers)
    wrk, mark = start_wrk(f"http://127.0.0.1:{port}/echo", tmp_path)
    try:
        wait_for_file(mark, wrk)
        cli.signal(signal.SIGTERM)
        output, _ = wrk.communicate(timeout=WRK_TIMEOUT)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    assert cli.proc.wait(15) == 0
    counts = wrk_errors(output)
    assert counts["requests"] >= MARK_AFTER, output
    # every request that went out was answered, and answered well
    assert (counts["read"], counts["timeout"], counts["non_2xx"]) == (0, 0, 0), output


@pytest.mark.parametrize("workers", [1, 2])
def test_no_request_is_lost_across_a_reload_that_moves_the_listener(
    run_cli, gateway_config, tmp_path, workers
) -> None:
    """The reload opens the new address and drains the old one with the same grace: wrk on the
    old address (across the reload) and on the new one (after it) lose nothing."""
    old, new = free_port(), free_port()
    cli = run_cli(
        gateway_config(listen=f'"127.0.0.1:{old}"'), "--workers", str(workers), listen=None
    )
    cli.wait_listening(workers)
    wrk, mark = start_wrk(f"http://127.0.0.1:{old}/echo", tmp_path)
    try:
        wait_for_file(mark, wrk)
        (tmp_path / "gateway-0.yaml").write_text(gateway_config(listen=f'"127.0.0.1:{new}"'))
        cli.signal(signal.SIGHUP)
        cli.log.wait_for(rf"reload: listening on 127\.0\.0\.1:{new}", workers, timeout=20)
        before, _ = wrk.communicate(timeout=WRK_TIMEOUT)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    mark.unlink()
    wrk, mark = start_wrk(f"http://127.0.0.1:{new}/echo", tmp_path)
    after, _ = wrk.communicate(timeout=WRK_TIMEOUT)
    for output in (before, after):
        counts = wrk_errors(output)
        assert counts["requests"] >= MARK_AFTER, output
        assert (counts["read"], counts["timeout"], counts["non_2xx"]) == (0, 0, 0), output
    assert cli.proc.poll() is None
