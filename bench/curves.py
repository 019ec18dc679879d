"""Growth curves of the gateway: req/s and p99 versus connections, versus distinct cached clients
(with RSS), and RSS versus streamed request body size. Tables, plus a PNG when matplotlib is there.

    .venv/bin/python bench/curves.py [--curves connections clients bodies] [--warm-budget 240]

wrk measures the first two (fastgw + openid-connect and nginx proxy_pass in front of an nginx
upstream); the third streams bodies from a generator through the gateway to the echo upstream's
`/upload`, which counts what arrives. Results go to bench/results/<timestamp>-curves/.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
    LOAD_CPU,
    LOOPBACK,
    PROXY_CPU,
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
    measure_wrk,
    mib,
    missing_tools,
    oidc_plugin,
    pinning_available,
    rotation_lua,
    start_fastgw,
    start_idp,
    start_nginx_proxy,
    start_upstream,
    text_table,
    tool_version,
    wait_for_port,
    warm_many,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from tests.support.idp import TestIdP

# -- constants ------------------------------------------------------------------------------------

KIB, MIB, GIB = 2**10, 2**20, 2**30
CURVES = ("connections", "clients", "bodies")
DEFAULT_CONNECTIONS = (10, 100, 1000)
# 50,000 is the most the L1 holds when callers send Basic headers: L1_MAX_ENTRIES (100,000) keys,
# two per client (the credentials' key and the header's alias)
DEFAULT_CLIENTS = (1, 100, 1_000, 10_000, 50_000, 100_000)
DEFAULT_BODY_SIZES = (KIB, MIB, 16 * MIB, 128 * MIB, GIB)
DEFAULT_DURATION = 4  # seconds per measured wrk run
DEFAULT_WARMUP = 1  # seconds of discarded wrk before each measured run
DEFAULT_ROUNDS = 3  # runs per point, interleaved with the point's reference; medians reported
# Warming N clients costs N token calls at the single-threaded test IdP (~2-5 ms each, a few
# hundred per second here): 100,000 clients would take several minutes, so the clients curve
# stops at the largest count that this budget allows and says so.
DEFAULT_WARM_BUDGET = 240  # seconds
CLIENTS_CURVE_CONNECTIONS = 50  # as compare.py's runs
WRK_THREADS = 1
STREAM_CHUNK = 256 * KIB  # what the body generator yields at a time
RSS_SAMPLE_SECONDS = 0.05
UPLOAD_TIMEOUT = 120.0  # seconds of socket inactivity before an upload counts as failed
PNG_NAME = "curves.png"
BODY_RSS_TARGET = 20 * 2**20  # the bound on RSS growth for a 1 GiB streamed body
EXIT_OK, EXIT_FLAGGED, EXIT_MISSING_TOOLS = 0, 1, 2
SIZE_UNITS = {"K": KIB, "M": MIB, "G": GIB}


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionsPoint:
    """Medians over the rounds of one target at one connection count."""

    target: str
    connections: int
    rps: float
    p99_ms: float
    errors: int  # summed over the rounds
    cpu_us_per_request: float | None


@dataclass(frozen=True, slots=True)
class ClientsPoint:
    """N distinct cached clients rotated by wrk, paired round by round with a 1-client run on the
    same gateway at the same time (a shared machine drifts too much to compare across minutes)."""

    clients: int
    rps: float  # median over the rounds
    reference_rps: float  # 1 client, median over the same rounds
    ratio: float  # median of the per-round ratios N-clients / 1-client
    p99_ms: float
    errors: int
    idp_token_calls: int  # during the N-client runs: 0 when every client stayed cached
    rss_bytes: int  # the gateway's, after the runs
    warm_seconds: float  # to cache the clients added for this point


@dataclass(frozen=True, slots=True)
class BodyPoint:
    size: int
    received: int  # bytes the upstream counted
    seconds: float
    rss_before: int
    rss_peak: int

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before


@dataclass
class Curves:
    connections: list[ConnectionsPoint]
    clients: list[ClientsPoint]
    bodies: list[BodyPoint]
    token_length: int  # characters of one access token (RS256 JWT from the test IdP)
    notes: list[str]


# -- helpers --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """1024, 1K, 16M, 1G (binary units)."""
    unit = SIZE_UNITS.get(text[-1:].upper())
    return int(text[:-1]) * unit if unit else int(text)


def human_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


@dataclass(frozen=True, slots=True)
class Gateway:
    """A started fastgw: where it listens and the process group to measure."""

    port: int
    pgid: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"


# -- connections ----------------------------------------------------------------------------------


def median_run(target: Target, options: WrkOptions, runs: Sequence[WrkRun]) -> ConnectionsPoint:
    cpu = [run.cpu_us_per_request for run in runs if run.cpu_us_per_request is not None]
    return ConnectionsPoint(
        target=target.name,
        connections=options.connections,
        rps=statistics.median(run.requests_per_sec for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        errors=sum(run.errors for run in runs),
        cpu_us_per_request=statistics.median(cpu) if cpu else None,
    )


def connections_curve(
    args: argparse.Namespace, gateway: Gateway, nginx: Target, authorization: str
) -> list[ConnectionsPoint]:
    """At each connection count, rounds interleave nginx and fastgw; medians per target."""
    fastgw = Target("fastgw-oidc", gateway.url, gateway.pgid, (f"Authorization: {authorization}",))
    points = []
    for connections in args.connections:
        options = WrkOptions(args.wrk, WRK_THREADS, connections, args.pin)
        runs: dict[str, list[WrkRun]] = {nginx.name: [], fastgw.name: []}
        for _ in range(args.rounds):
            for target in (nginx, fastgw):
                runs[target.name].append(measure_wrk(target, options, args.duration, args.warmup))
        for target in (nginx, fastgw):
            point = median_run(target, options, runs[target.name])
            points.append(point)
            print(
                f"  c={connections:<5} {target.name:<12} {point.rps:>9,.0f} req/s  "
                f"p99 {point.p99_ms:.2f} ms  errors {point.errors}",
                flush=True,
            )
    return points


# -- distinct clients -----------------------------------------------------------------------------


def clients_curve(
    args: argparse.Namespace, gateway: Gateway, idp: TestIdP, notes: list[str]
) -> list[ClientsPoint]:
    """For each count: cache that many clients (within the warm budget), then wrk rotates over
    them."""
    clients = extra_credentials(idp)
    budget = float(args.warm_budget)  # counts warm-up time only, not the measurements
    reference = rotation_target(args, gateway, clients[:1])
    warmed = 0
    points = []
    for wanted in args.clients:
        started = time.monotonic()
        added = warm_many(gateway.port, clients[warmed:wanted], deadline=started + budget)
        warm_seconds = time.monotonic() - started
        budget -= warm_seconds
        warmed += added
        if warmed < wanted:
            notes.append(
                f"clients curve: the warm-up budget of {args.warm_budget}s ran out at "
                f"{warmed:,} of {wanted:,} clients; larger counts were not measured"
            )
        if added or not points:
            target = rotation_target(args, gateway, clients[:warmed])
            points.append(measure_clients(args, idp, target, reference, warmed, warm_seconds))
        if warmed < wanted:
            break
    return points


def rotation_target(
    args: argparse.Namespace, gateway: Gateway, credentials: Sequence[tuple[str, str]]
) -> Target:
    """wrk rotating over these clients (a Lua request() even for one client, so that every
    point pays wrk the same per-request cost)."""
    script = args.results_dir / f"clients-{len(credentials)}.lua"
    script.write_text(
        rotation_lua([basic_authorization(cid, secret) for cid, secret in credentials])
    )
    return Target(script.stem, gateway.url, gateway.pgid, script=script)


def measure_clients(
    args: argparse.Namespace,
    idp: TestIdP,
    target: Target,
    reference: Target,
    count: int,
    warm_seconds: float,
) -> ClientsPoint:
    """Rounds of (N clients, then 1 client) on the same gateway: medians and the paired ratio."""
    options = WrkOptions(args.wrk, WRK_THREADS, CLIENTS_CURVE_CONNECTIONS, args.pin)
    runs: list[WrkRun] = []
    references: list[WrkRun] = []
    token_calls = 0
    for _ in range(args.rounds):
        tokens_before = idp_token_requests(idp)
        runs.append(measure_wrk(target, options, args.duration, args.warmup))
        token_calls += idp_token_requests(idp) - tokens_before
        if count > 1:
            references.append(measure_wrk(reference, options, args.duration, args.warmup))
    references = references or runs
    ratios = [
        r.requests_per_sec / b.requests_per_sec for r, b in zip(runs, references, strict=True)
    ]
    point = ClientsPoint(
        clients=count,
        rps=statistics.median(run.requests_per_sec for run in runs),
        reference_rps=statistics.median(run.requests_per_sec for run in references),
        ratio=statistics.median(ratios),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        errors=sum(run.errors for run in runs),
        idp_token_calls=token_calls,
        rss_bytes=group_rss_bytes(target.pgid),
        warm_seconds=warm_seconds,
    )
    print(
        f"  {count:>7,} clients {point.rps:>9,.0f} req/s (1 client: {point.reference_rps:,.0f}, "
        f"ratio {point.ratio:.2f})  p99 {point.p99_ms:.2f} ms  RSS {mib(point.rss_bytes)} MiB  "
        f"token calls {point.idp_token_calls}  (warm-up {warm_seconds:.1f}s)",
        flush=True,
    )
    return point


# -- streamed bodies ------------------------------------------------------------------------------


def body_chunks(size: int) -> Iterator[bytes]:
    """`size` bytes in STREAM_CHUNK pieces, produced as they are sent (never held whole)."""
    chunk = b"x" * STREAM_CHUNK
    left = size
    while left > 0:
        piece = chunk if left >= STREAM_CHUNK else chunk[:left]
        left -= len(piece)
        yield piece


def upload(port: int, size: int, authorization: str) -> int:
    """POST `size` bytes (Content-Length, streamed) to /upload; returns what the upstream got."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=UPLOAD_TIMEOUT)
    try:
        headers = {"Authorization": authorization, "Content-Length": str(size)}
        headers["Content-Type"] = "application/octet-stream"
        conn.request("POST", "/upload", body=body_chunks(size), headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"upload of {size} bytes: HTTP {response.status}: {body[:300]!r}")
        return int(json.loads(body)["size"])
    finally:
        conn.close()


