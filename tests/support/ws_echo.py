"""A WebSocket upstream for tests: the `websockets` package's server, echoing each message.

A message "bytes:N" is answered with N bytes (to fill a slow client's buffers); the handshake
request's Authorization header is echoed in an `x-seen-authorization` response header.
Run: python -m tests.support.ws_echo --port 0 (prints READY ws://127.0.0.1:PORT)
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        if isinstance(message, str) and message.startswith("bytes:"):
            await connection.send(b"x" * int(message[6:]))
        else:
            await connection.send(message)


def remember_authorization(connection: ServerConnection, request: Request, response: Response):
    response.headers["x-seen-authorization"] = request.headers.get("authorization", "")
    response.headers["x-seen-path"] = request.path
    return response


async def main(port: int) -> None:
    async with serve(
        echo, "127.0.0.1", port, process_response=remember_authorization, max_size=None
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
