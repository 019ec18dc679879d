"""`make bench-locust`: the Locust scenarios of bench/locustfile.py against a real stack, one table.

Starts the test IdP, an nginx upstream, fastgw with openid-connect (and nginx proxy_pass for the
fixed-rate comparison), runs each scenario headless for a fixed time at a fixed offered rate, checks
that N concurrent new clients cost exactly N token calls, and writes CSV, Locust HTML reports and a
Markdown summary under bench/results/<timestamp>-locust/.

    .venv/bin/python bench/run.py [--duration 15] [--rate 1000] [--scenarios cached-1 ...]
"""

from __future__ import annotations

import argparse
import array
import contextlib
import csv
import http.client
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
    HTTP_TIMEOUT,
    LOAD_CPU,
    LOOPBACK,
    REPO_ROOT,
    RESULTS_ROOT,
    BenchError,
    Processes,
    RssSampler,
    Setup,
    Target,
    WrkOptions,
    WrkRun,
    basic_authorization,
    describe_machine,
    exit_on_sigterm,
    extra_credentials,
    find_tool,
    free_port,
    group_rss_bytes,
    idp_token_requests,
    load_average,
    make_results_dir,
    markdown_table,
    mib,
    oidc_plugin,
    paced_lua,
    pinning_available,
    run_wrk,
    start_fastgw,
    start_idp,
    start_nginx_proxy,
    start_upstream,
    text_table,
    tool_version,
    warm_many,
)

if TYPE_CHECKING:
    from tests.support.idp import TestIdP

# -- constants ------------------------------------------------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent
LOCUSTFILE = BENCH_DIR / "locustfile.py"

DEFAULT_DURATION = 15  # seconds per scenario: 9 scenarios + warm-up stay under ~5 minutes
# Offered load of the scenario runs: well inside what one Locust process drives (~3,000 req/s per
# core: bench/README.md), so the latency measured is the gateway's, not Locust's queueing.
DEFAULT_RATE = 1000.0
# The fixed-rate target: fastgw's p99 at 5,000 req/s within 2 ms of nginx's.
DEFAULT_COMPARE_RATE = 5000.0
# wrk connections of the paced runs (each pauses connections / rate on average between requests:
# 20 ms at 5,000 req/s, well above wrk's 1 ms pause resolution)
PACED_CONNECTIONS = 100
PACED_ROUNDS = 3  # interleaved nginx / fastgw rounds; --duration is split over them
PACED_MIN_SECONDS = 5
DEFAULT_LARGE_BODY_RATE = 50.0  # 1 MiB bodies: 50 MiB/s through the gateway
# Requests per second per Locust user. Few users at a high rate each: with many users, Locust's
# own greenlet scheduling adds milliseconds to every response time it measures (50 users x 20/s
# showed a 3 ms median against nginx `return 200`, 10 users x 100/s about 1 ms).
MAX_USER_RATE = 100.0
POOL_SIZES = (1, 100, 10_000)
MIXED_POOL = 100  # warm clients behind the mixed scenarios (misses, wrong secrets, bodies)
MISS_SHARE = 0.01  # NewClients: 1% of requests come from a client never seen before
FRESH_RESERVE_FACTOR = 3  # fresh clients reserved per expected miss (random share varies)
FRESH_RESERVE_MIN = 200
WRONG_SHARE = 0.1
WRONG_KEYS = 10  # distinct wrong (id, secret) pairs; each reaches the IdP once per cache_ttl_neg
NEGATIVE_TTL = 5.0  # seconds: the plugin's default cache_ttl_neg (schema.DEFAULT_CACHE_TTL_NEG)

# N concurrent new clients, each sending BURST_REQUESTS requests at once, must cost N token calls;
# the IdP answers slowly meanwhile so that every request arrives while the first fetch is in flight.
BURST_CLIENTS = 50
BURST_REQUESTS = 4
BURST_IDP_DELAY_MS = 200

LOCUST_OVERHEAD = 5  # seconds to start and stop one Locust run, roughly
LOCUST_SLACK = 60  # seconds Locust may take beyond --run-time (start, stop, reports)
LOCUST_STOP_TIMEOUT = 3  # seconds running tasks get to finish at the end
RSS_SAMPLE_SECONDS = 0.25
UPSTREAM_EXTRA = "\n        client_max_body_size 0;"  # nginx refuses bodies over 1 MiB otherwise
ENV_PREFIX = "FASTGW_BENCH_"
EXIT_OK, EXIT_FLAGGED, EXIT_MISSING_TOOLS = 0, 1, 2


