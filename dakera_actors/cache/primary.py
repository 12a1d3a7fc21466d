"""The primary's side of the generation rule over a Redis backend (a thin Trio layer over
:class:`~.generation.PrimaryGeneration`): one generation per shard this node leads, one call to
Redis in flight per shard, each bounded by the timeout; writes wait in :meth:`Generations.settle`
until an advance covers them or their hold has passed; fills go out with a ticket.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal, Protocol

import trio

from . import generation as g
from . import scripts as s
from .errors import CacheUnavailable


class Backend(Protocol):
    """What the cache needs of Redis: run a script (loaded once, by its text), and for the admin
    API its key count, memory, evictions and a delete by pattern. Every method raises only
    :class:`CacheUnavailable`. ``connected``: whether it answers, as its own health check last
    found (the client's ping; a model's fault switches)."""

    @property
    def connected(self) -> bool: ...

    async def evalsha_or_eval(self, script: str, keys: list[str], args: list[Any]) -> Any: ...

    async def dbsize(self) -> int: ...

    async def info_memory(self) -> int: ...

    async def evicted_keys(self) -> int: ...

    async def delete_matching(self, pattern: str) -> int: ...


class _Shard:
    def __init__(self, core: g.PrimaryGeneration) -> None:
        self.core = core
        self.changed = trio.Event()
        self.stopped = False

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class Generations:
    def __init__(self, backend: Backend, *, cluster: str, config: g.GenerationConfig,
                 authorized: Callable[[], bool], nursery: trio.Nursery, rng: random.Random | None = None,
                 clock: Callable[[], float] = trio.current_time,
                 on_wait: Callable[[], None] | None = None,
                 foreign_from: Callable[[], int] = lambda: 0) -> None:
        self.backend = backend
        self.cluster = cluster
        self.config = config
        self.authorized = authorized
        #: while authorized: the lowest term no map of this cluster can have yet (0: unknown)
        self.foreign_from = foreign_from
        self.nursery = nursery
        self.rng = rng or random.Random()
        self.clock = clock
        self._on_wait = on_wait or (lambda: None)  # a write acknowledged by waiting out its hold
        self.waits = 0
        self.shards: dict[int, _Shard] = {}

    # -- roles ---------------------------------------------------------------------------
    def lead(self, shard: int, term: int) -> None:
        """This node is the shard's primary under ``term`` (a new term: a new generation core)."""
        current = self.shards.get(shard)
        if current is not None and current.core.term == term:
            return
        if current is not None:
            current.stopped = True
            current.wake()
        state = _Shard(g.PrimaryGeneration(shard, term, self.config, self.clock()))
        self.shards[shard] = state
        self.nursery.start_soon(self._loop, shard, state)

    def drop(self, shard: int) -> None:
        state = self.shards.pop(shard, None)
        if state is not None:
            state.stopped = True
            state.wake()

    # -- writes --------------------------------------------------------------------------
    def applied(self, shard: int) -> int | None:
        """A write was applied to a shard this node leads: its version (None: not leading it)."""
        state = self.shards.get(shard)
        if state is None:
            return None
        version = state.core.applied_write()
        state.wake()
        return version

    async def settle(self, shard: int, version: int | None) -> None:
        """Return once the write of ``version`` may be acknowledged (see the generation rule)."""
        state = self.shards.get(shard)
        if state is None or version is None:
            return
        waited = False
        while not state.core.may_ack(version, self.clock()):
            waited = True
            with trio.move_on_after(max(state.core.hold_until - self.clock(), 0.0) + 0.001):
                await state.changed.wait()
            if state.stopped:
                # no longer led under this term: no call of this core advances any more, so its
                # hold is final; the write waits it out like a write Redis never confirmed
                await trio.sleep(max(state.core.hold_until - self.clock(), 0.0))
                break
        if waited and not state.core.covered >= version:
            self.waits += 1
            self._on_wait()

    # -- fills ---------------------------------------------------------------------------
    def ticket(self, shard: int) -> g.FillTicket | None:
        state = self.shards.get(shard)
        return state.core.ticket(authorized=self.authorized()) if state is not None else None

    async def fill(self, ticket: g.FillTicket, name: str, value: bytes, ttl: int) -> bool:
        """Store an answer computed under ``ticket`` (False: not stored, for whatever reason)."""
        state = self.shards.get(ticket.shard)
        if state is None or not state.core.still_valid(ticket):
            return False
        not_after = state.core.fill_not_after(self.clock())
        if not_after is None:
            return False
        args = s.fill_args(self.cluster, ticket.shard, ticket.term, ticket.inc, ticket.gen, name, value, ttl,
                           not_after)
        try:
            with trio.fail_after(self.config.timeout):
                return bool(await self.backend.evalsha_or_eval(s.FILL, [s.gen_key(self.cluster, ticket.shard)], args))
        except (CacheUnavailable, trio.TooSlowError):
            return False

    # -- the call loop ------------------------------------------------------------------
    async def _loop(self, shard: int, state: _Shard) -> None:
        core = state.core
        while not state.stopped:
            now = self.clock()
            call = core.next_call(now, authorized=self.authorized(), foreign_from=self.foreign_from())
            if call is None:
                # nothing to send until a write is applied, or the trust needs renewing
                pause = max(min(core.renew_at - now, self.config.renew_every), 0.005)
                with trio.move_on_after(pause):
                    await state.changed.wait()
                continue
            answer = await self._send(shard, call)
            core.answered(answer, self.clock())
            state.wake()
            if answer is None:
                await trio.sleep(self.config.timeout)  # Redis is away: do not spin

    async def _send(self, shard: int, call: g.Call) -> g.Answer | None:
        key = [s.gen_key(self.cluster, shard)]
        try:
            with trio.fail_after(self.config.timeout):
                if isinstance(call, g.TimeCall):
                    return s.parse_time(await self.backend.evalsha_or_eval(s.TIME_NOW, [], []))
                if isinstance(call, g.AdvanceCall):
                    args = s.advance_args(call.term, call.last_gen, call.lease, call.not_after,
                                          self.rng.getrandbits(62) + 1, call.foreign_from, call.quiet)
                    return s.parse_advance(await self.backend.evalsha_or_eval(s.ADVANCE, key, args))
                args = s.renew_args(call.term, call.inc, call.gen, call.lease, call.not_after)
                return s.parse_renew(await self.backend.evalsha_or_eval(s.RENEW, key, args))
        except (CacheUnavailable, trio.TooSlowError, ValueError, IndexError, TypeError):
            return None


async def read(backend: Backend, *, cluster: str, shard: int, name: str,
               timeout: float) -> tuple[Literal["hit", "miss", "stale", "error"], bytes | None]:
    """A cached answer through any node: ``hit`` with it, ``miss`` (no entry), ``stale`` (an entry
    not of the trusted current generation) or ``error`` (the cache failed or did not answer in time)."""
    try:
        with trio.fail_after(timeout):
            got = await backend.evalsha_or_eval(s.READ, [s.gen_key(cluster, shard)],
                                                [s.entry_prefix(cluster, shard), name])
        return s.parse_read(got)
    except (CacheUnavailable, trio.TooSlowError, ValueError, IndexError, TypeError):
        return "error", None