def bodies_curve(args: argparse.Namespace, gateway: Gateway, authorization: str) -> list[BodyPoint]:
    upload(gateway.port, KIB, authorization)  # caches the token before the first measurement
    points = []
    for size in args.body_sizes:
        sampler = RssSampler(gateway.pgid, RSS_SAMPLE_SECONDS)
        before = sampler.peak
        started = time.monotonic()
        with sampler.running():
            received = upload(gateway.port, size, authorization)
        point = BodyPoint(size, received, time.monotonic() - started, before, sampler.peak)
        points.append(point)
        print(
            f"  {human_size(size):>8}: RSS {mib(point.rss_before)} -> peak {mib(point.rss_peak)} "
            f"MiB (+{mib(point.growth)}), {size / MIB / point.seconds:,.1f} MiB/s, "
            f"received {received:,} bytes",
            flush=True,
        )
    return points


# -- report ---------------------------------------------------------------------------------------


def connections_table(points: Sequence[ConnectionsPoint]) -> tuple[list[str], list[list[str]]]:
    header = ["connections", "target", "req/s", "p99 ms", "errors", "CPU µs/req"]
    rows = [
        [
            str(p.connections),
            p.target,
            f"{p.rps:,.0f}",
            f"{p.p99_ms:.2f}",
            str(p.errors),
            "-" if p.cpu_us_per_request is None else f"{p.cpu_us_per_request:.0f}",
        ]
        for p in points
    ]
    return header, rows


