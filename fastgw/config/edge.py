"""Config of the edge: listeners (plain and TLS), Kong's certificates, upstreams and targets.

Read from the declarative document into frozen objects, with every problem at its key path as
the rest of the config reports them; TLS pairs are checked here, so `fastgw check` names a bad
certificate. Nothing here runs per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastgw.balancer import health
from fastgw.balancer.balancer import CONSISTENT_HASHING, LEAST_CONNECTIONS, ROUND_ROBIN
from fastgw.balancer.health import ActiveCheck, Thresholds
from fastgw.config.schema import Reader, join
from fastgw.http.tls import CertificatePair, TlsError, check_pair, read_pem_file

# -- listeners ------------------------------------------------------------------------------------

# Flags of a Kong proxy_listen entry fastgw knows; the others (http2, proxy_protocol, ...) are
# config errors rather than silently ignored.
LISTEN_FLAGS = ("ssl",)

ALGORITHMS = (ROUND_ROBIN, LEAST_CONNECTIONS, CONSISTENT_HASHING)
# Kong's hash_on values fastgw computes; cookie and uri_capture are errors saying so.
HASH_ON = ("none", "consumer", "ip", "header", "path", "query_arg")
HASH_ON_UNSUPPORTED = ("cookie", "uri_capture")
DEFAULT_SLOTS = 10_000  # Kong's
MIN_SLOTS, MAX_SLOTS = 10, 2**16  # Kong's bounds
DEFAULT_WEIGHT = 100  # Kong's target weight
MAX_WEIGHT = 65_535


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    ssl: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (" ssl" if self.ssl else "")


@dataclass(frozen=True, slots=True)
class Certificate:
    """A Kong certificate entity with the SNIs nested under it (as decK writes them)."""

    pair: CertificatePair
    snis: tuple[str, ...]
    path: str


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # IPv6 without brackets
    port: int
    weight: int
    path: str


@dataclass(frozen=True, slots=True)
class Upstream:
    """A Kong upstream entity; a service whose host is its name is balanced over its targets."""

    name: str
    algorithm: str
    hash_on: str
    hash_on_name: str  # the header (lower case) or query argument hash_on reads
    hash_fallback: str
    hash_fallback_name: str
    slots: int
    host_header: str | None
    threshold: float
    passive: Thresholds | None  # None: no passive check counts anything
    active: ActiveCheck | None  # None: no probes
    targets: tuple[Target, ...]
    path: str


# -- listeners ------------------------------------------------------------------------------------


def read_listeners(
    reader: Reader, key: str, split: Any, default: tuple[str, int]
) -> tuple[Listener, ...]:
    """Kong's proxy_listen: "host:port [ssl]" entries, a list or one comma-separated string.

    `split` turns "host:port" into (host, port) or the reason it cannot (config._split_listen).
    """
    reader.ignore(key)
    raw = reader.raw.get(key)
    if raw is None:
        return (Listener(*default),)
    items: list[tuple[str, object]] = []
    if isinstance(raw, str):
        items = [(reader.key_path(key), part.strip()) for part in raw.split(",")]
    elif isinstance(raw, list):
        items = [(join(reader.key_path(key), i), item) for i, item in enumerate(raw)]
    else:
        reader.error(key, 'must be "host:port [ssl]" or a list of them')
        return (Listener(*default),)
    listeners = parse_listeners(items, split, reader.problems)
    if not listeners and not any(
        path.startswith(reader.key_path(key)) for path, _ in reader.problems
    ):
        reader.error(key, "must name at least one address")
    return listeners or (Listener(*default),)


def parse_listeners(
    items: Sequence[tuple[str, object]], split: Any, problems: list[tuple[str, str]]
) -> tuple[Listener, ...]:
    listeners = []
    for path, item in items:
        if not isinstance(item, str) or not item.strip():
            problems.append((path, 'must be a string such as "0.0.0.0:8443 ssl"'))
            continue
        address, *flags = item.split()
        unknown = [flag for flag in flags if flag not in LISTEN_FLAGS]
        if unknown:
            problems.append((path, f"unsupported flag {unknown[0]!r} (known: ssl); got {item!r}"))
            continue
        result = split(address)
        if isinstance(result, str):
            problems.append((path, result))
            continue
        listeners.append(Listener(result[0], result[1], "ssl" in flags))
    return tuple(listeners)


def read_default_certificate(reader: Reader, needed: bool) -> CertificatePair | None:
    """kong.conf's ssl_cert / ssl_cert_key (PEM files; a list each for RSA + ECDSA)."""
    certs = reader.strings("ssl_cert", scalar_ok=True)
    keys = reader.strings("ssl_cert_key", scalar_ok=True)
    if not certs and not keys:
        if needed:
            reader.error("ssl_cert", "is required by a listener with the ssl flag")
        return None
    if len(certs) != len(keys) or len(certs) > 2:
        reader.error("ssl_cert_key", "needs one key per ssl_cert (at most two: RSA and ECDSA)")
        return None
    texts: list[str] = []
    for key, paths in (("ssl_cert", certs), ("ssl_cert_key", keys)):
        for index, file in enumerate(paths):
            where = key if len(paths) == 1 else f"{key}[{index}]"
            try:
                texts.append(read_pem_file(file))
            except TlsError as error:
                reader.error(where, str(error))
                return None
    count = len(certs)
    pair = CertificatePair(
        texts[0],
        texts[count],
        texts[1] if count == 2 else None,
        texts[count + 1] if count == 2 else None,
    )
    return pair if _pair_checks(reader, "ssl_cert", pair) else None


