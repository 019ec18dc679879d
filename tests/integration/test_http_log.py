"""Kong's http-log on a real `fastgw run` against a real HTTP log receiver: Kong's record and
request (method, content type, headers, the endpoint's user info as Basic credentials, batches as
arrays), credentials never in the gateway's log or metrics; a receiver that holds every request,
then is down, then is back: every proxied request answered meanwhile, the queue's bound holding
(oldest dropped, counted), the newest records delivered once it is back."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Client, CliGateway, EchoUpstream, free_port
from tests.support.log_receiver import HttpReceiver, wait_until

pytestmark = pytest.mark.integration

SECRET = "s3cret-log-pw"
QUEUE_BOUND = 5  # max_entries in the tests' queue


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


def config(echo_port: int, http_log: dict, *, prometheus: bool = False) -> str:
    plugins = [{"name": "http-log", "config": http_log}]
    if prometheus:
        plugins.append({"name": "prometheus", "config": {"status_code_metrics": True}})
    return json.dumps(
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "echo",
                    "url": f"http://127.0.0.1:{echo_port}",
                    "routes": [{"name": "logged", "paths": ["/logged"], "strip_path": False}],
                }
            ],
            "plugins": plugins,
        }
    )


def get(port: int, target: str) -> int:
    client = Client(port)
    try:
        return client.request("GET", target).status
    finally:
        client.close()


def scrape(admin: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as response:
        return str(response.read().decode())


def sample(admin: int, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(scrape(admin)):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    raise AssertionError(f"no {name} {labels}")


def queue_count(admin: int, result: str) -> float:
    return sample(admin, "fastgw_log_queue_entries_total", plugin="http-log", result=result)


def test_records_go_as_kong_sends_them_and_credentials_stay_out_of_every_report(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, receiver: HttpReceiver
) -> None:
    admin = free_port()
    http_log = {
        "http_endpoint": f"http://logger:{SECRET}@127.0.0.1:{receiver.port}/in/{SECRET}?tag=x",
        "method": "PUT",
        "content_type": "application/json; charset=utf-8",
        "headers": {"X-Source": "fastgw"},
        "queue": {"max_batch_size": 3, "max_coalescing_delay": 0.2},
    }
    gateway = run_cli(
        config(echo.port, http_log, prometheus=True), "--admin-listen", f"127.0.0.1:{admin}"
    )
    port = gateway.wait_listening()
    for index in range(3):
        assert get(port, f"/logged/{index}") == 200
    wait_until(lambda: len(receiver.records()) == 3, what="three records")
    (request,) = receiver.requests  # one batch of three, as a JSON array
    assert request.method == "PUT" and request.path == f"/in/{SECRET}?tag=x"
    assert request.body.startswith(b"[") and request.body.endswith(b"]")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["x-source"] == "fastgw"
    credentials = base64.b64encode(f"logger:{SECRET}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {credentials}"
    records = receiver.records()
    assert [record["request"]["uri"] for record in records] == [
        "/logged/0",
        "/logged/1",
        "/logged/2",
    ]
    assert records[0]["response"]["status"] == 200 and records[0]["route"]["name"] == "logged"
    metrics, status = scrape(admin), scrape(admin, "/status")
    assert SECRET not in metrics and SECRET not in status and SECRET not in gateway.log.text()
    assert f'endpoint="http://127.0.0.1:{receiver.port}"' in metrics
    assert queue_count(admin, "sent") == 3


def test_a_lone_record_is_one_json_object(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, receiver: HttpReceiver
) -> None:
    gateway = run_cli(config(echo.port, {"http_endpoint": f"http://127.0.0.1:{receiver.port}"}))
    port = gateway.wait_listening()
    assert get(port, "/logged/one") == 200
    wait_until(lambda: len(receiver.requests) == 1, what="the record")
    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/"
    assert json.loads(request.body)["request"]["uri"] == "/logged/one"
    assert request.headers["content-type"] == "application/json"


def test_a_receiver_that_hangs_then_is_down_then_is_back_costs_records_never_requests(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, receiver: HttpReceiver
) -> None:
    admin = free_port()
    http_log = {
        "http_endpoint": f"http://127.0.0.1:{receiver.port}/logs",
        "queue": {
            "max_entries": QUEUE_BOUND,
            "initial_retry_delay": 0.01,
            "max_retry_delay": 0.1,
            "max_retry_time": 60,
        },
    }
    gateway = run_cli(
        config(echo.port, http_log, prometheus=True), "--admin-listen", f"127.0.0.1:{admin}"
    )
    port = gateway.wait_listening()

    # hanging: the first record's request is held; ten requests are answered meanwhile
    receiver.hold()
    assert get(port, "/logged/0") == 200
    wait_until(lambda: receiver.holding == 1, what="the receiver to hold the first record")
    for index in range(1, 10):
        assert get(port, f"/logged/{index}") == 200
    assert receiver.holding == 1 and receiver.requests == []  # still held: nothing delivered
    wait_until(lambda: queue_count(admin, "queue_full") == 9 - QUEUE_BOUND)
    assert sample(admin, "fastgw_log_queue_waiting_entries", plugin="http-log") == QUEUE_BOUND
    shared = "http-log queue (plugins[0])"
    used = sample(admin, "kong_memory_lua_shared_dict_bytes", shared_dict=shared)
    total = sample(admin, "kong_memory_lua_shared_dict_total_bytes", shared_dict=shared)
    assert used == total > 0  # full
    receiver.release()
    wait_until(lambda: len(receiver.records()) == 1 + QUEUE_BOUND, what="the held and the kept")
    uris = [record["request"]["uri"] for record in receiver.records()]
    assert uris == ["/logged/0", *(f"/logged/{index}" for index in range(5, 10))]

    # down: refused connections; the first record retries, the queue keeps the newest
    receiver.stop()
    for index in range(10, 20):
        assert get(port, f"/logged/{index}") == 200
    wait_until(lambda: queue_count(admin, "queue_full") == 2 * (9 - QUEUE_BOUND))
    assert queue_count(admin, "retries_exhausted") == 0

    # back on the same port: the retried record, then the kept ones
    receiver.start()
    wait_until(lambda: len(receiver.records()) == 2 * (1 + QUEUE_BOUND), what="delivery")
    uris = [record["request"]["uri"] for record in receiver.records()][1 + QUEUE_BOUND :]
    assert uris == ["/logged/10", *(f"/logged/{index}" for index in range(15, 20))]
    wait_until(lambda: queue_count(admin, "sent") == 2 * (1 + QUEUE_BOUND))  # the answers read
    gateway.log.wait_for(r"queue http://127\.0\.0\.1:\d+: handler could not process entries")
