"""Configuration: Kong's declarative documents read into frozen, validated objects.

`parse_config(text)` and `load_config(path)` are the entry points; what they return is data
(fastgw/config/model.py), read by the layers above at load time and never changed while the
gateway runs.
"""

from fastgw.config.addresses import parse_listen, parse_listeners
from fastgw.config.consumers import Consumer, Consumers
from fastgw.config.loader import load_config, parse_config
from fastgw.config.model import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_LISTEN,
    ActiveHealthcheck,
    CaCertificate,
    Certificate,
    CertificatePair,
    CheckThresholds,
    Entities,
    GatewayConfig,
    Limits,
    Listener,
    PluginEntry,
    Route,
    Service,
    Settings,
    Target,
    Upstream,
)
from fastgw.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_LISTEN",
    "ActiveHealthcheck",
    "CaCertificate",
    "Certificate",
    "CertificatePair",
    "CheckThresholds",
    "ConfigError",
    "Consumer",
    "Consumers",
    "Entities",
    "GatewayConfig",
    "Limits",
    "Listener",
    "PluginEntry",
    "Route",
    "Service",
    "Settings",
    "Target",
    "Upstream",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_listeners",
]
