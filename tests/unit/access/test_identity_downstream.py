"""What the later phases make of who the request is: file-log's `consumer` and
`authenticated_entity`, prometheus' per_consumer series (by username), consistent hashing's
`hash_on: consumer` key, and the identity module's headers."""

from __future__ import annotations

from types import SimpleNamespace

from fastgw.config.consumers import Consumer
from fastgw.observability.counters import RouteStats, StatsOptions
from fastgw.observability.snapshot import GatewayStats
from fastgw.plugins.api import Authenticated, Credential
from fastgw.plugins.identity import (
    anonymous_identity,
    consumer_headers,
    header_value,
    identity,
)
from fastgw.plugins.kong_log.record import identity as record_identity
from fastgw.plugins.prometheus.exposition import kong_families

ALICE = Consumer("c-1", "alice", "a-1", ("gold",))


def test_file_log_records_the_consumer_and_the_credential() -> None:
    who = identity(ALICE, Credential("keyauth_credentials", "k-9", "k-9", "c-1"))
    consumer, entity = record_identity(SimpleNamespace(principal=who))  # type: ignore[arg-type]
    assert consumer == {"id": "c-1", "username": "alice", "custom_id": "a-1", "tags": ["gold"]}
    assert entity == {"id": "k-9", "consumer_id": "c-1"}
    anonymous = SimpleNamespace(principal=anonymous_identity(ALICE))
    consumer, entity = record_identity(anonymous)  # type: ignore[arg-type]
    assert entity is None and consumer is not None and consumer["id"] == "c-1"


def test_prometheus_per_consumer_counts_by_username() -> None:
    stats = RouteStats(("svc", "r"), StatsOptions(True, False, True, per_consumer=True))
    stats.record(200, True, 1.0, 1.0, 1.0, 10, 100, "alice")
    stats.record(200, True, 1.0, 1.0, 1.0, 10, 100, "alice")
    stats.record(401, False, 1.0, -1.0, 1.0, 5, 50)
    view = GatewayStats(0, 0, 3, (), (), (), route_stats=(stats,))
    families = {family.name: family for family in kong_families(view)}
    requests = dict(families["kong_http_requests_total"].samples)
    assert requests[("svc", "r", "200", "service", "default", "alice")] == 2
    assert requests[("svc", "r", "401", "kong", "default", "")] == 1
    bandwidth = dict(families["kong_bandwidth_bytes"].samples)
    assert bandwidth[("svc", "r", "egress", "default", "alice")] == 200
    assert bandwidth[("svc", "r", "egress", "default", "")] == 50


def test_hash_on_consumer_keys_by_the_consumer_else_the_credential() -> None:
    assert identity(ALICE, Credential("jwt_secrets", "s-1")).hash_key == b"c-1"
    assert Authenticated(None, Credential("openid-connect", "sub-7")).hash_key == b"sub-7"


def test_kongs_five_headers_each_set_or_removed() -> None:
    assert consumer_headers(ALICE, "cred", anonymous=False) == (
        (b"x-consumer-id", b"c-1"),
        (b"x-consumer-custom-id", b"a-1"),
        (b"x-consumer-username", b"alice"),
        (b"x-credential-identifier", b"cred"),
        (b"x-anonymous-consumer", None),
    )
    anonymous = consumer_headers(Consumer("g", "guest", None), None, anonymous=True)
    assert anonymous[1:] == (
        (b"x-consumer-custom-id", None),
        (b"x-consumer-username", b"guest"),
        (b"x-credential-identifier", None),
        (b"x-anonymous-consumer", b"true"),
    )
    assert header_value("line\r\nbreak") is None  # never splits the header block