def _pair_checks(reader: Reader, key: str, pair: CertificatePair) -> bool:
    for cert, private, where in (
        (pair.cert, pair.key, key),
        (pair.cert_alt, pair.key_alt, f"{key}_alt" if key == "cert" else key),
    ):
        if cert is None or private is None:
            continue
        try:
            check_pair(cert, private)
        except TlsError as error:
            reader.error(where, str(error))
            return False
    return True


# -- certificates -----------------------------------------------------------------------------


def read_certificates(reader: Reader, read_hosts: Any) -> tuple[Certificate, ...]:
    """`certificates:` with their `snis:` ({name: ...} or plain names)."""
    result = []
    seen: dict[str, str] = {}
    base = reader.key_path("certificates")
    for index, raw in enumerate(reader.sequence("certificates")):
        entry = Reader(raw, join(base, index), reader.problems)
        cert = entry.string("cert", required=True)
        key = entry.string("key", required=True)
        cert_alt = entry.string("cert_alt")
        key_alt = entry.string("key_alt")
        if (cert_alt is None) != (key_alt is None):
            entry.error(
                "key_alt" if key_alt is None else "cert_alt", "cert_alt and key_alt go together"
            )
        entry.strings("tags")
        entry.ignore("id")
        snis = _read_snis(entry, read_hosts)
        entry.finish()
        if cert is None or key is None:
            continue
        pair = CertificatePair(cert, key, cert_alt, key_alt)
        if not _pair_checks(entry, "cert", pair):
            continue
        for sni_index, name in enumerate(snis):
            first = seen.setdefault(name, entry.path)
            if first != entry.path:
                reader.problems.append(
                    (
                        join(entry.key_path("snis"), sni_index),
                        f'"{name}" is already used by {first}',
                    )
                )
        result.append(Certificate(pair, snis, entry.path))
    return tuple(result)


def _read_snis(entry: Reader, read_hosts: Any) -> tuple[str, ...]:
    raw = entry.raw.get("snis")
    if isinstance(raw, list):
        names: list[object] = []
        for index, item in enumerate(raw):
            if isinstance(item, dict):
                sni = Reader(item, join(entry.key_path("snis"), index), entry.problems)
                names.append(sni.string("name", required=True))
                sni.strings("tags")
                sni.ignore("id", "certificate")
                sni.finish()
            else:
                names.append(item)
        # validated as route hosts are (the same patterns)
        check = Reader({"snis": [n for n in names if n is not None]}, entry.path, entry.problems)
        snis: tuple[str, ...] = read_hosts(check, "snis")
        entry.ignore("snis")
        return snis
    entry.ignore("snis")
    if raw is not None:
        entry.error("snis", "must be an array")
    return ()


# -- upstreams and targets ------------------------------------------------------------------------


def read_upstreams(reader: Reader, split_target: Any) -> tuple[Upstream, ...]:
    """`upstreams:` with their `targets:` nested (as decK writes them)."""
    result = []
    names: dict[str, str] = {}
    base = reader.key_path("upstreams")
    for index, raw in enumerate(reader.sequence("upstreams")):
        entry = Reader(raw, join(base, index), reader.problems)
        upstream = _read_upstream(entry, split_target)
        entry.finish()
        if upstream is None:
            continue
        first = names.setdefault(upstream.name, upstream.path)
        if first != upstream.path:
            entry.error("name", f"is already used by {first}")
            continue
        result.append(upstream)
    return tuple(result)


