"""The states of a client connection and the moves between them: one table, shared by the
connection (fastgw/http/server.py) and its wait for an upgrade's answer (fastgw/http/upgrade.py).
"""

from __future__ import annotations

from typing import Final

from fastgw.http.states import moves

# What the connection does with the bytes it reads, and how it ends.
READING: Final = 0  # requests, through the reader
UPGRADE_BODY: Final = 1  # the rest of an upgrade request's body (fastgw/http/upgrade.py)
HOLDING: Final = 2  # after a complete upgrade request: held until its exchange decides
LINGERING: Final = 3  # the last answer is out and sending shut down: reads are dropped
SWITCHED: Final = 4  # after a 101 the transport is a tunnel's: only its timeouts are swept here
CLOSED: Final = 5
STATE_NAMES: Final = ("READING", "UPGRADE_BODY", "HOLDING", "LINGERING", "SWITCHED", "CLOSED")
STATE_COUNT: Final = 6  # len(STATE_NAMES), a literal: the compiled check folds it
# An upgrade goes back to READING when declined (or its body breaks a limit); any state may
# close, and every state before LINGERING may linger.
STATE_MOVES: Final = moves(
    STATE_NAMES,
    {
        READING: (UPGRADE_BODY, HOLDING, LINGERING, CLOSED),
        UPGRADE_BODY: (READING, HOLDING, SWITCHED, LINGERING, CLOSED),
        HOLDING: (READING, SWITCHED, LINGERING, CLOSED),
        LINGERING: (CLOSED,),
        SWITCHED: (CLOSED,),
    },
)
