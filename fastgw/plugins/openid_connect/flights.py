"""The single-flight of fetches: one fetch per key at a time, its outcome shared by every caller
that asked meanwhile. Knows nothing of tokens: the authenticators key it by cache key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """One fetch per key at a time; later callers wait for its result or its exception.

    The fetch runs in its own task and callers wait through `asyncio.shield`, so a caller that is
    cancelled (client gone) does not cancel the fetch the others are waiting for.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[T]] = {}
        self.joins = 0  # callers that waited for a fetch already under way

    def __contains__(self, key: K) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: K, fetch: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(fetch())  # type: ignore[arg-type]
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        else:
            self.joins += 1
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: a fetch whose waiters all left is not an error

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