def _read_upstream(entry: Reader, split_target: Any) -> Upstream | None:
    name = entry.string("name", required=True)
    if name is not None and (
        ":" in name or not name.replace("-", "").replace(".", "").replace("_", "").isalnum()
    ):
        entry.error("name", f"must be a hostname without a port; got {name!r}")
        name = None
    algorithm = entry.string("algorithm", ROUND_ROBIN, one_of=(*ALGORITHMS, "latency"))
    if algorithm == "latency":
        entry.error("algorithm", "latency is not supported yet")
    hash_on, hash_on_name = _read_hash(entry, "hash_on", "hash_on_header", "hash_on_query_arg")
    hash_fallback, hash_fallback_name = _read_hash(
        entry, "hash_fallback", "hash_fallback_header", "hash_fallback_query_arg"
    )
    if hash_on != "none" and entry.raw.get("algorithm") is None:
        algorithm = CONSISTENT_HASHING  # Kong: setting hash_on selects consistent-hashing
    if hash_on == "none" and hash_fallback != "none":
        entry.error("hash_fallback", "must be none when hash_on is none")
    if algorithm == CONSISTENT_HASHING and hash_on == "none":
        entry.error("hash_on", "consistent-hashing needs hash_on (consumer, ip, header, ...)")
    slots = entry.integer("slots", DEFAULT_SLOTS, minimum=MIN_SLOTS, maximum=MAX_SLOTS)
    host_header = entry.string("host_header")
    if entry.has("client_certificate"):
        entry.error("client_certificate", "not supported yet")
    entry.ignore("client_certificate")
    if entry.raw.get("use_srv_name"):
        entry.error("use_srv_name", "not supported yet")
    entry.ignore("use_srv_name", "id", "hash_on_cookie", "hash_on_cookie_path")
    entry.ignore("hash_on_uri_capture", "hash_fallback_uri_capture")
    entry.strings("tags")
    threshold, passive, active = _read_healthchecks(entry.mapping("healthchecks"))
    targets = _read_targets(entry, split_target)
    if name is None:
        return None
    return Upstream(
        name=name.lower(),
        algorithm=algorithm,
        hash_on=hash_on,
        hash_on_name=hash_on_name,
        hash_fallback=hash_fallback,
        hash_fallback_name=hash_fallback_name,
        slots=slots,
        host_header=host_header,
        threshold=threshold,
        passive=passive,
        active=active,
        targets=targets,
        path=entry.path,
    )


def _read_hash(entry: Reader, key: str, header_key: str, query_key: str) -> tuple[str, str]:
    value = entry.string(key, "none", one_of=(*HASH_ON, *HASH_ON_UNSUPPORTED))
    if value in HASH_ON_UNSUPPORTED:
        entry.error(key, f"{value} is not supported yet")
        value = "none"
    header = entry.string(header_key)
    query = entry.string(query_key)
    if value == "header":
        if header is None:
            entry.error(header_key, f"is required when {key} is header")
        return value, (header or "").lower()
    if value == "query_arg":
        if query is None:
            entry.error(query_key, f"is required when {key} is query_arg")
        return value, query or ""
    return value, ""


def _read_targets(entry: Reader, split_target: Any) -> tuple[Target, ...]:
    targets: list[Target] = []
    seen: set[tuple[str, int]] = set()
    base = entry.key_path("targets")
    for index, raw in enumerate(entry.sequence("targets")):
        target = Reader(raw, join(base, index), entry.problems)
        address = target.string("target", required=True)
        weight = target.integer("weight", DEFAULT_WEIGHT, minimum=0, maximum=MAX_WEIGHT)
        target.strings("tags")
        target.ignore("id", "upstream")
        target.finish()
        if address is None:
            continue
        result = split_target(address)
        if isinstance(result, str):
            target.error("target", result)
            continue
        if result in seen:
            target.error("target", f"{address} is listed twice")
            continue
        seen.add(result)
        targets.append(Target(result[0], result[1], weight, target.path))
    return tuple(targets)