# -- scenarios ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured load: a Locust user class (or paced wrk) at an offered rate, against fastgw
    or nginx."""

    name: str
    user_class: str
    description: str
    rate: float  # offered requests per second, all users together
    pool: int  # warm clients the hits are spread over
    processes: int
    target: str = "fastgw"  # or "nginx" (proxy_pass, the reference)
    generator: str = "locust"  # or "wrk" (paced connections, see paced_lua)
    settings: Mapping[str, str] = field(default_factory=dict)  # FASTGW_BENCH_* for the locustfile

    @property
    def users(self) -> int:
        """Locust users, or wrk connections."""
        if self.generator == "wrk":
            return PACED_CONNECTIONS
        return max(1, math.ceil(self.rate / MAX_USER_RATE))

    @property
    def user_rate(self) -> float:
        return self.rate / self.users


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    mixed = {"POOL": str(MIXED_POOL)}
    scenarios = [
        Scenario(
            f"cached-{pool}",
            "CachedHits",
            f"token-cached hits over {pool:,} client(s)",
            args.rate,
            pool,
            args.processes,
            settings={"POOL": str(pool)},
        )
        for pool in POOL_SIZES
    ]
    scenarios += [
        Scenario(
            "new-clients",
            "NewClients",
            f"hits + {MISS_SHARE:.0%} new clients (misses reach the IdP)",
            args.rate,
            MIXED_POOL,
            args.processes,
            settings={**mixed, "MISS_SHARE": str(MISS_SHARE)},
        ),
        Scenario(
            "wrong-secrets",
            "WrongSecrets",
            f"hits + {WRONG_SHARE:.0%} wrong secrets over {WRONG_KEYS} pairs (401 expected)",
            args.rate,
            MIXED_POOL,
            args.processes,
            settings={**mixed, "WRONG_SHARE": str(WRONG_SHARE), "WRONG_KEYS": str(WRONG_KEYS)},
        ),
        Scenario(
            "body-1KiB",
            "Body1KiB",
            "POST 1 KiB, token cached",
            args.rate,
            MIXED_POOL,
            args.processes,
            settings=mixed,
        ),
        Scenario(
            "body-1MiB",
            "Body1MiB",
            "POST 1 MiB, token cached",
            args.large_body_rate,
            MIXED_POOL,
            args.processes,
            settings=mixed,
        ),
    ]
    scenarios += [
        Scenario(
            f"fixed-rate-{target}",
            "CachedHits",
            f"{args.compare_rate:,.0f} req/s offered, 1 client, {target}",
            args.compare_rate,
            1,
            args.compare_processes,
            target=target,
            settings={"POOL": "1"},
        )
        for target in ("nginx", "fastgw")
    ]
    if args.wrk:
        scenarios += [
            Scenario(
                f"paced-{target}",
                "",
                f"{args.compare_rate:,.0f} req/s offered by paced wrk, 1 client, {target}",
                args.compare_rate,
                1,
                1,
                target=target,
                generator="wrk",
            )
            for target in ("nginx", "fastgw")
        ]
    return scenarios


def reserved_fresh_clients(scenarios: Sequence[Scenario], duration: int) -> int:
    expected = sum(s.rate * duration * float(s.settings.get("MISS_SHARE", 0)) for s in scenarios)
    if expected == 0:
        return 0
    return max(FRESH_RESERVE_MIN, math.ceil(expected * FRESH_RESERVE_FACTOR))


# -- results --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What one scenario measured."""

    scenario: str
    description: str
    users: int
    offered_rps: float
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    idp_token_calls: int
    rss_peak_bytes: int | None  # the gateway's; None for the nginx runs
    gateway_requests: int | None  # counted by the gateway (admin /status)
    by_name: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class ClientGroups:
    """The IdP's generated clients, split in order: `warm` ones get their token cached before the
    scenarios that use them, `fresh` ones are the misses of NewClients, `burst` the miss-burst's."""

    warm: list[tuple[str, str]]
    fresh: list[tuple[str, str]]
    burst: list[tuple[str, str]]

    @classmethod
    def split(cls, credentials: list[tuple[str, str]], warm: int, fresh: int) -> ClientGroups:
        return cls(
            credentials[:warm], credentials[warm : warm + fresh], credentials[warm + fresh :]
        )


