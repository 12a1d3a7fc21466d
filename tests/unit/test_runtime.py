"""Actor runtime: mailboxes, request/reply, refusals, loud crashes, timers, published state."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.runtime import (
    Actor,
    ActorCrashed,
    ActorStopped,
    ActorTimeout,
    BatchActor,
    Published,
    Refusal,
    Request,
)


class Counter(Actor):
    def __init__(self, **kw: Any) -> None:
        super().__init__("counter", **kw)
        self.total = 0
        self.gate: trio.Event | None = None

    async def handle(self, message: Any) -> Any:
        if message == "refuse":
            raise Refusal("no")
        if message == "boom":
            raise ValueError("bug")
        if message == "slow":
            await trio.sleep(10)
            return "done"
        if message == "nap":
            await trio.sleep(1)
            return "rested"
        if message == "block" and self.gate is not None:
            await self.gate.wait()
            return "unblocked"
        self.total += message
        return self.total


async def test_tell_and_ask_are_served_in_order() -> None:
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await actor.tell(1)
        await actor.tell(2)
        assert await actor.ask(3) == 6
        assert actor.stats.received == 3
        actor.close()
    with pytest.raises(ActorStopped):
        await actor.ask(1)


async def test_refusal_goes_back_to_the_asker_and_the_actor_lives_on() -> None:
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        with pytest.raises(Refusal):
            await actor.ask("refuse")
        assert await actor.ask(5) == 5
        nursery.cancel_scope.cancel()


async def test_crash_is_loud_and_takes_the_parent_down(caplog: pytest.LogCaptureFixture) -> None:
    actor = Counter()
    with pytest.RaisesGroup(pytest.RaisesExc(ActorCrashed, match="counter")) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await actor.tell("boom")
            await trio.sleep_forever()
    crash = info.value.exceptions[0]
    assert isinstance(crash.__cause__, ValueError)
    assert any(r.getMessage() == "actor_crashed" and r.exc_info for r in caplog.records)


async def test_asker_of_a_crashing_handler_is_told_not_left_hanging() -> None:
    actor = Counter()
    crashed: list[BaseException] = []

    async def host(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await actor.run(task_status=task_status)
        except ActorCrashed as exc:
            crashed.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(host)
        with trio.fail_after(5), pytest.raises(ActorCrashed):
            await actor.ask("boom")
    assert len(crashed) == 1
    with pytest.raises(ActorStopped):
        await actor.ask(1)


async def test_ask_times_out(autojump_clock: trio.testing.MockClock) -> None:
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        started = trio.current_time()
        with pytest.raises(ActorTimeout):
            await actor.ask("slow", timeout=1.0)
        assert trio.current_time() - started == pytest.approx(1.0)
        assert actor.stats.asks_timed_out == 1
        nursery.cancel_scope.cancel()


async def test_a_process_pause_longer_than_the_timeout_does_not_fail_an_ask(
        mock_clock: trio.testing.MockClock) -> None:
    """The chaos runner found this: a node SIGSTOPped for 8 s woke with every deadline past, an
    ask between two of its actors timed out before the other actor could run, and the asking
    actor crashed the node. The pause is a jump of the clock while no task runs."""
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        answers: list[Any] = []

        async def asker() -> None:
            answers.append(await actor.ask("nap", timeout=5.0))

        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()  # the ask is in; the handler naps for 1 s
        mock_clock.jump(8.0)  # SIGSTOP ... SIGCONT: every deadline is in the past at once
        await trio.testing.wait_all_tasks_blocked()
        assert answers == ["rested"] and actor.stats.asks_timed_out == 0
        # a handler that really never answers still times out after 5 s of running time
        started = trio.current_time()
        mock_clock.autojump_threshold = 0
        with pytest.raises(ActorTimeout):
            await actor.ask("slow", timeout=5.0)
        assert trio.current_time() - started == pytest.approx(5.0)
        nursery.cancel_scope.cancel()


async def test_full_mailbox_applies_backpressure_and_nowait_drops() -> None:
    actor = Counter(mailbox_size=2)
    actor.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await actor.tell("block")  # taken by the actor, which now waits on the gate
        await trio.testing.wait_all_tasks_blocked()
        assert actor.tell_nowait(1) and actor.tell_nowait(1)
        assert not actor.tell_nowait(1)  # mailbox full: dropped, counted
        assert actor.stats.dropped == 1
        assert actor.mailbox_depth == 2
        sent = False

        async def blocked_sender() -> None:
            nonlocal sent
            await actor.tell(1)
            sent = True

        nursery.start_soon(blocked_sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent  # waiting, not queued without bound
        actor.gate.set()
        assert await actor.ask(0) == 3
        assert sent
        nursery.cancel_scope.cancel()


class Ticker(Actor):
    def __init__(self, period: float) -> None:
        super().__init__("ticker")
        self.period = period
        self.due = 0.0
        self.ticks: list[float] = []

    async def on_start(self) -> None:
        self.due = trio.current_time() + self.period

    def next_timer(self) -> float:
        return self.due if len(self.ticks) < 3 else math.inf

    async def on_timer(self, now: float) -> None:
        self.ticks.append(now)
        self.due = now + self.period

    async def handle(self, message: Any) -> Any:
        return len(self.ticks)


async def test_timers_fire_on_time_between_messages(autojump_clock: trio.testing.MockClock) -> None:
    actor = Ticker(0.5)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(actor.run)
        assert await actor.ask("n") == 0
        await trio.sleep(0.75)
        assert await actor.ask("n") == 1
        await trio.sleep(10)
        assert [round(t - t0, 6) for t in actor.ticks] == [0.5, 1.0, 1.5]
        nursery.cancel_scope.cancel()


async def test_published_readers_see_latest_value_without_blocking_writer() -> None:
    state: Published[int] = Published(0)
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        async def reader() -> None:
            async for value in state.changes():
                seen.append(value)
                if value == 3:
                    return

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        state.set(1)
        state.set(2)  # conflated: the reader may skip 1
        await trio.testing.wait_all_tasks_blocked()
        state.set(3)
    assert seen[0] == 0 and seen[-1] == 3 and seen == sorted(seen)
    assert state.version == 3
    assert await state.wait_for(lambda v: v == 3) == 3


class Collector(BatchActor):
    def __init__(self) -> None:
        super().__init__("collector", max_batch=3)
        self.batches: list[list[Any]] = []
        self.gate = trio.Event()

    async def handle_batch(self, batch: list[Request]) -> None:
        await self.gate.wait()
        self.batches.append([r.message for r in batch])
        for r in batch:
            if r.message == "bad":
                r.fail(Refusal("bad"))
            else:
                r.reply(len(batch))


async def test_batch_actor_takes_what_waits_up_to_max_batch() -> None:
    actor = Collector()
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)

        async def ask(i: Any) -> None:
            try:
                results[i] = await actor.ask(i)
            except Refusal:
                results[i] = "refused"

        for i in (1, 2, 3, 4, "bad"):
            nursery.start_soon(ask, i)
            await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # the first ask is taken alone; the other four wait and go in batches of at most three
    assert actor.batches == [[1], [2, 3, 4], ["bad"]]
    assert results == {1: 1, 2: 3, 3: 3, 4: 3, "bad": "refused"}