def clients_table(points: Sequence[ClientsPoint]) -> tuple[list[str], list[list[str]]]:
    header = ["cached clients", "req/s", "1-client req/s", "ratio", "p99 ms", "errors"]
    header += ["token calls", "gw RSS MiB", "warm-up s"]
    rows = [
        [
            f"{p.clients:,}",
            f"{p.rps:,.0f}",
            f"{p.reference_rps:,.0f}",
            f"{p.ratio:.2f}",
            f"{p.p99_ms:.2f}",
            str(p.errors),
            f"**{p.idp_token_calls}**" if p.idp_token_calls else "0",
            mib(p.rss_bytes),
            f"{p.warm_seconds:.1f}",
        ]
        for p in points
    ]
    return header, rows


def bodies_table(points: Sequence[BodyPoint]) -> tuple[list[str], list[list[str]]]:
    header = ["body", "received", "RSS before MiB", "RSS peak MiB", "growth MiB", "seconds"]
    header.append("MiB/s")
    rows = [
        [
            human_size(p.size),
            "all" if p.received == p.size else f"**{p.received:,}**",
            mib(p.rss_before),
            mib(p.rss_peak),
            mib(p.growth),
            f"{p.seconds:.3f}",
            f"{p.size / MIB / p.seconds:,.1f}",
        ]
        for p in points
    ]
    return header, rows


