"""The plugin chain: priority order, synchronous fast path, awaiting only when a step must."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastgw.plugins.api import Plugin, RequestContext
from fastgw.proxy.chain import Chain


class Ctx:
    responded = False


class Step(Plugin):
    def __init__(
        self, name: str, priority: int, log: list[str], *, wait: bool = False, answer: bool = False
    ) -> None:
        self.name = name
        self.priority = priority
        self.log = log
        self.wait = wait
        self.answer = answer

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        self.log.append(self.name)
        if self.answer:
            ctx.responded = True
        if self.wait:
            return asyncio.sleep(0)
        return None


def test_synchronous_chain_runs_by_priority_and_returns_none() -> None:
    log: list[str] = []
    chain = Chain([Step("low", 1, log), Step("high", 10, log), Step("mid", 5, log)])
    assert chain.run(Ctx()) is None
    assert log == ["high", "mid", "low"]


def test_a_local_answer_stops_the_chain() -> None:
    log: list[str] = []
    chain = Chain([Step("first", 2, log, answer=True), Step("second", 1, log)])
    ctx = Ctx()
    assert chain.run(ctx) is None
    assert ctx.responded and log == ["first"]


async def test_an_awaiting_step_continues_the_chain_after_it() -> None:
    log: list[str] = []
    chain = Chain([Step("a", 3, log), Step("b", 2, log, wait=True), Step("c", 1, log)])
    pending = chain.run(Ctx())
    assert pending is not None and log == ["a", "b"]
    await pending
    assert log == ["a", "b", "c"]


async def test_a_single_plugin_chain_is_that_plugin_step() -> None:
    log: list[str] = []
    only = Step("only", 1, log, wait=True)
    chain = Chain([only])
    pending = chain.run(Ctx())
    assert pending is not None
    await pending
    assert log == ["only"]
    assert Chain([Step("sync", 1, log)]).run(Ctx()) is None
