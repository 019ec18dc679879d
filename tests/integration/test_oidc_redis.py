"""openid-connect with the shared token cache: several gateways (separate `fastgw run` processes
and worker processes) in front of one real IdP and one real redis-server or a real Redis Cluster
of three masters. IdP token calls are counted on the IdP's side; Redis is read with redis-cli.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.conftest import CliGateway, free_port
from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    SECRETS,
    Echo,
    LogCollector,
    assert_no_secrets_in,
    basic,
    echo_port,
    fastgw_logs,
    gateway_config,
    no_secrets_in_caplog,
    oidc,
    request,
    running_gateway,
    wait_until,
)
from tests.support.idp import TestIdP
from tests.support.redis import RedisCluster, RedisServer

pytestmark = pytest.mark.integration

CLIENTS = 100
FLEET = 3  # gateway processes sharing one Redis
CACHE_SECRET = "fleet-cache-secret-7c41d0e2a9"
SECRETS.add(CACHE_SECRET)


def client(index: int) -> tuple[str, str]:
    return f"bench-client-{index}", f"bench-secret-{index}"


for _index in range(CLIENTS + 50):
    SECRETS.add_client(*client(_index))


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256", extra_clients=CLIENTS + 50) as server:
        yield server


@pytest.fixture(scope="module")
def redis_single() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


# Counting tests need Redis to answer, not to be fast: on a loaded 2-core CI box a fleet of
# three gateways, a 3-node cluster and the IdP share the cores, and a call past the default
# 500 ms timeout opens the breaker and sends misses to the IdP (then the count is off).
# The fault tests below keep the defaults, which they measure.
PATIENT_TIMEOUTS = {"connect_timeout": 3000, "send_timeout": 3000, "read_timeout": 3000}


def redis_record(target: RedisServer | RedisCluster) -> dict[str, Any]:
    if isinstance(target, RedisCluster):
        nodes = [{"ip": "127.0.0.1", "port": node.port} for node in target.nodes]
        return {"cluster_nodes": nodes, **PATIENT_TIMEOUTS}
    return {"host": "127.0.0.1", "port": target.port, **PATIENT_TIMEOUTS}


def shared_config(idp: TestIdP, echo_port: int, redis: dict[str, Any], **extra: Any) -> str:
    plugin = oidc(
        idp,
        client_auth=["client_secret_basic"],
        cluster_cache_strategy="redis",
        cluster_cache_secret=CACHE_SECRET,
        cluster_cache_redis=redis,
        **extra,
    )
    return gateway_config(echo_port, {"/api": plugin})


def token_calls(idp: TestIdP) -> int:
    return int(idp.stats()["token_requests"])


async def get(port: int, index: int) -> int:
    """One request for client `index`; its status (the token it carried is recorded)."""
    response = await request(
        port, target="/api/x", headers=[("Authorization", basic(*client(index)))]
    )
    if response.status == 200:
        _ = Echo.of(response).bearer
    return response.status


def flush(target: RedisServer | RedisCluster) -> None:
    nodes = target.nodes if isinstance(target, RedisCluster) else [target]
    for node in nodes:
        node.cli("FLUSHALL")


def redis_keys(target: RedisServer | RedisCluster) -> list[str]:
    if isinstance(target, RedisCluster):
        return target.keys()
    return [key for key in target.cli("--scan").splitlines() if key]


def metrics(admin_port: int) -> str:
    url = f"http://127.0.0.1:{admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def start_fleet(
    run_cli: Callable[..., CliGateway], config: str, count: int, *args: str
) -> list[CliGateway]:
    gateways = [run_cli(config, *args) for _ in range(count)]
    for gateway in gateways:
        gateway.wait_listening()
    return gateways


# -- one IdP call per client across the fleet ------------------------------------------------------


@pytest.mark.parametrize("topology", ["single", "cluster"])
async def test_a_fleet_makes_one_token_call_per_client_and_a_new_instance_none(
    topology: str,
    request: pytest.FixtureRequest,
    idp: TestIdP,
    echo_port: int,
    run_cli: Callable[..., CliGateway],
) -> None:
    target = request.getfixturevalue(f"redis_{topology}")
    flush(target)
    config = shared_config(idp, echo_port, redis_record(target))
    fleet = start_fleet(run_cli, config, FLEET)
    idp.reset_stats()
    # every client's first request reaches all three gateways at once
    statuses = await asyncio.gather(
        *(get(gateway.port, index) for index in range(CLIENTS) for gateway in fleet)
    )
    assert statuses == [200] * (CLIENTS * FLEET)
    assert token_calls(idp) == CLIENTS, [gw.log.text() for gw in fleet]
    newcomer = start_fleet(run_cli, config, 1)[0]
    statuses = await asyncio.gather(*(get(newcomer.port, index) for index in range(CLIENTS)))
    assert statuses == [200] * CLIENTS
    assert token_calls(idp) == CLIENTS  # the new instance warmed from Redis: no call at all
    assert len(redis_keys(target)) == CLIENTS  # one entry per client, no lock left behind


async def test_workers_share_redis(
    idp: TestIdP,
    echo_port: int,
    redis_single: RedisServer,
    run_cli: Callable[..., CliGateway],
) -> None:
    flush(redis_single)
    config = shared_config(idp, echo_port, redis_record(redis_single))
    gateway = run_cli(config, "--workers", "2")
    gateway.wait_listening(workers=2)
    idp.reset_stats()
    clients = range(40)
    # four connections per client: SO_REUSEPORT spreads them over both workers
    statuses = await asyncio.gather(*(get(gateway.port, i) for i in clients for _ in range(4)))
    assert statuses == [200] * (4 * len(clients))
    assert token_calls(idp) == len(clients)


# -- Redis faults never fail a request -------------------------------------------------------------


async def test_redis_killed_mid_load_then_back(
    idp: TestIdP,
    echo_port: int,
    run_cli: Callable[..., CliGateway],
) -> None:
    redis = RedisServer()
    redis.start()
    try:
        config = shared_config(idp, echo_port, redis_record(redis))
        first, second = start_fleet(run_cli, config, 2)
        cached = range(10)
        assert await asyncio.gather(*(get(first.port, i) for i in cached)) == [200] * 10
        stop = asyncio.Event()
        statuses: list[int] = []

        async def load(port: int) -> None:
            index = 0
            while not stop.is_set():
                statuses.append(await get(port, index % len(cached)))
                index += 1

        loaders = [asyncio.ensure_future(load(gw.port)) for gw in (first, second) for _ in range(4)]
        await asyncio.sleep(0.3)
        redis.kill()  # SIGKILL mid-load
        await asyncio.sleep(0.5)
        # new clients while Redis is down: tokens straight from the IdP
        before = token_calls(idp)
        assert await asyncio.gather(*(get(first.port, i) for i in range(20, 25))) == [200] * 5
        assert token_calls(idp) - before == 5
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*loaders)
        assert statuses and set(statuses) == {200}, f"{len(statuses)} requests"
        redis.start()  # same port, empty
        # the breaker probes again within a few seconds: a new client fetched by one gateway
        # is then served to the other from Redis, neither restarted
        deadline = time.monotonic() + 15
        index = 30
        while True:
            before = token_calls(idp)
            assert await get(first.port, index) == 200
            assert await get(second.port, index) == 200
            if token_calls(idp) - before == 1:
                break
            assert time.monotonic() < deadline, "the L2 was not used again after Redis came back"
            index += 1
            await asyncio.sleep(0.5)
    finally:
        redis.close()


async def test_tampered_values_are_ignored_and_counted(
    idp: TestIdP,
    echo_port: int,
    redis_single: RedisServer,
    run_cli: Callable[..., CliGateway],
) -> None:
    flush(redis_single)
    config = shared_config(idp, echo_port, redis_record(redis_single))
    (writer,) = start_fleet(run_cli, config, 1)
    assert await get(writer.port, 40) == 200
    assert await get(writer.port, 41) == 200
    first_key, second_key = sorted(redis_keys(redis_single))
    # a hostile writer: garbage under one key, a valid value moved to another client's key
    redis_single.cli("SET", first_key, "forged")
    redis_single.cli("COPY", first_key, "scratch")
    assert redis_single.cli("COPY", second_key, first_key, "REPLACE") == "1"
    admin = free_port()
    (reader,) = start_fleet(run_cli, config, 1, "--admin-listen", f"127.0.0.1:{admin}")
    before = token_calls(idp)
    assert await get(reader.port, 40) == 200 and await get(reader.port, 41) == 200
    # client 40's entry is another client's value: ignored, the IdP asked; 41's was intact
    assert token_calls(idp) - before == 1
    text = metrics(admin)
    # the instance label is where the plugin is configured: the same in every worker
    instance = 'instance="services[0].routes[0].plugins[0]"'
    assert f'fastgw_oidc_token_cache_l2_total{{{instance},result="rejected"}} 1.0' in text, text
    assert f'fastgw_oidc_token_cache_l2_total{{{instance},result="hit"}} 1.0' in text, text


async def test_no_client_id_secret_or_token_in_redis(
    idp: TestIdP,
    echo_port: int,
    redis_single: RedisServer,
    run_cli: Callable[..., CliGateway],
) -> None:
    flush(redis_single)
    config = shared_config(idp, echo_port, redis_record(redis_single), cache_ttl_neg=30)
    (gateway,) = start_fleet(run_cli, config, 1)
    tokens = []
    for index in range(50, 55):
        response = await request(
            gateway.port, target="/api/x", headers=[("Authorization", basic(*client(index)))]
        )
        tokens.append(Echo.of(response).bearer)
    wrong = await request(
        gateway.port, target="/api/x", headers=[("Authorization", basic("bench-client-56", "x"))]
    )
    assert wrong.status == 401
    keys = redis_keys(redis_single)
    assert len(keys) == 6  # five tokens and one shared rejection
    dump = "\n".join(keys).encode() + b"".join(redis_single.cli_bytes("GET", key) for key in keys)
    forbidden = [*tokens, *(part for index in range(50, 57) for part in client(index))]
    forbidden += [token.rsplit(".", 1)[-1] for token in tokens]
    leaked = [value[:16] for value in forbidden if value.encode() in dump]
    assert not leaked, leaked


async def test_wrong_secret_costs_one_idp_call_per_fleet(
    idp: TestIdP,
    echo_port: int,
    redis_single: RedisServer,
    run_cli: Callable[..., CliGateway],
) -> None:
    flush(redis_single)
    config = shared_config(idp, echo_port, redis_record(redis_single), cache_ttl_neg=30)
    fleet = start_fleet(run_cli, config, FLEET)
    idp.reset_stats()
    wrong = basic("bench-client-60", "not-the-secret")
    SECRETS.add_client("bench-client-60", "not-the-secret")
    responses = await asyncio.gather(
        *(
            request(gw.port, target="/api/x", headers=[("Authorization", wrong)])
            for gw in fleet
            for _ in range(5)
        )
    )
    assert {r.status for r in responses} == {401}
    assert token_calls(idp) == 1


# -- faults seen from one embedded gateway (its log is the test's) ---------------------------------


async def _serve_clients(port: int, indexes: range) -> list[int]:
    return list(await asyncio.gather(*(get(port, index) for index in indexes)))


async def test_redis_down_at_start_slow_or_refusing_never_fails_a_request(
    idp: TestIdP, echo_port: int, fastgw_logs: LogCollector
) -> None:
    closed = free_port()
    with running_gateway(shared_config(idp, echo_port, {"port": closed})) as gw:
        before = len(fastgw_logs.lines)
        assert await _serve_clients(gw.port, range(70, 90)) == [200] * 20
        warnings = [
            line for line in fastgw_logs.lines[before:] if "token cache redis unavailable" in line
        ]
        assert len(warnings) == 1, warnings  # one line per interval, not one per request

    with RedisServer() as redis:
        # a hung Redis (stopped, connections accepted by the kernel, never answered)
        with running_gateway(shared_config(idp, echo_port, {"port": redis.port})) as gw:
            assert await get(gw.port, 90) == 200
            assert redis.proc is not None
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert await _serve_clients(gw.port, range(91, 96)) == [200] * 5
                # bounded by the Redis timeouts (0.5 s connect + 0.5 s read), not the IdP's
                assert time.monotonic() - started < 5
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)

        # wrong password, and a full Redis (OOM on writes)
        redis.cli("CONFIG", "SET", "requirepass", "right-password")
        SECRETS.add("right-password", "wrong-password")
        record = {"port": redis.port, "password": "wrong-password"}
        with running_gateway(shared_config(idp, echo_port, record)) as gw:
            assert await _serve_clients(gw.port, range(96, 100)) == [200] * 4
        full = {"port": redis.port, "password": "right-password"}
        redis.cli("-a", "right-password", "CONFIG", "SET", "maxmemory", "1")
        redis.cli("-a", "right-password", "CONFIG", "SET", "maxmemory-policy", "noeviction")
        with running_gateway(shared_config(idp, echo_port, full)) as gw:
            assert await _serve_clients(gw.port, range(100, 104)) == [200] * 4
        logged = fastgw_logs.text()
        assert "AuthenticationError" in logged and "OutOfMemoryError" in logged
    assert_no_secrets_in(fastgw_logs.text(), "the fastgw log")


async def test_sentinel_shares_tokens_and_rides_out_a_failover(
    idp: TestIdP, echo_port: int
) -> None:
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(RedisServer())
        replica = stack.enter_context(RedisServer(replica_of=master.port))
        sentinel = stack.enter_context(RedisServer(sentinel_of=("fastgw", master.port)))
        assert wait_until(
            lambda: "master_link_status:up" in replica.cli("INFO", "replication"), timeout=20
        ), replica.log()
        assert wait_until(lambda: "slaves=1" in sentinel.cli("INFO", "sentinel"), timeout=20)
        record = {
            "sentinel_master": "fastgw",
            "sentinel_nodes": [{"host": "127.0.0.1", "port": sentinel.port}],
        }
        config = shared_config(idp, echo_port, record)
        first = stack.enter_context(running_gateway(config))
        second = stack.enter_context(running_gateway(config))
        before = token_calls(idp)
        assert await _serve_clients(first.port, range(110, 115)) == [200] * 5
        assert await _serve_clients(second.port, range(110, 115)) == [200] * 5
        assert token_calls(idp) - before == 5  # the second gateway's tokens came from Redis
        master.kill()
        # while Sentinel promotes the replica: new clients straight from the IdP, no failure
        assert await _serve_clients(first.port, range(115, 120)) == [200] * 5

        def promoted() -> bool:
            address = sentinel.cli("SENTINEL", "get-master-addr-by-name", "fastgw")
            return str(replica.port) in address

        assert wait_until(promoted, timeout=20)
        deadline = time.monotonic() + 20
        index = 120
        while True:  # the gateways find the new master through Sentinel, not restarted
            before = token_calls(idp)
            assert await get(first.port, index) == 200
            assert await get(second.port, index) == 200
            if token_calls(idp) - before == 1:
                break
            assert time.monotonic() < deadline, "the shared cache was not used after failover"
            index += 1
            await asyncio.sleep(0.5)


async def test_a_burst_of_misses_beyond_the_redis_pool_queues_for_it(
    idp: TestIdP, echo_port: int, redis_single: RedisServer
) -> None:
    flush(redis_single)
    record = {**redis_record(redis_single), "keepalive_pool_size": 4}
    config = shared_config(idp, echo_port, record)
    with running_gateway(config) as first, running_gateway(config) as second:
        before = token_calls(idp)
        statuses = await asyncio.gather(
            *(get(gw.port, index) for index in range(CLIENTS) for gw in (first, second))
        )
        assert statuses == [200] * (2 * CLIENTS)
        assert token_calls(idp) - before == CLIENTS