def per_client_lines(curves: Curves) -> list[str]:
    """RSS per cached client: the slope from the first point to the largest count that stayed
    fully cached (no token calls while measured); and where the cache stopped holding them all."""
    points = curves.clients
    held = [p for p in points if p.idp_token_calls == 0]
    lines = []
    if len(held) >= 2 and held[-1].clients > held[0].clients:
        first, last = held[0], held[-1]
        per_client = (last.rss_bytes - first.rss_bytes) / (last.clients - first.clients)
        lines.append(
            f"RSS per cached client: {per_client:,.0f} bytes (slope {first.clients:,} -> "
            f"{last.clients:,} clients); one access token is {curves.token_length} characters, "
            f"so {per_client - curves.token_length:,.0f} bytes per client beyond the token "
            "(aim: < 2 KiB)"
        )
    evicting = [p for p in points if p.idp_token_calls]
    if evicting:
        first = evicting[0]
        lines.append(
            f"at {first.clients:,} clients the gateway no longer holds every token: "
            f"{first.idp_token_calls:,} token calls while measuring (cache evictions), "
            f"req/s {first.ratio:.2f}x the 1-client figure"
        )
    return lines


def render_markdown(curves: Curves, environment: Mapping[str, object], png: str | None) -> str:
    parts = [f"# bench/curves.py — {environment['date']}", ""]
    parts += [f"- {key}: `{value}`" for key, value in environment.items() if key != "date"]
    sections = (
        ("req/s and p99 vs connections (wrk, 1 client, token cached)", connections_table,
         curves.connections, "rlrrrr"),
        (f"req/s, p99 and RSS vs distinct cached clients (wrk -c{CLIENTS_CURVE_CONNECTIONS}, "
         "rotating over the clients)", clients_table, curves.clients, "rrrrrrrrr"),
        ("gateway RSS vs streamed request body size (Content-Length, to echo /upload)",
         bodies_table, curves.bodies, "lrrrrrr"),
    )  # fmt: skip
    for title, build, points, align in sections:
        if points:
            header, rows = build(points)
            parts += ["", f"## {title}", "", markdown_table(header, rows, align)]
    parts.append("")
    parts += [f"- {line}" for line in per_client_lines(curves)]
    parts += [f"- note: {note}" for note in curves.notes]
    if png:
        parts += ["", f"![curves]({png})"]
    return "\n".join(parts) + "\n"


