"""rate-limiting with `policy: redis` on real parts: a real redis-server, real `fastgw run`
processes, a real upstream, HTTP over loopback.

The fleet: three gateways of two workers each and a limit of 100 a minute let exactly 100
requests through, wherever they land. Two fleets sharing one Redis count apart. Redis killed
mid-run: requests are decided on each worker's own counters (fault_tolerant), or answered 500;
back, Redis counts again.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import CliGateway, EchoUpstream
from tests.support.redis import RedisServer

pytestmark = pytest.mark.integration

LIMIT = 100
FLEET = 3  # gateways
WORKERS = 2  # each
REQUESTS = 3 * LIMIT
SENDERS = 24  # client threads at once
# Sent this many seconds into a minute at the latest, the burst ends within the same window
# (it takes a few seconds even on a loaded machine); later, the test waits for the next minute.
LATEST_START = 30
REQUEST_TIMEOUT = 10.0
EMPTY = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def config(echo: EchoUpstream, redis: RedisServer, plugin: str, namespace: str = "") -> str:
    settings = f"{{namespace: {namespace}}}" if namespace else "{}"
    return f"""
_format_version: "3.0"
_fastgw: {settings}
services:
  - url: http://127.0.0.1:{echo.port}
    routes: [{{paths: [/]}}]
plugins:
  - name: rate-limiting
    config:
      policy: redis
      redis: {{host: 127.0.0.1, port: {redis.port}, timeout: 500}}
      {plugin}
"""


def get(port: int, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection (so the kernel spreads them over the workers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def start_fleet(run_cli: Callable[..., CliGateway], text: str, size: int) -> list[CliGateway]:
    fleet = [run_cli(text, "--workers", str(WORKERS)) for _ in range(size)]
    for gateway in fleet:
        gateway.wait_listening(workers=WORKERS)
    return fleet


def wait_for_a_fresh_minute() -> None:
    """The burst must not straddle two windows: start it early in a minute."""
    into = time.time() % 60
    if into > LATEST_START:
        time.sleep(60 - into + 0.05)


def minute_key(prefix: str, identifier: str = "127.0.0.1") -> str:
    start = int(time.time()) // 60 * 60
    return f"{prefix}:ratelimit:{EMPTY}:{EMPTY}:{identifier}:{start * 1000}:minute"


def test_a_fleet_of_three_gateways_lets_exactly_the_limit_through(
    echo: EchoUpstream, redis: RedisServer, run_cli: Callable[..., CliGateway]
) -> None:
    fleet = start_fleet(run_cli, config(echo, redis, f"minute: {LIMIT}"), FLEET)
    ports = [gateway.port for gateway in fleet]
    wait_for_a_fresh_minute()
    with concurrent.futures.ThreadPoolExecutor(SENDERS) as pool:
        replies = list(pool.map(lambda index: get(ports[index % FLEET]), range(REQUESTS)))
    statuses = [status for status, _, _ in replies]
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == REQUESTS - LIMIT
    # every gateway answered some of each
    for index in range(FLEET):
        mine = [replies[i][0] for i in range(index, REQUESTS, FLEET)]
        assert 200 in mine or 429 in mine
    _status, headers, body = next(reply for reply in replies if reply[0] == 429)
    assert json.loads(body) == {"message": "API rate limit exceeded"}
    assert headers["x-ratelimit-limit-minute"] == str(LIMIT)
    assert headers["x-ratelimit-remaining-minute"] == "0"
    assert headers["retry-after"] == headers["ratelimit-reset"]
    # the fleet's one counter: Kong's key after the namespace, counting what went through,
    # expiring with its minute
    key = minute_key("fastgw")
    assert redis.cli("GET", key) == str(LIMIT)
    assert 0 < int(redis.cli("TTL", key)) <= 60


def test_two_fleets_sharing_one_redis_count_apart(
    echo: EchoUpstream, redis: RedisServer, run_cli: Callable[..., CliGateway]
) -> None:
    (blue,) = start_fleet(run_cli, config(echo, redis, "minute: 5", namespace="blue"), 1)
    (green,) = start_fleet(run_cli, config(echo, redis, "minute: 5", namespace="green"), 1)
    wait_for_a_fresh_minute()
    assert [get(blue.port)[0] for _ in range(7)] == [200] * 5 + [429] * 2
    assert [get(green.port)[0] for _ in range(6)] == [200] * 5 + [429]
    assert redis.cli("GET", minute_key("blue")) == "5"
    assert redis.cli("GET", minute_key("green")) == "5"


def test_batched_counts_reach_redis_within_sync_rate(
    echo: EchoUpstream, redis: RedisServer, run_cli: Callable[..., CliGateway]
) -> None:
    (gateway,) = start_fleet(run_cli, config(echo, redis, "minute: 1000\n      sync_rate: 0.2"), 1)
    wait_for_a_fresh_minute()
    statuses = [get(gateway.port)[0] for _ in range(20)]
    assert statuses == [200] * 20
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while redis.cli("GET", minute_key("fastgw")) != "20":  # every worker's flush has landed
        assert time.monotonic() < deadline, redis.cli("GET", minute_key("fastgw"))
        time.sleep(0.05)
    # another instance reads the fleet's total before it counts
    (newcomer,) = start_fleet(run_cli, config(echo, redis, "minute: 21\n      sync_rate: 0.2"), 1)
    assert [get(newcomer.port)[0] for _ in range(3)][:2] == [200, 429]


def test_redis_killed_mid_run_fault_tolerant_counts_locally_then_redis_again(
    echo: EchoUpstream, redis: RedisServer, run_cli: Callable[..., CliGateway]
) -> None:
    (gateway,) = start_fleet(run_cli, config(echo, redis, "minute: 3"), 1)
    wait_for_a_fresh_minute()
    assert [get(gateway.port)[0] for _ in range(2)] == [200, 200]
    redis.kill()
    # each worker's own counters decide: proxied, and limited as the config says
    replies = [get(gateway.port) for _ in range(8)]
    assert replies[0][0] == 200 and replies[0][1]["x-ratelimit-limit-minute"] == "3"
    assert {status for status, _, _ in replies} <= {200, 429}
    assert [status for status, _, _ in replies].count(200) <= 3 * WORKERS
    gateway.log.wait_for("rate-limiting redis unavailable .*requests are counted locally")
    redis.start()  # the same port, empty
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while redis.cli("GET", minute_key("fastgw")) in ("", "(nil)"):  # the breaker probes again
        assert time.monotonic() < deadline, gateway.log.text()
        get(gateway.port)
        time.sleep(0.1)


def test_redis_killed_mid_run_not_fault_tolerant_answers_500(
    echo: EchoUpstream, redis: RedisServer, run_cli: Callable[..., CliGateway]
) -> None:
    (gateway,) = start_fleet(
        run_cli, config(echo, redis, "minute: 100\n      fault_tolerant: false"), 1
    )
    assert get(gateway.port)[0] == 200
    redis.kill()
    status, headers, body = get(gateway.port)
    assert status == 500
    assert json.loads(body) == {"message": "An unexpected error occurred"}
    assert "x-ratelimit-limit-minute" not in headers
    gateway.log.wait_for(r"answered 500 \(fault_tolerant is false\)")
    redis.start()
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while get(gateway.port)[0] != 200:
        assert time.monotonic() < deadline, gateway.log.text()
        time.sleep(0.1)