@dataclass(frozen=True, slots=True)
class Stack:
    """The servers every scenario talks to, and the clients the IdP knows."""

    idp: TestIdP
    fastgw: Target
    nginx: Target
    admin_port: int
    clients: ClientGroups

    @property
    def port(self) -> int:
        return int(self.fastgw.url.rstrip("/").rsplit(":", 1)[1])


# -- load generation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocustPlan:
    """Where a Locust run writes, and how it is started."""

    locust: str
    wrk: str | None
    results_dir: Path
    clients_file: Path
    duration: int
    pin: bool


def locust_argv(plan: LocustPlan, scenario: Scenario, url: str) -> list[str]:
    prefix = plan.results_dir / scenario.name
    argv = [plan.locust, "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    argv += ["-u", str(scenario.users), "-r", str(scenario.users), "-t", f"{plan.duration}s"]
    argv += ["--host", url, "--csv", str(prefix), "--html", f"{prefix}.html"]
    argv += ["--stop-timeout", str(LOCUST_STOP_TIMEOUT), "--loglevel", "WARNING"]
    if scenario.processes > 1:
        argv += ["--processes", str(scenario.processes)]
    argv.append(scenario.user_class)
    if plan.pin and scenario.processes > 1:
        # run.py sits on LOAD_CPU; more than one Locust process needs the other cores too
        argv = ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}", *argv]
    return argv


def locust_env(plan: LocustPlan, scenario: Scenario, latency_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[ENV_PREFIX + "CLIENTS"] = str(plan.clients_file)
    env[ENV_PREFIX + "USER_RATE"] = str(scenario.user_rate)
    env[ENV_PREFIX + "LATENCY_DIR"] = str(latency_dir)
    env.update({ENV_PREFIX + key: value for key, value in scenario.settings.items()})
    return env


def run_locust(plan: LocustPlan, scenario: Scenario, url: str) -> Path:
    """One headless run; returns the directory of the raw latency files."""
    latency_dir = plan.results_dir / "latency" / scenario.name
    latency_dir.mkdir(parents=True)
    log_path = plan.results_dir / "logs" / f"locust-{scenario.name}.log"
    argv = locust_argv(plan, scenario, url)
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            subprocess.run(
                argv,
                env=locust_env(plan, scenario, latency_dir),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=plan.duration + LOCUST_SLACK,
                check=False,  # exit 1 means "some requests failed": the table says so
            )
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"{scenario.name}: locust did not finish in time") from error
    if not (plan.results_dir / f"{scenario.name}_stats.csv").exists():
        raise BenchError(f"{scenario.name}: locust wrote no stats (log: {log_path})")
    return latency_dir


# -- reading Locust's output ----------------------------------------------------------------------


def read_locust_stats(path: Path) -> dict[str, dict[str, str]]:
    """Rows of <prefix>_stats.csv by request name ("Aggregated" for the total)."""
    with open(path, newline="") as file:
        return {row["Name"]: row for row in csv.DictReader(file)}


def read_latencies(directory: Path) -> dict[str, list[float]]:
    """Raw response times (ms) by request name, merged over the Locust processes."""
    merged: dict[str, list[float]] = {}
    for path in sorted(directory.glob("*.f64")):
        samples = array.array("d")
        samples.frombytes(path.read_bytes())
        merged.setdefault(path.name.split(".", 1)[0], []).extend(samples)
    return merged


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p90_ms": percentile(values, 0.90),
        "p99_ms": percentile(values, 0.99),
    }


# -- running a scenario ---------------------------------------------------------------------------