def plot(curves: Curves, path: Path) -> str | None:
    """Three panels in one PNG; returns None (and the caller notes why) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        (draw, points)
        for draw, points in (
            (_plot_connections, curves.connections),
            (_plot_clients, curves.clients),
            (_plot_bodies, curves.bodies),
        )
        if points  # a run of some curves only (--curves) plots those
    ]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.5), squeeze=False)
    for ax, (draw, points) in zip(axes[0], panels, strict=True):
        draw(ax, points)  # type: ignore[operator]
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def _legend(ax: Axes, twin: Axes, loc: str) -> None:
    """One legend for both y axes of a panel."""
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = twin.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc=loc, fontsize="small")


def _plot_connections(ax: Axes, points: Sequence[ConnectionsPoint]) -> None:
    ax.set_title("req/s and p99 vs connections")
    twin = ax.twinx()
    for index, target in enumerate(sorted({p.target for p in points})):
        mine = [p for p in points if p.target == target]
        xs = [p.connections for p in mine]
        color = f"C{index}"
        ax.plot(xs, [p.rps for p in mine], marker="o", color=color, label=f"{target} req/s")
        twin.plot(
            xs, [p.p99_ms for p in mine], marker="x", linestyle="--", color=color,
            label=f"{target} p99",
        )  # fmt: skip
    ax.set_xscale("log")
    twin.set_yscale("log")
    ax.set_xlabel("connections")
    ax.set_ylabel("req/s")
    ax.set_ylim(bottom=0)
    twin.set_ylabel("p99 ms (log)")
    _legend(ax, twin, "best")


def _plot_clients(ax: Axes, points: Sequence[ClientsPoint]) -> None:
    ax.set_title("req/s and RSS vs cached clients")
    xs = [p.clients for p in points]
    ax.plot(xs, [p.rps for p in points], marker="o", label="req/s, N clients")
    ax.plot(xs, [p.reference_rps for p in points], marker=".", linestyle=":", label="1 client")
    twin = ax.twinx()
    twin.plot(xs, [p.rss_bytes / MIB for p in points], marker="s", color="tab:red", label="RSS")
    ax.set_xscale("log")
    ax.set_xlabel("distinct cached clients")
    ax.set_ylabel("req/s (same rounds)")
    ax.set_ylim(bottom=0)
    twin.set_ylabel("gateway RSS MiB")
    twin.set_ylim(bottom=0)
    _legend(ax, twin, "lower left")


def _plot_bodies(ax: Axes, points: Sequence[BodyPoint]) -> None:
    ax.set_title("gateway RSS growth vs streamed body")
    ax.plot([p.size for p in points], [p.growth / MIB for p in points], marker="o", label="growth")
    ax.axhline(BODY_RSS_TARGET / MIB, color="tab:red", linestyle=":", label="target (< 20 MiB)")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, BODY_RSS_TARGET / MIB * 1.25)
    ax.set_xlabel("request body bytes")
    ax.set_ylabel("RSS growth MiB (peak - before)")
    ax.legend(loc="upper left", fontsize="small")


def write_results(results_dir: Path, curves: Curves, environment: Mapping[str, object]) -> str:
    # the measurements first: a plotting problem must not lose minutes of measuring
    document = {"environment": dict(environment), **asdict(curves)}
    (results_dir / "curves.json").write_text(json.dumps(document, indent=2) + "\n")
    png = plot(curves, results_dir / PNG_NAME)
    if png is None:
        curves.notes.append(
            "no PNG: matplotlib is not installed (pip install 'matplotlib>=3.7' or the bench "
            "extra), or no curve had points"
        )
    markdown = render_markdown(curves, environment, png)
    (results_dir / "curves.md").write_text(markdown)
    return markdown


def print_tables(curves: Curves) -> None:
    for build, points, align in (
        (connections_table, curves.connections, "rlrrrr"),
        (clients_table, curves.clients, "rrrrrrrrr"),
        (bodies_table, curves.bodies, "lrrrrrr"),
    ):
        if points:
            header, rows = build(points)
            print()
            print(text_table(header, rows, align).replace("**", ""))
    for line in per_client_lines(curves) + [f"note: {n}" for n in curves.notes]:
        print(f"- {line}")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--curves", nargs="+", choices=CURVES, default=list(CURVES))
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION, help="s per wrk run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="runs per point")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="s discarded before")
    parser.add_argument("--connections", type=int, nargs="+", default=list(DEFAULT_CONNECTIONS))
    parser.add_argument("--clients", type=int, nargs="+", default=list(DEFAULT_CLIENTS))
    parser.add_argument(
        "--body-sizes",
        type=parse_size,
        nargs="+",
        default=list(DEFAULT_BODY_SIZES),
        help="bytes, or with K/M/G",
    )
    parser.add_argument(
        "--warm-budget", type=int, default=DEFAULT_WARM_BUDGET, help="s to cache clients"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_ROOT)
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="DIR",
        help="measure nothing: redraw DIR/curves.png and curves.md from DIR/curves.json",
    )
    args = parser.parse_args(argv)
    args.clients = sorted(set(args.clients))
    if min(args.duration, args.rounds, *args.connections, *args.clients, *args.body_sizes) < 1:
        parser.error("duration, rounds, connections, clients and sizes must be >= 1")
    return args


def pin_self(enabled: bool) -> tuple[bool, str]:
    """The gateway alone on PROXY_CPU; this process and what it starts on LOAD_CPU."""
    if not enabled:
        return False, "disabled (--no-pin)"
    available, note = pinning_available(PROXY_CPU, LOAD_CPU)
    if not available:
        return False, note
    os.sched_setaffinity(0, {LOAD_CPU})
    return True, f"proxy on core {PROXY_CPU}; wrk, upstreams, IdP and uploads on core {LOAD_CPU}"


def start_echo(setup: Setup) -> int:
    """The stdlib echo upstream (tests/support/echo.py) on LOAD_CPU; returns its port."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.echo", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = setup.procs.start("echo", argv, LOAD_CPU, env=env)
    wait_for_port(port, proc, "echo", setup.procs)
    return port


