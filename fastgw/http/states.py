"""The wire's state machines, checked: each stateful class names its states and the moves each
allows in one table, built here into bitmasks; a move the table does not allow raises.

As h11 keeps every transition of its connection in one table: reading the table tells every way
a connection, an exchange or an upstream connection can go. The check is an index and a shift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class IllegalTransition(RuntimeError):
    """A move its state machine does not allow: a bug in the wire, never the peer's doing."""


def moves(names: Sequence[str], allowed: Mapping[int, Sequence[int]]) -> tuple[int, ...]:
    """Per state, the bitmask of the states it may move to (`allowed`: state -> next states)."""
    masks = [0] * len(names)
    for state, nexts in allowed.items():
        for following in nexts:
            masks[state] |= 1 << following
    return tuple(masks)


def illegal(machine: str, names: Sequence[str], state: int, following: int) -> IllegalTransition:
    return IllegalTransition(f"{machine}: {names[state]} may not move to {names[following]}")
