"""The cache client's fault handling without a server process: ``fakeredis`` for a Redis that
drops every connection or answers with an error, and a stand-in whose commands never return (a
hung server, a black-holed network). Whatever happens, a call ends within the bound with
CacheUnavailable (never a redis exception) and the health flag follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import pytest
import trio

from dakera_actors.cache.client import CacheUnavailable, RedisClient
from dakera_actors.log import get_logger
from dakera_actors.runtime.aio import NoAsyncioLoop, open_asyncio_loop, run_aio

TIMEOUT = 0.05


@asynccontextmanager
async def watched(redis: Any, flags: list[bool] | None = None) -> AsyncIterator[RedisClient]:
    """A client over ``redis`` with its health task running (what open_redis does, minus the pool)."""
    async with open_asyncio_loop():
        client = RedisClient(redis, url="redis://fake:6379/0", timeout=TIMEOUT, log=get_logger("dakera_actors.cache"),
                             on_connected=None if flags is None else flags.append, interval=0.05,
                             backoff_min=0.01, backoff_max=0.05)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.watch)
            await client.first_verdict.wait()
            yield client
            nursery.cancel_scope.cancel()


class Hung:
    """Every command waits forever (on the asyncio side); counts the cancellations it saw."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def _forever(self, *_args: Any, **_kwargs: Any) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    ping = get = set = evalsha = eval = script_load = scan = unlink = dbsize = info = time = _forever


async def test_a_disconnected_server_fails_calls_and_health_follows_it_both_ways() -> None:
    server = fakeredis.FakeServer()
    flags: list[bool] = []
    async with watched(fakeredis.FakeAsyncRedis(server=server), flags) as redis:
        assert redis.healthy.value and flags == [True]
        await redis.set("k", b"v", ttl=10)
        server.connected = False
        failure = await _fails(lambda: redis.get("k"))
        assert failure.reason == "unreachable" and "fake" in str(failure)
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)
        server.connected = True
        with trio.fail_after(5):
            await redis.healthy.wait_for(bool)
        assert await redis.get("k") == b"v"
    assert flags == [True, False, True]


async def test_an_error_answer_is_not_an_outage() -> None:
    fake = fakeredis.FakeAsyncRedis()
    async with watched(fake) as redis:
        await run_aio(lambda: fake.lpush("list", b"x"))
        failure = await _fails(lambda: redis.get("list"))  # WRONGTYPE
        assert failure.reason == "error" and "WRONGTYPE" in str(failure)
        assert redis.healthy.value
        assert not redis._trouble.is_set()  # nothing for the health task to look into


async def test_a_hung_server_is_cut_off_at_the_bound_and_the_asyncio_side_is_cancelled() -> None:
    hung = Hung()
    async with watched(hung) as redis:
        assert not redis.healthy.value  # the first ping timed out
        for call in (lambda: redis.get("k"), lambda: redis.set("k", b"v", 1), redis.time, redis.dbsize,
                     redis.info_memory, lambda: redis.evalsha_or_eval("return 1", [], []),
                     lambda: redis.delete_matching("*")):
            assert (await _fails(call)).reason == "timeout"
        assert hung.cancelled >= 7  # each asyncio task was told, not left running


async def test_cancelling_the_trio_caller_cancels_the_asyncio_call() -> None:
    hung = Hung()
    async with open_asyncio_loop():
        with trio.move_on_after(0.01):
            await run_aio(lambda: hung.get("k"))
        assert hung.cancelled == 1


async def test_run_aio_outside_a_loop_says_so() -> None:
    async def coro() -> int:
        return 1

    with pytest.raises(NoAsyncioLoop):
        await run_aio(coro)
    async with open_asyncio_loop():
        async with open_asyncio_loop():  # nested: the one loop shared
            assert await run_aio(coro) == 1


async def _fails(call: Any) -> CacheUnavailable:
    started = trio.current_time()
    with pytest.raises(CacheUnavailable) as info:
        await call()
    assert trio.current_time() - started < TIMEOUT + 0.25
    return info.value