def measure_all(args: argparse.Namespace, setup: Setup, stack: contextlib.ExitStack) -> Curves:
    """Each curve gets a gateway of its own, so that one curve's memory is not another's RSS."""
    wanted = max(args.clients) if "clients" in args.curves else 1
    idp = start_idp(stack, extra_clients=wanted)
    client = extra_credentials(idp)[0]
    authorization = basic_authorization(*client)
    token_length = len(idp.token(*client)["access_token"])
    curves = Curves([], [], [], token_length, [])
    plugins = [oidc_plugin(idp.issuer)]
    if {"connections", "clients"} & set(args.curves):
        start_upstream(setup)
    if "connections" in args.curves:
        print("connections:", flush=True)
        nginx = start_nginx_proxy(setup)
        gateway = Gateway(*start_fastgw(setup, "fastgw-connections", plugins))
        warm_many(gateway.port, [client])
        curves.connections = connections_curve(args, gateway, nginx, authorization)
    if "clients" in args.curves:
        print("distinct cached clients:", flush=True)
        gateway = Gateway(*start_fastgw(setup, "fastgw-clients", plugins))
        curves.clients = clients_curve(args, gateway, idp, curves.notes)
    if "bodies" in args.curves:
        print("streamed bodies:", flush=True)
        echo_port = start_echo(setup)
        gateway = Gateway(*start_fastgw(setup, "fastgw-bodies", plugins, upstream_port=echo_port))
        curves.bodies = bodies_curve(args, gateway, authorization)
    return curves


def describe_environment(args: argparse.Namespace, nginx: str, pin_note: str) -> dict:
    return {
        **describe_machine(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "nginx": tool_version([nginx, "-v"]),
        "wrk": tool_version([args.wrk, "-v"]),
        "pinning": pin_note,
        "wrk_runs": f"-t{WRK_THREADS} -d{args.duration}s after {args.warmup}s warm-up, "
        f"{args.rounds} rounds per point (medians)",
        "warm_budget": f"{args.warm_budget}s",
    }


def load_curves(path: Path) -> tuple[Curves, dict]:
    """A curves.json written by an earlier run: its figures and its environment."""
    document = json.loads(path.read_text())
    curves = Curves(
        [ConnectionsPoint(**point) for point in document["connections"]],
        [ClientsPoint(**point) for point in document["clients"]],
        [BodyPoint(**point) for point in document["bodies"]],
        document["token_length"],
        [note for note in document["notes"] if not note.startswith("matplotlib")],
    )
    return curves, document["environment"]


def replot(results_dir: Path) -> int:
    curves, environment = load_curves(results_dir / "curves.json")
    write_results(results_dir, curves, environment)
    print_tables(curves)
    print(f"\nrewrote {results_dir / 'curves.md'}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        return replot(args.replot)
    missing = missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install nginx-light wrk)")
        return EXIT_MISSING_TOOLS
    nginx = find_tool("nginx") or "nginx"
    args.wrk = find_tool("wrk") or "wrk"
    args.pin, pin_note = pin_self(not args.no_pin)
    results_dir = args.results_dir = make_results_dir(args.results_dir, "-curves")
    environment = describe_environment(args, nginx, pin_note)
    print(f"results: {results_dir}\npinning: {pin_note}", flush=True)
    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-curves-")))
        (results_dir / "logs").mkdir()
        procs = Processes(results_dir / "logs", pin=args.pin)
        stack.callback(procs.stop_all)
        setup = Setup(procs=procs, work_dir=work_dir, results_dir=results_dir, nginx=nginx)
        try:
            curves = measure_all(args, setup, stack)
        except (BenchError, RuntimeError) as error:
            print(f"failed: {error}", file=sys.stderr)
            return EXIT_FLAGGED
    environment["loadavg_after"] = load_average()
    write_results(results_dir, curves, environment)
    print_tables(curves)
    print(f"\nMarkdown: {results_dir / 'curves.md'}")
    flagged = any(p.errors for p in curves.connections) or any(p.errors for p in curves.clients)
    flagged |= any(p.received != p.size for p in curves.bodies)
    return EXIT_FLAGGED if flagged else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
