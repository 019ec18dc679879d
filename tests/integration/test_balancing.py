"""Kong upstreams with three real upstream processes: weights, retries that never duplicate a
request, a target killed under load and brought back by the health checks.
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    PYTHON,
    ROOT,
    Client,
    LineReader,
    RawUpstream,
    free_port,
    stop_process,
)

pytestmark = pytest.mark.integration


class Echo:
    """One echo upstream process with a name and a file of the requests it received."""

    def __init__(self, name: str, port: int, record: Path) -> None:
        self.name, self.port, self.record = name, port, record
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tests.support.echo", "--port", str(self.port), "--name", self.name,
             "--record", str(self.record)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        LineReader(self.proc.stdout).wait_for(r"READY")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def deliveries(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []


@pytest.fixture
def echoes(tmp_path: Path) -> Iterator[Callable[[int], list[Echo]]]:
    started: list[Echo] = []

    def make(count: int) -> list[Echo]:
        for index in range(count):
            name = "abc"[index]
            started.append(Echo(name, free_port(), tmp_path / f"{name}.txt"))
        return started

    yield make
    for echo in started:
        if echo.proc is not None:
            stop_process(echo.proc)


def upstream_config(targets: list[tuple[int, int]], extra: str = "", service: str = "") -> str:
    lines = "".join(
        f"      - target: 127.0.0.1:{port}\n        weight: {weight}\n" for port, weight in targets
    )
    return f"""\
_format_version: "3.0"
_fastgw: {{admin_listen: null}}
upstreams:
  - name: backend
{extra}    targets:
{lines}services:
  - name: api
    host: backend
    port: 1
{service}    routes:
      - paths: [/]
        strip_path: false
"""


def upstream_name(client: Client, method: str = "GET", target: str = "/echo") -> str | None:
    response = client.request(method, target, body=b"x" if method == "POST" else b"")
    return response.header("x-upstream-name") if response.status == 200 else None


def test_weights_are_honoured_within_five_points(make_gateway, echoes) -> None:
    a, b, c = echoes(3)
    gateway = make_gateway(upstream_config([(a.port, 50), (b.port, 30), (c.port, 20)]))
    counts: collections.Counter[str | None] = collections.Counter()
    clients = [Client(gateway.port) for _ in range(4)]
    for index in range(2000):
        counts[upstream_name(clients[index % 4])] += 1
    shares = {name: counts[name] * 100 / 2000 for name in "abc"}
    assert abs(shares["a"] - 50) <= 5 and abs(shares["b"] - 30) <= 5, shares
    assert abs(shares["c"] - 20) <= 5, shares
    assert counts[None] == 0


def test_weight_zero_disables_a_target(make_gateway, echoes) -> None:
    a, b = echoes(2)
    gateway = make_gateway(upstream_config([(a.port, 100), (b.port, 0)]))
    client = Client(gateway.port)
    assert {upstream_name(client) for _ in range(50)} == {"a"}


def read_and_close(conn) -> None:
    """Reads a request (it may have acted on it) and closes without a byte of answer."""
    head = conn.read_head()
    if head is not None:
        length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:")]  # fmt: skip
        conn.read_exactly(length[0] if length else 0)


def test_a_target_closing_without_answering_gets_each_post_at_most_once(
    make_gateway, echoes
) -> None:
    (a,) = echoes(1)
    closer = RawUpstream(read_and_close)
    try:
        gateway = make_gateway(
            upstream_config([(a.port, 100), (closer.port, 100)], service="    retries: 3\n")
        )
        client_statuses = collections.Counter()
        for index in range(60):
            client = Client(gateway.port)
            response = client.request("POST", f"/echo/post-{index}", body=b"payload")
            client_statuses[response.status] += 1
            client.close()
            # GETs to the same upstream still succeed: retried on the other target
            assert Client(gateway.port).request("GET", f"/echo/get-{index}").status == 200
        at_closer = [line for line in closer.requests if line.startswith(b"POST")]
        assert len(at_closer) == len(set(at_closer)) > 0  # each POST at most once
        assert client_statuses[502] == len(at_closer)  # and those got a 502
        delivered_to_a = [line for line in a.deliveries() if line.startswith("POST")]
        assert not {line.split()[1] for line in at_closer} & {
            line.split()[1].encode() for line in delivered_to_a
        }  # never sent on to the other target either
    finally:
        closer.close()


HEALTHCHECKS = """\
    healthchecks:
      passive:
        unhealthy: {tcp_failures: 1}
      active:
        http_path: /status/200
        timeout: 0.5
        healthy: {interval: 0.2, successes: 2}
        unhealthy: {interval: 0.2, tcp_failures: 1}
