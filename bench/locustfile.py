"""Locust scenarios for fastgw's openid-connect path: cached hits from a pool of clients, a trickle
of new clients (misses that reach the IdP), wrong secrets (negative cache), 1 KiB / 1 MiB bodies.

Select a scenario by class (each class has one task, tagged with the scenario's family):

    FASTGW_BENCH_CLIENTS=clients.csv .venv/bin/locust -f bench/locustfile.py --headless \\
        --host http://127.0.0.1:8000 -u 50 -t 15s CachedHits

bench/run.py starts the IdP, upstream and gateway, writes the clients file and runs every class.
The clients file is CSV `client_id,client_secret,role`: `warm` rows have their token cached in
the gateway before the run, `fresh` rows have never been seen by it (each is one cache miss).

Settings come from the environment (inherited by `--processes` workers):

| variable                    | meaning                                               | default |
|-----------------------------|-------------------------------------------------------|---------|
| FASTGW_BENCH_CLIENTS        | the clients file (required)                           |         |
| FASTGW_BENCH_POOL           | hits use the first N warm clients                     | all     |
| FASTGW_BENCH_USER_RATE      | requests per second per user (constant throughput)    | 10      |
| FASTGW_BENCH_MISS_SHARE     | NewClients: share of requests from a fresh client     | 0.01    |
| FASTGW_BENCH_WRONG_SHARE    | WrongSecrets: share of requests with a wrong secret   | 0.1     |
| FASTGW_BENCH_WRONG_KEYS     | WrongSecrets: distinct wrong (id, secret) pairs       | 10      |
| FASTGW_BENCH_LATENCY_DIR    | if set, each process writes its raw response times   |         |
|                             | there at exit (`<name>.<pid>.f64`, float64 ms)        |         |

Locust rounds response times under 100 ms to whole milliseconds in its own percentiles; the raw
files keep them exact, and run.py reads its p50/p90/p99 from them.
"""

from __future__ import annotations

import array
import csv
import itertools
import logging
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, tag, task
from locust.env import Environment

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.idp import basic_auth_header  # noqa: E402  (needs REPO_ROOT on sys.path)

ENV_CLIENTS = "FASTGW_BENCH_CLIENTS"
ENV_POOL = "FASTGW_BENCH_POOL"
ENV_USER_RATE = "FASTGW_BENCH_USER_RATE"
ENV_MISS_SHARE = "FASTGW_BENCH_MISS_SHARE"
ENV_WRONG_SHARE = "FASTGW_BENCH_WRONG_SHARE"
ENV_WRONG_KEYS = "FASTGW_BENCH_WRONG_KEYS"
ENV_LATENCY_DIR = "FASTGW_BENCH_LATENCY_DIR"

DEFAULT_USER_RATE = 10.0
DEFAULT_MISS_SHARE = 0.01
DEFAULT_WRONG_SHARE = 0.1
DEFAULT_WRONG_KEYS = 10

ROLE_WARM, ROLE_FRESH = "warm", "fresh"
SMALL_BODY = b"a" * 1024
LARGE_BODY = b"b" * (1024 * 1024)
NETWORK_TIMEOUT = 10.0  # seconds; a bounded wait, far above any healthy response here

# request names: the rows of Locust's stats, and the raw latency files
HIT, MISS, WRONG_SECRET = "hit", "miss", "wrong-secret"
BODY_1KIB, BODY_1MIB = "body-1KiB", "body-1MiB"

logger = logging.getLogger("fastgw.bench")


# -- settings and credentials ---------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Prebuilt Authorization values: the warm pool, the fresh clients, the wrong secrets."""

    warm: tuple[str, ...]
    fresh: tuple[str, ...]
    wrong: tuple[str, ...]


def load_credentials() -> Credentials:
    """Read the clients file named by FASTGW_BENCH_CLIENTS (empty when it is not set, so that
    `locust --help` and listing the classes work without it)."""
    path = os.environ.get(ENV_CLIENTS)
    if not path:
        return Credentials((), (), ())
    rows: dict[str, list[tuple[str, str]]] = {ROLE_WARM: [], ROLE_FRESH: []}
    with open(path, newline="") as file:
        for record in csv.DictReader(file):
            rows[record["role"]].append((record["client_id"], record["client_secret"]))
    pool = _env_int(ENV_POOL, None)
    warm = rows[ROLE_WARM][:pool] if pool is not None else rows[ROLE_WARM]
    wrong_keys = _env_int(ENV_WRONG_KEYS, DEFAULT_WRONG_KEYS) or 1
    # real client ids with a wrong secret: the IdP answers invalid_client
    wrong = [(cid, f"wrong-{index}") for index, (cid, _) in enumerate(warm[:wrong_keys])]
    return Credentials(
        warm=tuple(basic_auth_header(cid, secret) for cid, secret in warm),
        fresh=tuple(basic_auth_header(cid, secret) for cid, secret in rows[ROLE_FRESH]),
        wrong=tuple(basic_auth_header(cid, secret) for cid, secret in wrong),
    )


