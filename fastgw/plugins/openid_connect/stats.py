"""openid-connect's counters: token cache outcomes, IdP calls, single-flight joins, JWKS fetches.

Compiled (the L1 hit counts on the hot path: one native integer add); everything else counts
off it. `families` turns one instance's counters into metric families
(fastgw.observability.metrics).
"""

from __future__ import annotations

import time
from typing import Final

from fastgw.observability.counters import Count, Histogram
from fastgw.observability.metrics import Family, counter, gauge, histogram

# IdP round trips, in seconds: a few ms on a LAN, up to the `timeout` (10 s by default).
IDP_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ENDPOINTS: Final = ("token", "discovery", "jwks")
# what an IdP call came to: an HTTP answer (2xx, 4xx, 5xx), no answer in time, or none at all
OUTCOMES: Final = ("success", "rejected", "failed", "timeout", "error")


class OidcStats:
    """One plugin instance's counters (per worker)."""

    def __init__(self) -> None:
        self.hits = 0  # a cached token served
        self.misses = 0  # a request that had to wait for a token (IdP or shared cache)
        self.negative_hits = 0  # a remembered rejection answered (cache_ttl_neg)
        self.stale_served = 0  # the IdP failed and a token past its cache TTL kept serving
        self.refresh_ahead = 0  # background refreshes started before expiry
        self.jwks_refreshes = 0
        self.jwks_failures = 0
        self.last_jwks_refresh = 0.0  # epoch seconds of the last good JWKS fetch
        self.idp_reachable = -1  # last IdP call: 1 answered, 0 no answer, -1 none yet
        self.idp_calls: dict[str, Count] = {}  # "endpoint outcome" -> count
        self.idp_latency: dict[str, Histogram] = {
            endpoint: Histogram(IDP_LATENCY_BUCKETS) for endpoint in ENDPOINTS
        }

    def idp_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        key = f"{endpoint} {outcome}"
        count = self.idp_calls.get(key)
        if count is None:
            count = self.idp_calls[key] = Count()
        count.value += 1
        latency = self.idp_latency.get(endpoint)
        if latency is not None:
            latency.observe(seconds)
        self.idp_reachable = 0 if outcome in ("timeout", "error") else 1

    def jwks_fetched(self, ok: bool) -> None:
        if ok:
            self.jwks_refreshes += 1
            self.last_jwks_refresh = time.time()
        else:
            self.jwks_failures += 1


def families(stats: OidcStats, instance: str, evictions: int, joins: int) -> list[Family]:
    label = (instance,)
    lookups = counter(
        "fastgw_oidc_token_cache_lookups_total",
        "Token cache lookups by result: hit (a cached token served), miss (waited for a token), "
        "negative (a remembered rejection answered).",
        ("instance", "result"),
    )
    lookups.add((instance, "hit"), stats.hits)
    lookups.add((instance, "miss"), stats.misses)
    lookups.add((instance, "negative"), stats.negative_hits)
    idp = counter(
        "fastgw_oidc_idp_requests_total",
        "Requests to the identity provider by endpoint and outcome (success 2xx, rejected 4xx, "
        "failed 5xx or malformed, timeout, error: unreachable).",
        ("instance", "endpoint", "outcome"),
    )
    for endpoint in ENDPOINTS:
        for outcome in OUTCOMES:
            count = stats.idp_calls.get(f"{endpoint} {outcome}")
            idp.add((instance, endpoint, outcome), count.value if count is not None else 0)
    latency = histogram(
        "fastgw_oidc_idp_request_duration_seconds",
        "Identity provider round trips by endpoint.",
        ("instance", "endpoint"),
    )
    for endpoint, observed in stats.idp_latency.items():
        latency.add((instance, endpoint), observed.sample())
    return [
        lookups,
        counter(
            "fastgw_oidc_token_cache_stale_served_total",
            "Times the identity provider failed and a token past its cache TTL kept serving "
            "(cache_ttl_resurrect).",
            ("instance",),
        ).add(label, stats.stale_served),
        counter(
            "fastgw_oidc_token_cache_refresh_ahead_total",
            "Background token refreshes started before expiry.",
            ("instance",),
        ).add(label, stats.refresh_ahead),
        counter(
            "fastgw_oidc_token_cache_evictions_total",
            "Token cache entries evicted to stay within the cache's bound.",
            ("instance",),
        ).add(label, evictions),
        counter(
            "fastgw_oidc_single_flight_joins_total",
            "Requests that waited for a token fetch already under way instead of starting one.",
            ("instance",),
        ).add(label, joins),
        idp,
        latency,
        counter(
            "fastgw_oidc_jwks_refreshes_total",
            "JWKS fetches by outcome.",
            ("instance", "outcome"),
        )
        .add((instance, "success"), stats.jwks_refreshes)
        .add((instance, "failure"), stats.jwks_failures),
        gauge(
            "fastgw_oidc_jwks_last_refresh_timestamp_seconds",
            "When the signing keys were last fetched (0: never).",
            ("instance",),
            merge="max",
        ).add(label, stats.last_jwks_refresh),
    ]
