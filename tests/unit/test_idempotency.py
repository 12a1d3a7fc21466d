"""The owner's request-id cache: one application per id, bounded memory."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.routing.idempotency import IdempotencyCache


async def test_concurrent_copies_share_one_application(autojump_clock: trio.testing.MockClock) -> None:
    cache: IdempotencyCache[int] = IdempotencyCache(ttl=10, keep=lambda v: v < 500)
    applied: list[int] = []
    answers: list[int] = []

    async def work() -> int:
        applied.append(1)
        await trio.sleep(1)
        return 200

    async def one() -> None:
        answers.append(await cache.run("id-1", work))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert applied == [1] and answers == [200, 200, 200] and cache.repeats == 2


async def test_unkept_answers_and_failures_are_retried_for_real(autojump_clock: trio.testing.MockClock) -> None:
    cache: IdempotencyCache[int] = IdempotencyCache(ttl=10, keep=lambda v: v < 500)
    calls = 0

    async def not_ready() -> int:
        nonlocal calls
        calls += 1
        return 503

    assert await cache.run("a", not_ready) == 503
    assert await cache.run("a", not_ready) == 503
    assert calls == 2 and len(cache) == 0


async def test_memory_is_bounded_by_expiry_and_capacity(autojump_clock: trio.testing.MockClock) -> None:
    cache: IdempotencyCache[int] = IdempotencyCache(ttl=10, capacity=4)

    async def ok() -> int:
        return 200

    for i in range(10):
        await cache.run(f"id-{i}", ok)
    assert len(cache) == 4
    await trio.sleep(11)
    await cache.run("last", ok)
    assert len(cache) == 1