CREDENTIALS = load_credentials()  # at import, before `--processes` forks: shared by the workers
USER_RATE = _env_float(ENV_USER_RATE, DEFAULT_USER_RATE)
MISS_SHARE = _env_float(ENV_MISS_SHARE, DEFAULT_MISS_SHARE)
WRONG_SHARE = _env_float(ENV_WRONG_SHARE, DEFAULT_WRONG_SHARE)


class FreshClients:
    """This process's share of the fresh clients, each handed out once: with `--processes N`,
    worker i takes rows i, i+N, i+2N, ... so no two processes send the same new client."""

    def __init__(self) -> None:
        self._iterator: Iterator[str] | None = None
        self.exhausted = False

    def next(self, environment: Environment) -> str | None:
        if self._iterator is None:
            index, count = _worker_slot(environment)
            self._iterator = itertools.islice(CREDENTIALS.fresh, index, None, count)
        value = next(self._iterator, None)
        if value is None and not self.exhausted:
            self.exhausted = True
            logger.warning("fresh clients used up: NewClients sends hits only from now on")
        return value


def _worker_slot(environment: Environment) -> tuple[int, int]:
    """(index, count) of this process among the load generators."""
    runner = environment.runner
    options = environment.parsed_options
    count = getattr(options, "processes", None) or 1
    index = getattr(runner, "worker_index", 0)
    if count < 1 or index < 0:  # a worker of an old master, or a remote worker: no partition
        return 0, 1
    return index % count, count


FRESH = FreshClients()


# -- raw latencies --------------------------------------------------------------------------------

_latencies: dict[str, array.array] = {}


@events.request.add_listener
def _record_latency(name: str, response_time: float, **_: Any) -> None:
    samples = _latencies.get(name)
    if samples is None:
        samples = _latencies[name] = array.array("d")
    samples.append(response_time)


@events.quitting.add_listener
def _write_latencies(**_: Any) -> None:
    directory = os.environ.get(ENV_LATENCY_DIR)
    if not directory:
        return
    for name, samples in _latencies.items():
        with open(Path(directory) / f"{name}.{os.getpid()}.f64", "wb") as file:
            samples.tofile(file)


# -- users ----------------------------------------------------------------------------------------


class GatewayUser(FastHttpUser):
    """A caller of the protected route at a constant rate (requests per second per user), so
    that latency is measured at a fixed offered load rather than at saturation."""

    abstract = True
    wait_time = constant_throughput(USER_RATE)
    network_timeout = NETWORK_TIMEOUT
    connection_timeout = NETWORK_TIMEOUT

    def on_start(self) -> None:
        if not CREDENTIALS.warm:
            raise RuntimeError(f"no warm clients: set {ENV_CLIENTS} to a clients file")

    def hit(self) -> None:
        """A request whose token is cached (the hot path)."""
        authorization = random.choice(CREDENTIALS.warm)
        self.client.get("/", headers={"Authorization": authorization}, name=HIT)

    def miss(self) -> None:
        """A client the gateway has never seen: one token call at the IdP."""
        authorization = FRESH.next(self.environment)
        if authorization is None:
            self.hit()
            return
        self.client.get("/", headers={"Authorization": authorization}, name=MISS)

    def wrong_secret(self) -> None:
        """A known client id with a wrong secret: 401, from the negative cache after the first."""
        authorization = random.choice(CREDENTIALS.wrong)
        with self.client.get(
            "/", headers={"Authorization": authorization}, name=WRONG_SECRET, catch_response=True
        ) as response:
            if response.status_code == 401:
                response.success()
            else:
                response.failure(f"expected 401, got {response.status_code}")

    def post_body(self, body: bytes, name: str) -> None:
        authorization = random.choice(CREDENTIALS.warm)
        self.client.post("/", data=body, headers={"Authorization": authorization}, name=name)


class CachedHits(GatewayUser):
    """Token-cached hits from the pool of warm clients (FASTGW_BENCH_POOL: 1, 100, 10,000)."""

    @tag("cached")
    @task
    def cached(self) -> None:
        self.hit()


class NewClients(GatewayUser):
    """Hits with a steady trickle of new clients mixed in (FASTGW_BENCH_MISS_SHARE of them)."""

    @tag("misses")
    @task
    def hits_and_misses(self) -> None:
        if random.random() < MISS_SHARE:
            self.miss()
        else:
            self.hit()


class WrongSecrets(GatewayUser):
    """Hits with wrong secrets mixed in (FASTGW_BENCH_WRONG_SHARE), expecting 401 for those."""

    @tag("wrong-secret")
    @task
    def hits_and_wrong_secrets(self) -> None:
        if random.random() < WRONG_SHARE:
            self.wrong_secret()
        else:
            self.hit()


class Body1KiB(GatewayUser):
    """POST with a 1 KiB body, token cached."""

    @tag("body")
    @task
    def small_body(self) -> None:
        self.post_body(SMALL_BODY, BODY_1KIB)


class Body1MiB(GatewayUser):
    """POST with a 1 MiB body, token cached (streamed through the gateway)."""

    @tag("body")
    @task
    def large_body(self) -> None:
        self.post_body(LARGE_BODY, BODY_1MIB)