def admin_total_requests(admin_port: int) -> int | None:
    conn = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/status")
        return int(json.loads(conn.getresponse().read())["server"]["total_requests"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Measured:
    """What the load generator reported for one run."""

    requests: int
    failures: int
    rps: float
    overall: dict[str, float]  # latency_summary of every request
    by_name: dict[str, dict[str, float]]  # latency_summary per request name


def measure_locust(plan: LocustPlan, scenario: Scenario, url: str) -> Measured:
    latency_dir = run_locust(plan, scenario, url.rstrip("/"))
    total = read_locust_stats(plan.results_dir / f"{scenario.name}_stats.csv")["Aggregated"]
    latencies = read_latencies(latency_dir)
    every = [value for values in latencies.values() for value in values]
    return Measured(
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        rps=float(total["Requests/s"]),
        overall=latency_summary(every or [math.nan]),
        by_name={name: latency_summary(values) for name, values in latencies.items()},
    )


def paced_target(
    plan: LocustPlan, scenario: Scenario, target: Target, client: tuple[str, str]
) -> Target:
    script = plan.results_dir / f"{scenario.name}.lua"
    script.write_text(paced_lua(PACED_CONNECTIONS * 1000 / scenario.rate))
    authorization = basic_authorization(*client)
    header = (f"Authorization: {authorization}",)
    return Target(scenario.name, target.url, target.pgid, header, script)


def run_paced(plan: LocustPlan, scenarios: Sequence[Scenario], stack: Stack) -> list[Outcome]:
    """The paced wrk runs in interleaved rounds (nginx, fastgw, nginx, ...), so that drift of a
    shared machine hits both alike; each figure is the median over the rounds."""
    seconds = max(PACED_MIN_SECONDS, plan.duration // PACED_ROUNDS)
    options = WrkOptions(plan.wrk or "wrk", threads=1, connections=PACED_CONNECTIONS, pin=plan.pin)
    targets = {
        s.name: paced_target(
            plan, s, stack.fastgw if s.target == "fastgw" else stack.nginx, stack.clients.warm[0]
        )
        for s in scenarios
    }
    runs: dict[str, list[WrkRun]] = {s.name: [] for s in scenarios}
    token_calls = dict.fromkeys(runs, 0)
    peaks = dict.fromkeys(runs, 0)
    for _ in range(PACED_ROUNDS):
        for scenario in scenarios:
            before = idp_token_requests(stack.idp)
            sampler = RssSampler(stack.fastgw.pgid, RSS_SAMPLE_SECONDS)
            with sampler.running():
                runs[scenario.name].append(run_wrk(targets[scenario.name], options, seconds))
            token_calls[scenario.name] += idp_token_requests(stack.idp) - before
            peaks[scenario.name] = max(peaks[scenario.name], sampler.peak)
    return [
        paced_outcome(s, runs[s.name], token_calls[s.name], peaks[s.name], plan.duration)
        for s in scenarios
    ]


def paced_outcome(
    scenario: Scenario, runs: Sequence[WrkRun], token_calls: int, rss_peak: int, duration: int
) -> Outcome:
    def median(name: str) -> float:
        return statistics.median(getattr(run, name) for run in runs)

    outcome = Outcome(
        scenario=scenario.name,
        description=scenario.description,
        users=scenario.users,
        offered_rps=scenario.rate,
        requests=sum(run.requests for run in runs),
        failures=sum(run.errors for run in runs),
        rps=median("requests_per_sec"),
        p50_ms=median("p50_ms"),
        p90_ms=median("p90_ms"),
        p99_ms=median("p99_ms"),
        idp_token_calls=token_calls,
        rss_peak_bytes=rss_peak if scenario.target == "fastgw" else None,
        gateway_requests=None,
    )
    note, outcome.flagged = judge(scenario, outcome, duration)
    rounds = ", ".join(f"{run.p99_ms:.2f}" for run in runs)
    outcome.note = "; ".join(filter(None, [f"medians of {len(runs)} rounds, p99s: {rounds}", note]))
    return outcome


def run_scenario(plan: LocustPlan, scenario: Scenario, stack: Stack) -> Outcome:
    target = stack.fastgw if scenario.target == "fastgw" else stack.nginx
    on_gateway = scenario.target == "fastgw"
    tokens_before = idp_token_requests(stack.idp)
    gateway_before = admin_total_requests(stack.admin_port)
    sampler = RssSampler(stack.fastgw.pgid, RSS_SAMPLE_SECONDS)
    with sampler.running():
        measured = measure_locust(plan, scenario, target.url)
    gateway_after = admin_total_requests(stack.admin_port)
    gateway_requests = None
    if on_gateway and gateway_before is not None and gateway_after is not None:
        gateway_requests = gateway_after - gateway_before
    outcome = Outcome(
        scenario=scenario.name,
        description=scenario.description,
        users=scenario.users,
        offered_rps=scenario.rate,
        requests=measured.requests,
        failures=measured.failures,
        rps=measured.rps,
        p50_ms=measured.overall["p50_ms"],
        p90_ms=measured.overall["p90_ms"],
        p99_ms=measured.overall["p99_ms"],
        idp_token_calls=idp_token_requests(stack.idp) - tokens_before,
        rss_peak_bytes=sampler.peak if on_gateway else None,
        gateway_requests=gateway_requests,
        by_name=measured.by_name,
    )
    outcome.note, outcome.flagged = judge(scenario, outcome, plan.duration)
    return outcome


def judge(scenario: Scenario, outcome: Outcome, duration: int) -> tuple[str, bool]:
    """A short reading of the figures, and whether the run is suspect."""
    notes = []
    flagged = outcome.failures > 0
    if outcome.failures:
        notes.append(f"{outcome.failures} failed requests")
    if outcome.rps < 0.9 * scenario.rate:
        notes.append(f"offered rate not reached ({outcome.rps / scenario.rate:.0%})")
    misses = int(outcome.by_name.get("miss", {}).get("count", 0))
    if scenario.user_class == "NewClients":
        ok = outcome.idp_token_calls == misses
        notes.append(f"{misses} new clients -> {outcome.idp_token_calls} token calls")
        flagged |= not ok
    elif scenario.user_class == "WrongSecrets":
        bound = WRONG_KEYS * math.ceil(duration / NEGATIVE_TTL + 1)
        notes.append(f"wrong-secret token calls bounded by {bound} (neg. cache {NEGATIVE_TTL:g}s)")
        flagged |= outcome.idp_token_calls > bound
    elif scenario.target == "fastgw" and outcome.idp_token_calls:
        notes.append("token calls during a hits-only run")
        flagged = True
    if outcome.gateway_requests is not None and outcome.gateway_requests < outcome.requests:
        notes.append(f"gateway counted {outcome.gateway_requests} requests")
    return "; ".join(notes), flagged


# -- N concurrent new clients, N token calls ------------------------------------------------------


def miss_burst(port: int, idp: TestIdP, credentials: Sequence[tuple[str, str]]) -> Outcome:
    """BURST_CLIENTS new clients, BURST_REQUESTS concurrent requests each, all released at once
    while the IdP answers slowly: the gateway must make exactly one token call per client."""
    authorizations = [basic_authorization(cid, secret) for cid, secret in credentials]
    requests = [auth for auth in authorizations for _ in range(BURST_REQUESTS)]
    barrier = threading.Barrier(len(requests))

    def send(authorization: str) -> tuple[int, float]:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=HTTP_TIMEOUT)
        try:
            conn.connect()
            barrier.wait(timeout=HTTP_TIMEOUT)
            started = time.perf_counter()
            conn.request("GET", "/", headers={"Authorization": authorization})
            response = conn.getresponse()
            response.read()
            return response.status, (time.perf_counter() - started) * 1000
        finally:
            conn.close()

    idp.set_delay(BURST_IDP_DELAY_MS)
    before = idp_token_requests(idp)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            results = list(pool.map(send, requests))
    finally:
        idp.set_delay(0)
    calls = idp_token_requests(idp) - before
    failures = sum(status != 200 for status, _ in results)
    passed = calls == len(credentials) and failures == 0
    verdict = "PASS" if passed else "FAIL"
    summary = latency_summary([ms for _, ms in results])
    return Outcome(
        scenario="miss-burst",
        description=(
            f"{len(credentials)} new clients x {BURST_REQUESTS} concurrent requests, "
            f"IdP delayed {BURST_IDP_DELAY_MS} ms"
        ),
        users=len(requests),
        offered_rps=math.nan,
        requests=len(results),
        failures=failures,
        rps=math.nan,  # a burst, not a rate
        p50_ms=summary["p50_ms"],
        p90_ms=summary["p90_ms"],
        p99_ms=summary["p99_ms"],
        idp_token_calls=calls,
        rss_peak_bytes=None,
        gateway_requests=None,
        note=f"{verdict}: {calls} token calls for {len(credentials)} new clients",
        flagged=not passed,
    )


# -- report ---------------------------------------------------------------------------------------

TABLE_HEADER = (
    "scenario",
    "users",
    "offered",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "errors",
    "IdP token calls",
    "gw RSS MiB",
    "notes",
)
TABLE_ALIGN = "lrrrrrrrrrl"


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def table_rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    return [
        [
            o.scenario,
            str(o.users),
            "-" if math.isnan(o.offered_rps) else f"{o.offered_rps:,.0f}",
            "-" if math.isnan(o.rps) else f"{o.rps:,.0f}",
            _ms(o.p50_ms),
            _ms(o.p90_ms),
            _ms(o.p99_ms),
            f"**{o.failures}**" if o.failures else "0",
            str(o.idp_token_calls),
            "-" if o.rss_peak_bytes is None else mib(o.rss_peak_bytes),
            o.note,
        ]
        for o in outcomes
    ]


def comparison_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """fastgw's p99 against nginx's at the same offered rate (the issue's target: <= +2 ms)."""
    by_name = {o.scenario: o for o in outcomes}
    lines = []
    for prefix, generator in (("fixed-rate", "Locust"), ("paced", "paced wrk")):
        nginx, fastgw = by_name.get(f"{prefix}-nginx"), by_name.get(f"{prefix}-fastgw")
        if nginx is None or fastgw is None or nginx.p99_ms is None or fastgw.p99_ms is None:
            continue
        delta = fastgw.p99_ms - nginx.p99_ms
        lines.append(
            f"{generator} at {fastgw.offered_rps:,.0f} req/s offered: fastgw p99 "
            f"{fastgw.p99_ms:.2f} ms vs nginx {nginx.p99_ms:.2f} ms ({delta:+.2f} ms; target "
            f"<= +2 ms); achieved {fastgw.rps:,.0f} / {nginx.rps:,.0f} req/s"
        )
    return lines


def progress_line(o: Outcome) -> str:
    return (
        f"{o.rps:,.0f} req/s, p50 {_ms(o.p50_ms)} p99 {_ms(o.p99_ms)} ms, errors {o.failures}, "
        f"token calls {o.idp_token_calls}{'; ' + o.note if o.note else ''}"
    )


def detail_rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        for name, summary in sorted(o.by_name.items()):
            rows.append(
                [
                    o.scenario,
                    name,
                    f"{int(summary['count']):,}",
                    _ms(summary["p50_ms"]),
                    _ms(summary["p90_ms"]),
                    _ms(summary["p99_ms"]),
                ]
            )
    return rows


def render_markdown(
    outcomes: Sequence[Outcome], environment: Mapping[str, object], notes: Sequence[str]
) -> str:
    parts = [f"# bench/run.py — {environment['date']}", ""]
    parts += [f"- {key}: `{value}`" for key, value in environment.items() if key != "date"]
    parts += ["", markdown_table(TABLE_HEADER, table_rows(outcomes), TABLE_ALIGN), ""]
    parts += [f"- {line}" for line in comparison_lines(outcomes)]
    parts += [f"- note: {note}" for note in notes]
    if any(o.flagged for o in outcomes):
        flagged = ", ".join(o.scenario for o in outcomes if o.flagged)
        parts.append(f"- **flagged (see notes): {flagged}**")
    parts += ["", "Latency by request name (exact, from the raw response times):", ""]
    header = ("scenario", "request", "count", "p50 ms", "p90 ms", "p99 ms")
    parts += [markdown_table(header, detail_rows(outcomes), "llrrrr"), ""]
    return "\n".join(parts)


def write_results(
    results_dir: Path,
    outcomes: Sequence[Outcome],
    environment: Mapping[str, object],
    notes: Sequence[str],
) -> str:
    markdown = render_markdown(outcomes, environment, notes)
    (results_dir / "summary.md").write_text(markdown)
    with open(results_dir / "summary.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(TABLE_HEADER)
        writer.writerows([cell.strip("*") for cell in row] for row in table_rows(outcomes))
    document = {
        "environment": dict(environment),
        "outcomes": [asdict(o) for o in outcomes],
        "notes": list(notes),
    }
    (results_dir / "summary.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    return markdown


# -- main -----------------------------------------------------------------------------------------


def default_processes() -> int:
    """Locust processes for the scenario runs: leave one core to the gateway."""
    return max(1, (os.cpu_count() or 1) - 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION, help="s per scenario")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="offered req/s")
    parser.add_argument(
        "--large-body-rate", type=float, default=DEFAULT_LARGE_BODY_RATE, help="1 MiB req/s"
    )
    parser.add_argument(
        "--compare-rate", type=float, default=DEFAULT_COMPARE_RATE, help="fixed-rate req/s"
    )
    parser.add_argument(
        "--processes", type=int, default=default_processes(), help="Locust processes"
    )
    parser.add_argument(
        "--compare-processes",
        type=int,
        default=default_processes(),
        help="Locust processes of the fixed-rate runs (one drives ~3,000-4,500 req/s)",
    )
    parser.add_argument("--scenarios", nargs="+", help="run only these (names as in the table)")
    parser.add_argument("--no-burst", action="store_true", help="skip the miss-burst check")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_ROOT, help="a timestamped directory goes here"
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.processes, args.compare_processes) < 1:
        parser.error("--duration, --processes, --compare-processes must be >= 1")
    if min(args.rate, args.large_body_rate, args.compare_rate) <= 0:
        parser.error("rates must be > 0")
    return args


def select_scenarios(args: argparse.Namespace) -> list[Scenario]:
    scenarios = build_scenarios(args)
    if not args.scenarios:
        return scenarios
    known = {s.name for s in scenarios} | {"miss-burst"}
    unknown = set(args.scenarios) - known
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {known})")
    args.no_burst = args.no_burst or "miss-burst" not in args.scenarios
    return [s for s in scenarios if s.name in args.scenarios]


def write_clients_file(path: Path, clients: ClientGroups) -> None:
    """The locustfile's credentials (from the IdP's generated clients): warm, then fresh."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["client_id", "client_secret", "role"])
        writer.writerows([client_id, secret, "warm"] for client_id, secret in clients.warm)
        writer.writerows([client_id, secret, "fresh"] for client_id, secret in clients.fresh)


class Warmer:
    """Caches the warm clients' tokens in the gateway, growing the pool as scenarios need it."""

    def __init__(self, port: int, clients: Sequence[tuple[str, str]]) -> None:
        self.port = port
        self.clients = clients
        self.warmed = 0

    def ensure(self, pool: int) -> None:
        if pool <= self.warmed:
            return
        started = time.monotonic()
        done = warm_many(self.port, self.clients[self.warmed : pool])
        self.warmed += done
        seconds = time.monotonic() - started
        print(f"  warmed clients {self.warmed - done:,}..{self.warmed:,} in {seconds:.1f}s")


def estimated_seconds(scenarios: Sequence[Scenario], duration: int) -> int:
    """Load time, plus a few seconds per Locust start and stop."""
    locust = sum(duration + LOCUST_OVERHEAD for s in scenarios if s.generator == "locust")
    paced = any(s.generator == "wrk" for s in scenarios)
    per_round = max(PACED_MIN_SECONDS, duration // PACED_ROUNDS)
    return locust + (2 * PACED_ROUNDS * per_round if paced else 0)


def start_stack(
    setup: Setup, stack: contextlib.ExitStack, warm: int, fresh: int, burst: int
) -> Stack:
    """IdP, nginx upstream, nginx proxy_pass (the reference), fastgw + openid-connect."""
    idp = start_idp(stack, extra_clients=warm + fresh + burst)
    clients = ClientGroups.split(extra_credentials(idp), warm, fresh)
    start_upstream(setup, UPSTREAM_EXTRA)
    nginx = start_nginx_proxy(setup, UPSTREAM_EXTRA)
    admin_port = free_port()
    port, pgid = start_fastgw(
        setup, "fastgw-oidc", [oidc_plugin(idp.issuer)], admin_port=admin_port
    )
    fastgw = Target("fastgw", f"http://{LOOPBACK}:{port}/", pgid)
    return Stack(idp, fastgw, nginx, admin_port, clients)


def describe_environment(args: argparse.Namespace, locust: str, nginx: str, pin_note: str) -> dict:
    return {
        **describe_machine(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "locust": tool_version([locust, "--version"]),
        "nginx": tool_version([nginx, "-v"]),
        "pinning": pin_note,
        "duration_per_scenario": f"{args.duration}s",
        "locust_processes": f"{args.processes} (fixed-rate runs: {args.compare_processes})",
        "user_rate": f"<= {MAX_USER_RATE:g} req/s per Locust user (constant_throughput)",
    }


def pin_self(pin: bool) -> tuple[bool, str]:
    """With two cores or more: the gateway alone on PROXY_CPU, everything else (this process and
    so the IdP, nginx and Locust it starts) on LOAD_CPU."""
    if not pin:
        return False, "disabled (--no-pin)"
    available, note = pinning_available(0, LOAD_CPU)
    if not available:
        return False, note
    os.sched_setaffinity(0, {LOAD_CPU})
    return True, f"gateway/nginx on core 0; IdP, upstream, Locust (1 process) on core {LOAD_CPU}"


def run_all(
    plan: LocustPlan, scenarios: Sequence[Scenario], servers: Stack, notes: list[str]
) -> list[Outcome]:
    """The Locust scenarios in order, then the paced pair, then the miss burst."""
    outcomes: list[Outcome] = []
    warmer = Warmer(servers.port, servers.clients.warm)
    for scenario in scenarios:
        warmer.ensure(scenario.pool)
        if scenario.generator != "locust":
            continue
        print(f"- {scenario.name}: {scenario.description}", flush=True)
        outcomes.append(run_scenario(plan, scenario, servers))
        print(f"  {progress_line(outcomes[-1])}", flush=True)
    paced = [s for s in scenarios if s.generator == "wrk"]
    if paced:
        print(f"- {', '.join(s.name for s in paced)}: interleaved rounds", flush=True)
        outcomes += run_paced(plan, paced, servers)
        for outcome in outcomes[-len(paced) :]:
            print(f"  {outcome.scenario}: {progress_line(outcome)}", flush=True)
    if servers.clients.burst:
        outcomes.append(miss_burst(servers.port, servers.idp, servers.clients.burst))
        print(f"- miss-burst: {outcomes[-1].note}", flush=True)
    rss = group_rss_bytes(servers.fastgw.pgid)
    notes.append(f"gateway RSS at the end: {mib(rss)} MiB with {warmer.warmed:,} warm clients")
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.wrk = find_tool("wrk")
    scenarios = select_scenarios(args)
    nginx = find_tool("nginx")
    locust = str(Path(sys.executable).with_name("locust"))
    if nginx is None or not Path(locust).exists():
        print("missing: nginx (apt-get install nginx-light) or locust (pip install -e '.[dev]')")
        return EXIT_MISSING_TOOLS
    pin, pin_note = pin_self(not args.no_pin)
    results_dir = make_results_dir(args.results_dir, "-locust")
    (results_dir / "logs").mkdir()
    environment = describe_environment(args, locust, nginx, pin_note)
    max_pool = max((s.pool for s in scenarios), default=1)
    fresh = reserved_fresh_clients(scenarios, args.duration)
    burst = 0 if args.no_burst else BURST_CLIENTS
    seconds = estimated_seconds(scenarios, args.duration)
    print(f"results: {results_dir}\npinning: {pin_note}\nabout {seconds}s of load", flush=True)

    notes: list[str] = []
    if args.wrk is None:
        notes.append("wrk not installed: paced runs skipped (apt-get install wrk)")
    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-bench-")))
        procs = Processes(results_dir / "logs", pin=pin)
        stack.callback(procs.stop_all)
        setup = Setup(procs=procs, work_dir=work_dir, results_dir=results_dir, nginx=nginx)
        try:
            servers = start_stack(setup, stack, max_pool, fresh, burst)
        except (BenchError, RuntimeError) as error:
            print(f"setup failed: {error}", file=sys.stderr)
            return EXIT_FLAGGED
        clients_file = results_dir / "clients.csv"
        write_clients_file(clients_file, servers.clients)
        plan = LocustPlan(locust, args.wrk, results_dir, clients_file, args.duration, pin)
        outcomes = run_all(plan, scenarios, servers, notes)

    environment["loadavg_after"] = load_average()
    markdown = write_results(results_dir, outcomes, environment, notes)
    print()
    print(text_table(TABLE_HEADER, table_rows(outcomes), TABLE_ALIGN).replace("**", ""))
    for line in comparison_lines(outcomes) + notes:
        print(f"- {line}")
    print(f"\nMarkdown summary: {results_dir / 'summary.md'} ({len(markdown.splitlines())} lines)")
    return EXIT_FLAGGED if any(o.flagged for o in outcomes) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
