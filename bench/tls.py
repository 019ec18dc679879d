"""HTTPS in one run: fastgw's TLS listener against nginx's (ssl_session_cache), keep-alive and
new-connection (handshake-bound) figures, and fastgw's token-cached path over TLS.

Both proxies run one worker on PROXY_CPU in front of the same nginx upstream, with the same
self-signed certificate (tests/support/tls.py); wrk runs on LOAD_CPU. Medians of interleaved
rounds; the ratios are what to read (absolute figures drift on shared boxes: bench/README.md).

    .venv/bin/python bench/tls.py [--rounds 3 --duration 5 --connections 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    LOOPBACK,
    PROXY_CPU,
    RESULTS_ROOT,
    Processes,
    Setup,
    Target,
    WrkOptions,
    basic_authorization,
    exit_on_sigterm,
    find_tool,
    free_port,
    import_test_support,
    make_results_dir,
    measure_wrk,
    nginx_main_conf,
    oidc_plugin,
    pinning_available,
    start_idp,
    start_nginx,
    start_upstream,
)


def nginx_tls_conf(prefix: Path, port: int, upstream_port: int, cert: Path, key: Path) -> str:
    server = f"""    upstream backend {{
        server {LOOPBACK}:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen {LOOPBACK}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx_main_conf(prefix, server)


def fastgw_tls_conf(port: int, upstream_port: int, cert: Path, key: Path, plugins=None) -> str:
    service: dict = {
        "url": f"http://{LOOPBACK}:{upstream_port}",
        "routes": [{"paths": ["/"]}],
        "plugins": plugins or [],
    }
    config = {
        "_format_version": "3.0",
        "_fastgw": {
            "listen": f"{LOOPBACK}:{port} ssl",
            "ssl_cert": str(cert),
            "ssl_cert_key": str(key),
        },
        "services": [service],
    }
    return json.dumps(config, indent=2) + "\n"


def warm_over_tls(url: str, authorization: str, ca: str) -> None:
    """One request, so that the token is cached before wrk starts (the miss is not measured)."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=ca)
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        if response.status != 200:
            raise SystemExit(f"the token-cached path answered {response.status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--no-oidc", action="store_true", help="skip the token-cached path")
    args = parser.parse_args()
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx is None or wrk is None:
        print("needs nginx and wrk: apt-get install -y nginx-light wrk", file=sys.stderr)
        return 2
    import_test_support()
    from tests.support.tls import make_pki

    pin, _ = pinning_available(PROXY_CPU, 1)
    results_dir = make_results_dir(RESULTS_ROOT, "tls")
    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-tls-")))
        pki = make_pki(work_dir)
        cert, key = pki.default.cert, pki.default.key
        (results_dir / "logs").mkdir(parents=True, exist_ok=True)
        procs = Processes(results_dir / "logs", pin=pin)
        stack.callback(procs.stop_all)
        setup = Setup(procs=procs, work_dir=work_dir, results_dir=results_dir, nginx=nginx)
        start_upstream(setup)
        port = free_port()
        pgid = start_nginx(
            setup,
            "nginx-tls",
            lambda p: nginx_tls_conf(p, port, setup.upstream_port, cert, key),
            port,
            PROXY_CPU,
        )
        targets = [Target("nginx https", f"https://{LOOPBACK}:{port}/", pgid)]

        def fastgw(name: str, plugins=None, headers: tuple[str, ...] = ()) -> Target:
            port = free_port()
            path = setup.write_config(
                f"{name}.kong.yml", fastgw_tls_conf(port, setup.upstream_port, cert, key, plugins)
            )
            argv = [sys.executable, "-m", "fastgw", "run", "-c", str(path), "--workers", "1",
                    "--admin-listen", "off", "--log-level", "warning"]  # fmt: skip
            pgid = setup.start_server(name, argv, port, PROXY_CPU)
            return Target(name, f"https://{LOOPBACK}:{port}/", pgid, headers=headers)

        targets.append(fastgw("fastgw https"))
        if not args.no_oidc:
            idp = start_idp(stack, 0)
            from tests.support.idp import BASIC_CLIENT

            authorization = basic_authorization(*BASIC_CLIENT)
            target = fastgw(
                "fastgw https oidc",
                [oidc_plugin(idp.issuer)],
                (f"Authorization: {authorization}",),
            )
            warm_over_tls(target.url, authorization, str(pki.ca))
            targets.append(target)
        keep = WrkOptions(wrk=wrk, threads=1, connections=args.connections, pin=pin)
        results: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for target in targets:
                for mode in ("keep-alive", "new connection"):
                    measured = target
                    if mode == "new connection":
                        measured = Target(
                            target.name, target.url, target.pgid,
                            headers=(*target.headers, "Connection: close"),
                        )  # fmt: skip
                    run = measure_wrk(measured, keep, args.duration, args.warmup)
                    results.setdefault((target.name, mode), []).append(run.requests_per_sec)
                    cpu.setdefault((target.name, mode), []).append(run.cpu_us_per_request or 0)
    lines = [
        "| target | mode | req/s (median) | CPU µs/req | vs nginx https |",
        "|---|---|---:|---:|---:|",
    ]
    for (name, mode), values in results.items():
        median = statistics.median(values)
        base = statistics.median(results[("nginx https", mode)])
        lines.append(
            f"| {name} | {mode} | {median:,.0f} | {statistics.median(cpu[(name, mode)]):.1f} |"
            f" {median / base:.2f} |"
        )
    report = "\n".join(lines)
    (results_dir / "tls.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
