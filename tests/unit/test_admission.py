"""Which accepted connections a listener takes: the limit, the handshakes' share, the limit per
client address, and the per-address table's bound (fastgw/http/admission.py, through the real
client-side protocol and a recording transport)."""

from __future__ import annotations

from fastgw.config import Limits
from fastgw.http.admission import Admission
from fastgw.http.server import Server, ServerConnection
from fastgw.http.timers import Ticker
from tests.support.wire import FakeHandler, FakeTransport


class PeerTransport(FakeTransport):
    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return (self.address, 40000)
        return super().get_extra_info(name, default)


def listener(max_connections: int, **limits: object) -> Server:
    server = Server(FakeHandler(), Limits(**limits), Ticker())  # type: ignore[arg-type]
    server.admission.max_connections = max_connections
    return server


def connect(server: Server, address: str) -> tuple[ServerConnection, PeerTransport]:
    transport = PeerTransport(address)
    conn = server.protocol_factory()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def test_one_address_gets_three_quarters_of_the_slots_and_others_the_rest() -> None:
    server = listener(8)
    held = [connect(server, "198.51.100.1") for _ in range(7)]
    assert [t.events for _, t in held[:6]] == [[]] * 6
    assert held[6][1].events == ["abort"]  # the seventh from the same address
    others = [connect(server, f"198.51.100.{n}") for n in (2, 3)]
    assert [t.events for _, t in others] == [[], []]
    assert len(server.connections) == 8
    assert connect(server, "198.51.100.4")[1].events == ["abort"]  # the limit itself
    assert server.admission.refused_total == 2 and server.admission.refused_address_total == 1


def test_a_closed_connection_frees_its_address_slot_and_the_table_empties() -> None:
    server = listener(8, limit_conn_per_address=2)
    first, _ = connect(server, "198.51.100.1")
    connect(server, "198.51.100.1")
    assert connect(server, "198.51.100.1")[1].events == ["abort"]
    first.connection_lost(None)
    assert connect(server, "198.51.100.1")[1].events == []
    for conn in tuple(server.connections):
        conn.connection_lost(None)
    assert server.admission.addresses == {} and server.admission.open == 0


def test_a_refused_connection_is_not_released_twice() -> None:
    server = listener(1)
    connect(server, "198.51.100.1")
    refused, _ = connect(server, "198.51.100.2")
    refused.connection_lost(None)  # the transport's answer to the abort
    assert server.admission.open == 1 and server.admission.addresses == {"198.51.100.1": 1}


def test_handshakes_hold_at_most_half_the_slots() -> None:
    admission = Admission()
    admission.max_connections = 10
    assert all(admission.admit(f"192.0.2.{n}", True) for n in range(5))
    assert not admission.admit("192.0.2.99", True)  # a sixth handshake
    assert admission.admit("192.0.2.99", False)  # a plain connection still gets in
    admission.handshake_done()
    assert admission.admit("192.0.2.98", True)


def test_the_per_address_table_never_holds_more_entries_than_the_limit() -> None:
    admission = Admission()
    admission.max_connections = 100
    admitted = [n for n in range(1000) if admission.admit(f"10.0.{n // 256}.{n % 256}", False)]
    assert len(admitted) == 100 and len(admission.addresses) == 100
