"""Kong's `upstreams:` entity with its `targets:` nested (as decK writes them): the balancing
algorithm, hashing, health checks, and the addresses requests are balanced over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.addresses import split_target
from fastgw.config.entities.healthchecks import HEALTHCHECKS
from fastgw.config.model import Target, Upstream
from fastgw.config.schema import (
    FALSY,
    TAGS,
    Check,
    Checked,
    Ignored,
    Integer,
    Reader,
    Record,
    Records,
    Schema,
    Text,
    Unsupported,
)
from fastgw.config.vocabulary import (
    ALGORITHMS,
    CONSISTENT_HASHING,
    DEFAULT_SLOTS,
    DEFAULT_WEIGHT,
    HASH_ON,
    HASH_ON_UNSUPPORTED,
    LATENCY,
    MAX_SLOTS,
    MAX_WEIGHT,
    MIN_SLOTS,
    ROUND_ROBIN,
)


@dataclass(frozen=True, slots=True)
class WrittenTarget:
    target: Target
    address: str  # as the config writes it, for the problem of a repeated one


def _target(reader: Reader, values: dict[str, Any]) -> WrittenTarget | None:
    address = values["target"]
    if address is None:
        return None
    result = split_target(address)
    if isinstance(result, str):
        reader.error("target", result)
        return None
    return WrittenTarget(Target(result[0], result[1], values["weight"], reader.path), address)


TARGET: Schema[WrittenTarget | None] = Schema(
    {
        "target": Text(required=True),
        "weight": Integer(DEFAULT_WEIGHT, minimum=0, maximum=MAX_WEIGHT),
        "tags": TAGS,
        "id": Ignored(),
        "upstream": Ignored(),  # the upstream it is nested in
    },
    build=_target,
    annotations=True,
)


def _hostname(reader: Reader, values: dict[str, Any]) -> None:
    name = values["name"]
    if name is not None and (
        ":" in name or not name.replace("-", "").replace(".", "").replace("_", "").isalnum()
    ):
        reader.error("name", f"must be a hostname without a port; got {name!r}")
        values["name"] = None


def _no_latency(reader: Reader, values: dict[str, Any]) -> None:
    if values["algorithm"] == LATENCY:
        reader.error("algorithm", "latency is not supported yet")


def _hash(key: str, header_key: str, query_key: str) -> Check:
    """The check of one hash source (hash_on or hash_fallback) and the header or query
    argument it names; it leaves the source "none" when it cannot be used."""

    def check(reader: Reader, values: dict[str, Any]) -> None:
        value = values[key]
        if value in HASH_ON_UNSUPPORTED:
            reader.error(key, f"{value} is not supported yet")
            values[key] = "none"
        elif value == "header" and values[header_key] is None:
            reader.error(header_key, f"is required when {key} is header")
        elif value == "query_arg" and values[query_key] is None:
            reader.error(query_key, f"is required when {key} is query_arg")

    return check


def _hash_sources(reader: Reader, values: dict[str, Any]) -> None:
    hash_on, hash_fallback = values["hash_on"], values["hash_fallback"]
    if hash_on == "none" and hash_fallback != "none":
        reader.error("hash_fallback", "must be none when hash_on is none")
    algorithm = values["algorithm"]
    if hash_on != "none" and reader.raw.get("algorithm") is None:
        algorithm = values["algorithm"] = CONSISTENT_HASHING  # Kong: hash_on selects it
    if algorithm == CONSISTENT_HASHING and hash_on == "none":
        reader.error("hash_on", "consistent-hashing needs hash_on (consumer, ip, header, ...)")


def _hash_name(values: dict[str, Any], key: str, header_key: str, query_key: str) -> str:
    """The header (lower case) or query argument a hash source reads, "" for the others."""
    if values[key] == "header":
        return (values[header_key] or "").lower()
    if values[key] == "query_arg":
        return values[query_key] or ""
    return ""


def _targets(reader: Reader, targets: list[WrittenTarget]) -> tuple[Target, ...]:
    """The targets, each address once (Kong's unique upstream + target)."""
    seen: set[tuple[str, int]] = set()
    result: list[Target] = []
    for written in targets:
        target = written.target
        if (target.host, target.port) in seen:
            reader.problems.append((f"{target.path}.target", f"{written.address} is listed twice"))
            continue
        seen.add((target.host, target.port))
        result.append(target)
    return tuple(result)


def _upstream(reader: Reader, values: dict[str, Any]) -> Upstream | None:
    targets = _targets(reader, values["targets"])
    if values["name"] is None:
        return None
    healthchecks = values["healthchecks"]
    return Upstream(
        name=values["name"].lower(),
        algorithm=values["algorithm"],
        hash_on=values["hash_on"],
        hash_on_name=_hash_name(values, "hash_on", "hash_on_header", "hash_on_query_arg"),
        hash_fallback=values["hash_fallback"],
        hash_fallback_name=_hash_name(
            values, "hash_fallback", "hash_fallback_header", "hash_fallback_query_arg"
        ),
        slots=values["slots"],
        host_header=values["host_header"],
        threshold=healthchecks.threshold,
        passive=healthchecks.passive,
        active=healthchecks.active,
        targets=targets,
        path=reader.path,
    )


_HASH_SOURCES = (*HASH_ON, *HASH_ON_UNSUPPORTED)

UPSTREAM: Schema[Upstream | None] = Schema(
    {
        "name": Checked(Text(required=True), _hostname),
        "algorithm": Checked(Text(ROUND_ROBIN, one_of=(*ALGORITHMS, LATENCY)), _no_latency),
        "hash_on": Text("none", one_of=_HASH_SOURCES),
        "hash_on_header": Text(),
        "hash_on_query_arg": Checked(
            Text(), _hash("hash_on", "hash_on_header", "hash_on_query_arg")
        ),
        "hash_fallback": Text("none", one_of=_HASH_SOURCES),
        "hash_fallback_header": Text(),
        "hash_fallback_query_arg": Checked(
            Text(),
            _hash("hash_fallback", "hash_fallback_header", "hash_fallback_query_arg"),
            _hash_sources,
        ),
        "slots": Integer(DEFAULT_SLOTS, minimum=MIN_SLOTS, maximum=MAX_SLOTS),
        "host_header": Text(),
        "client_certificate": Unsupported(),
        "use_srv_name": Unsupported(accepts=FALSY),
        "id": Ignored(),
        "hash_on_cookie": Ignored(),
        "hash_on_cookie_path": Ignored(),
        "hash_on_uri_capture": Ignored(),
        "hash_fallback_uri_capture": Ignored(),
        "tags": TAGS,
        "healthchecks": Record(HEALTHCHECKS),
        "targets": Records(TARGET),
    },
    build=_upstream,
    annotations=True,
)
