"""`rate-limiting`: Kong's plugin of that name: fixed windows per second ... year, counted per
`limit_by` (consumer, credential, ip, service, header, path), in each worker (`policy: local`)
or fleet-wide in Redis (`policy: redis`, realtime or batched by `sync_rate`).

The config is `schema.py`; the step and the verdict `handler.py`; the windows `windows.py`; the
worker's counters `counters.py`; Redis `redis_policy.py`; the counts it reports `stats.py`.
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import PluginRuntime, SpecBase
from fastgw.plugins.common.redis import RedisEndpoint

from .counters import DEFAULT_CAPACITY
from .handler import PRIORITY, RateLimiting, route_id, service_id
from .redis_policy import Batched, Realtime, RedisCounts, key_prefix
from .schema import DEFAULT_REDIS_TIMEOUT, RATE_LIMITING, SYNC_RATE_REALTIME, RateLimitingConfig
from .stats import Stats

__all__ = ["PRIORITY", "SPEC", "RateLimiting", "RateLimitingConfig"]


def endpoint(config: RateLimitingConfig) -> RedisEndpoint:
    """Kong's redis record as the Redis client takes it: one timeout for the connection and
    for each reply (resty.redis's set_timeout); 0, which would wait for ever, is Kong's 2 s."""
    redis = config.redis
    timeout = (redis.timeout or DEFAULT_REDIS_TIMEOUT) / 1000
    return RedisEndpoint(
        host=redis.host or "127.0.0.1",
        port=redis.port,
        username=redis.username,
        password=redis.password,
        database=redis.database,
        ssl=redis.ssl,
        ssl_verify=redis.ssl_verify,
        server_name=redis.server_name,
        connect_timeout=timeout,
        timeout=timeout,
    )


class _Spec(SpecBase):
    name = "rate-limiting"

    def parse_config(self, reader: Reader) -> RateLimitingConfig:
        return read_schema(reader, RATE_LIMITING)

    def build(self, config: RateLimitingConfig, runtime: PluginRuntime) -> RateLimiting:
        stats = Stats()
        plugin = RateLimiting(config, runtime.client_address, stats=stats)
        if config.policy == "redis":
            scope = runtime.scope
            prefix = key_prefix(
                runtime.namespace,
                route_id(scope.route) if scope.route is not None else None,
                service_id(scope.service) if scope.service is not None else None,
            )
            counts: RedisCounts
            if config.sync_rate == SYNC_RATE_REALTIME:
                counts = Realtime(
                    endpoint(config), prefix, plugin.periods, config.fault_tolerant, stats
                )
            else:
                counts = Batched(
                    endpoint(config),
                    prefix,
                    plugin.periods,
                    config.fault_tolerant,
                    stats,
                    config.sync_rate,
                    DEFAULT_CAPACITY,
                )
            plugin.redis = counts
        return plugin


SPEC = _Spec()
