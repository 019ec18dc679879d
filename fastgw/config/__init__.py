"""Configuration: Kong's declarative documents read into frozen, validated objects.

`parse_config(text)` and `load_config(path)` are the entry points; what they return is data, read
by the layers above at load time and never changed while the gateway runs.
"""

from fastgw.config.loader import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_LISTEN,
    GatewayConfig,
    Limits,
    PluginEntry,
    Route,
    Service,
    Settings,
    load_config,
    parse_config,
    parse_listen,
    parse_listeners,
)
from fastgw.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_LISTEN",
    "ConfigError",
    "GatewayConfig",
    "Limits",
    "PluginEntry",
    "Route",
    "Service",
    "Settings",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_listeners",
]
