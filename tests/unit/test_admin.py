"""The admin listener's answers, built from a gateway's live state."""

from __future__ import annotations

import re

import orjson

from fastgw.admin import AdminHandler
from fastgw.config import parse_config
from fastgw.gateway import Gateway

CONFIG = """
_format_version: "3.0"
services:
  - url: http://127.0.0.1:9
    routes: [{paths: ["/"]}]
"""


def test_metrics_and_status_count_requests_and_refused_connections() -> None:
    gateway = Gateway(parse_config(CONFIG), admin_listen="off")
    gateway.proxy.requests_total = 7
    gateway.proxy.admission.refused_total = 3
    admin = AdminHandler(gateway.stats)
    metrics = admin.metrics()
    assert re.search(r"^fastgw_http_requests_total 7.0$", metrics, re.M)
    assert re.search(r"^fastgw_connections_refused_total 3.0$", metrics, re.M)
    assert re.search(r"^# TYPE fastgw_connections_refused_total counter$", metrics, re.M)
    status = orjson.loads(orjson.dumps(admin.status()))
    assert status["server"]["connections_refused"] == 3
    assert status["upstreams"] == [{"address": "127.0.0.1:9", "idle": 0, "busy": 0}]


def test_status_shows_the_per_address_table_against_its_bound() -> None:
    gateway = Gateway(parse_config(CONFIG), admin_listen="off")
    admission = gateway.proxy.admission
    admission.max_connections = 100
    assert admission.admit("192.0.2.1", False) and admission.admit("192.0.2.2", True)
    status = orjson.loads(orjson.dumps(AdminHandler(gateway.stats).status()))
    assert status["server"]["client_addresses"] == {"used": 2, "capacity": 100}
    assert status["server"]["tls_handshakes"] == 1
