"""The wire's state machines, checked: each stateful class names its states and the moves each
allows in one table, built here into bitmasks; a move the table does not allow raises.

As h11 keeps every transition of its connection in one table: reading the table tells every way
a connection, an exchange or an upstream connection can go. The check is one byte looked up in a
bytes object (on the hot path: a few dozen instructions compiled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class IllegalTransition(Exception):
    """A move its state machine does not allow: a bug in the wire, never the peer's doing."""


def moves(names: Sequence[str], allowed: Mapping[int, Sequence[int]]) -> bytes:
    """The table: byte `state * len(names) + following` is 1 where `allowed` (state -> next
    states) lets `state` move to `following`, else 0."""
    count = len(names)
    table = bytearray(count * count)
    for state, nexts in allowed.items():
        for following in nexts:
            table[state * count + following] = 1
    return bytes(table)


def illegal(machine: str, names: Sequence[str], state: int, following: int) -> IllegalTransition:
    return IllegalTransition(f"{machine}: {names[state]} may not move to {names[following]}")