def _read_healthchecks(
    reader: Reader,
) -> tuple[float, Thresholds | None, ActiveCheck | None]:
    threshold = float(reader.number("threshold", 0, minimum=0, maximum=100))
    active_reader = reader.mapping("active")
    passive_reader = reader.mapping("passive")
    active = _read_active(active_reader)
    passive_healthy = passive_reader.mapping("healthy")
    passive_unhealthy = passive_reader.mapping("unhealthy")
    passive = _read_thresholds(
        passive_healthy,
        passive_unhealthy,
        health.PASSIVE_HEALTHY_STATUSES,
        health.PASSIVE_UNHEALTHY_STATUSES,
    )
    passive_healthy.finish()
    passive_unhealthy.finish()
    check_type = passive_reader.string(
        "type", "http", one_of=("tcp", "http", "https", "grpc", "grpcs")
    )
    if check_type in ("grpc", "grpcs"):
        passive_reader.error("type", "grpc is not supported")
    passive_reader.finish()
    reader.finish()
    return threshold, (passive if passive.counts_anything else None), active


def _read_thresholds(
    healthy: Reader,
    unhealthy: Reader,
    healthy_default: tuple[int, ...],
    unhealthy_default: tuple[int, ...],
) -> Thresholds:
    low, high = 0, 255  # Kong's one_byte_integer
    thresholds = Thresholds(
        healthy_statuses=_statuses(healthy, healthy_default),
        successes=healthy.integer("successes", 0, minimum=low, maximum=high),
        unhealthy_statuses=_statuses(unhealthy, unhealthy_default),
        http_failures=unhealthy.integer("http_failures", 0, minimum=low, maximum=high),
        tcp_failures=unhealthy.integer("tcp_failures", 0, minimum=low, maximum=high),
        timeouts=unhealthy.integer("timeouts", 0, minimum=low, maximum=high),
    )
    return thresholds


def _statuses(reader: Reader, default: tuple[int, ...]) -> frozenset[int]:
    raw = reader.raw.get("http_statuses")
    reader.ignore("http_statuses")
    if raw is None:
        return frozenset(default)
    if not isinstance(raw, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 999 for item in raw
    ):
        reader.error("http_statuses", "must be an array of integers between 100 and 999")
        return frozenset(default)
    return frozenset(raw)


def _read_active(reader: Reader) -> ActiveCheck | None:
    check_type = reader.string(
        "type", health.ACTIVE_TYPE, one_of=("tcp", "http", "https", "grpc", "grpcs")
    )
    if check_type in ("grpc", "grpcs"):
        reader.error("type", "grpc is not supported")
        check_type = "http"
    timeout = float(reader.number("timeout", health.ACTIVE_TIMEOUT, minimum=0, maximum=65535))
    concurrency = reader.integer("concurrency", health.ACTIVE_CONCURRENCY, minimum=1, maximum=2**31)
    http_path = reader.string("http_path", health.ACTIVE_HTTP_PATH)
    if not http_path.startswith("/"):
        reader.error("http_path", 'must start with "/"')
        http_path = health.ACTIVE_HTTP_PATH
    https_sni = reader.string("https_sni")
    verify = reader.boolean("https_verify_certificate", True)
    headers = _read_probe_headers(reader)
    healthy = reader.mapping("healthy")
    unhealthy = reader.mapping("unhealthy")
    healthy_interval = float(healthy.number("interval", 0, minimum=0, maximum=65535))
    unhealthy_interval = float(unhealthy.number("interval", 0, minimum=0, maximum=65535))
    thresholds = _read_thresholds(
        healthy, unhealthy, health.ACTIVE_HEALTHY_STATUSES, health.ACTIVE_UNHEALTHY_STATUSES
    )
    healthy.finish()
    unhealthy.finish()
    reader.finish()
    if not (healthy_interval or unhealthy_interval):
        return None
    return ActiveCheck(
        check_type=check_type,
        timeout=timeout or health.ACTIVE_TIMEOUT,
        concurrency=concurrency,
        http_path=http_path,
        https_sni=https_sni,
        https_verify_certificate=verify,
        headers=headers,
        healthy_interval=healthy_interval,
        unhealthy_interval=unhealthy_interval,
        thresholds=thresholds,
    )


def _read_probe_headers(reader: Reader) -> list[tuple[str, str]]:
    """Kong's typedefs.headers: a map of name to an array of values."""
    raw = reader.raw.get("headers")
    reader.ignore("headers")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        reader.error("headers", "must be a map of header names to arrays of values")
        return []
    headers = []
    for name, values in raw.items():
        if isinstance(values, str):
            values = [values]
        ok = isinstance(name, str) and name.replace("-", "").isalnum()
        if not ok or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            reader.error(
                join("headers", str(name)), "must be a header name with an array of values"
            )
            continue
        if any("\r" in v or "\n" in v for v in values):
            reader.error(join("headers", str(name)), "values must not contain line breaks")
            continue
        headers += [(name, value) for value in values]
    return headers