"""


def test_a_target_killed_under_load_fails_no_idempotent_request(make_gateway, echoes) -> None:
    a, b, c = echoes(3)
    gateway = make_gateway(
        upstream_config([(a.port, 100), (b.port, 100), (c.port, 100)], HEALTHCHECKS)
    )
    failures: list[str] = []
    posts: collections.Counter[int] = collections.Counter()
    stop = threading.Event()
    serial = iter(range(10**9))
    lock = threading.Lock()
    answered = [0]  # requests answered so far, by any status

    def load_ran(more: int) -> Callable[[], bool]:
        """A wait for `more` answers from now on: the load is running through a phase."""
        mark = answered[0] + more
        return lambda: answered[0] >= mark

    def load() -> None:
        client = Client(gateway.port)
        while not stop.is_set():
            with lock:
                number = next(serial)
            try:
                if number % 3 == 0:
                    response = client.request("POST", f"/echo/p{number}", body=b"x")
                    posts[response.status] += 1
                    if response.status not in (200, 502):
                        failures.append(f"POST {response.status}")
                else:
                    response = client.request("GET", f"/echo/g{number}")
                    if response.status != 200:
                        failures.append(f"GET {number}: {response.status} {response.body!r}")
            except (ConnectionError, OSError) as error:
                failures.append(f"{number}: {error!r}")
                client = Client(gateway.port)
                continue
            with lock:
                answered[0] += 1
            if response.header("connection") == "close":
                client = Client(gateway.port)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    assert gateway.wait_for(load_ran(100), timeout=30)  # all three targets serving
    b.kill()

    def health(name_port: int) -> str:
        for stats in gateway.gateway.stats().upstreams:
            if stats.address == f"127.0.0.1:{name_port}":
                return stats.health
        return "?"

    assert gateway.wait_for(lambda: health(b.port) == "UNHEALTHY")
    assert gateway.wait_for(load_ran(100), timeout=30)  # served by the other two meanwhile
    b.start()  # back on the same port
    assert gateway.wait_for(lambda: health(b.port) == "HEALTHY", timeout=5)
    assert gateway.wait_for(load_ran(50), timeout=30)  # and with b back
    stop.set()
    for worker in workers:
        worker.join(10)
    assert failures == [] or all(f.startswith("POST") for f in failures), failures[:5]
    assert not [f for f in failures if f.startswith("GET")]
    delivered = [
        line for echo in (a, b, c) for line in echo.deliveries() if line.startswith("POST")
    ]
    assert len(delivered) == len(set(delivered))  # no POST delivered twice
    assert posts[200] > 0 and next(serial) > 300  # the load ran throughout
    assert "b" in {upstream_name(Client(gateway.port)) for _ in range(12)}  # serving again


def test_all_targets_down_is_503_with_kongs_message(make_gateway) -> None:
    dead = [free_port(), free_port()]
    gateway = make_gateway(
        upstream_config([(port, 100) for port in dead], HEALTHCHECKS, "    retries: 1\n")
    )
    client = Client(gateway.port)
    statuses = [client.request("GET", "/echo").status for _ in range(4)]
    assert statuses[-1] == 503
    assert json.loads(client.request("GET", "/echo").body) == {
        "message": "failure to get a peer from the ring-balancer"
    }


def test_consistent_hashing_on_a_header_keeps_a_client_on_one_target(make_gateway, echoes) -> None:
    a, b, c = echoes(3)
    extra = "    hash_on: header\n    hash_on_header: X-User\n"
    gateway = make_gateway(upstream_config([(a.port, 100), (b.port, 100), (c.port, 100)], extra))
    client = Client(gateway.port)
    placed = {}
    for user in range(30):
        names = {
            client.request("GET", "/echo", [("X-User", f"u{user}")]).header("x-upstream-name")
            for _ in range(3)
        }
        assert len(names) == 1
        placed[user] = names.pop()
    assert len(set(placed.values())) == 3  # the keys spread over every target
