"""Kong's tcp-log on a real `fastgw run` against a real TCP line receiver: one JSON record per
line on a kept-alive connection; over TLS (the test PKI, not verified, as Kong's) with the server
name of `tls_sni` or none; a receiver that goes down and comes back costs no request, and the
records kept meanwhile arrive once it is back."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable

import pytest

from tests.integration.conftest import Client, CliGateway, EchoUpstream
from tests.support.log_receiver import TcpReceiver, wait_until
from tests.support.tls import session_pki

pytestmark = pytest.mark.integration


def config(echo_port: int, tcp_log: dict) -> str:
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
            "plugins": [{"name": "tcp-log", "config": tcp_log}],
        }
    )


def get(port: int, target: str) -> int:
    client = Client(port)
    try:
        return client.request("GET", target).status
    finally:
        client.close()


def uris(receiver: TcpReceiver) -> list[str]:
    return [record["request"]["uri"] for record in receiver.records()]


def tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki = session_pki()
    context.load_cert_chain(str(pki.default.cert), str(pki.default.key))
    return context


def test_each_record_is_one_json_line_on_one_kept_alive_connection(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream
) -> None:
    receiver = TcpReceiver().start()
    try:
        gateway = run_cli(config(echo.port, {"host": "127.0.0.1", "port": receiver.port}))
        port = gateway.wait_listening()
        for index in range(5):
            assert get(port, f"/logged/{index}") == 200
        wait_until(lambda: len(receiver.lines) == 5, what="five lines")
        assert uris(receiver) == [f"/logged/{index}" for index in range(5)]
        assert all(line.endswith(b"}\n") for line in receiver.lines)
        assert receiver.records()[0]["service"]["name"] == "echo"
        assert receiver.connections == 1
    finally:
        receiver.stop()


@pytest.mark.parametrize("sni", ["logs.example.test", None])
def test_tls_sends_the_server_name_of_tls_sni_or_none(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, sni: str | None
) -> None:
    receiver = TcpReceiver(tls=tls_context()).start()
    try:
        tcp_log: dict = {"host": "127.0.0.1", "port": receiver.port, "tls": True}
        if sni is not None:
            tcp_log["tls_sni"] = sni
        gateway = run_cli(config(echo.port, tcp_log))
        port = gateway.wait_listening()
        assert get(port, "/logged/tls") == 200
        wait_until(lambda: len(receiver.lines) == 1, what="the line over TLS")
        assert uris(receiver) == ["/logged/tls"]
        assert receiver.server_names == [sni]
    finally:
        receiver.stop()


def test_a_receiver_down_then_back_costs_no_request_and_gets_the_kept_records(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream
) -> None:
    receiver = TcpReceiver().start()
    try:
        gateway = run_cli(config(echo.port, {"host": "127.0.0.1", "port": receiver.port}))
        port = gateway.wait_listening()
        assert get(port, "/logged/before") == 200
        wait_until(lambda: uris(receiver) == ["/logged/before"], what="the first line")
        receiver.stop()  # its connections closed too
        for index in range(5):
            assert get(port, f"/logged/down-{index}") == 200
        receiver.start()  # the same port
        wait_until(lambda: "/logged/down-4" in uris(receiver), what="the kept records")
        # TCP may have taken the first write after the drop into a closed socket; the records
        # after it were kept and retried
        delivered = uris(receiver)[1:]
        assert delivered[-4:] == [f"/logged/down-{index}" for index in range(1, 5)]
        gateway.log.wait_for(r"tcp-log plugin plugins\[0\]\] queue tcp://127\.0\.0\.1:\d+")
    finally:
        receiver.stop()
