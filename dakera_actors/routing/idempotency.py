"""Forwarded writes are applied once per request id, however often the same forward arrives.

A forward can reach the owner twice: the sender's endpoint resends a request whose pooled stream
turned out closed, a bounced request is forwarded on by a second node, or someone holding the
gossip key re-sends a captured write (the replay cache catches exact copies; this catches the
rest). The node that first takes a write from HTTP gives it a random id; the owner remembers, per
id, the answer it gave (or the answer being computed) and returns that instead of applying the
write again. Memory is bounded: an entry lives ``ttl`` seconds (the router gives it the frame
window plus twice the request timeout: after that a sealed copy is stale and its sender has
stopped retrying), and at most ``capacity`` entries are kept (oldest dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

DEFAULT_CAPACITY = 16_384


class _Entry(Generic[T]):
    __slots__ = ("done", "expires", "value")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.done = trio.Event()
        self.value: T | None = None


class IdempotencyCache(Generic[T]):
    """Request id to the first answer; ``run`` applies ``work`` at most once per live id."""

    def __init__(self, ttl: float, capacity: int = DEFAULT_CAPACITY,
                 keep: Callable[[T], bool] = lambda _v: True) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._keep = keep  # answers worth remembering (a 503 "not ready" should be retried for real)
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self.repeats = 0  # requests answered from the cache

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        """Drop expired entries, and the oldest until there is room for one more."""
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first.expires > now and len(entries) < self.capacity:
                break
            entries.popitem(last=False)

    async def run(self, request_id: str, work: Callable[[], Awaitable[T]]) -> T:
        now = trio.current_time()
        self._expire(now)
        while (entry := self._entries.get(request_id)) is not None:
            await entry.done.wait()  # the first copy may still be running: share its answer
            if entry.value is not None:
                self.repeats += 1
                return entry.value
            # the first copy failed or its answer was not kept (so it is gone): look again, as
            # another waiter may already be running it anew
        entry = _Entry[T](now + self.ttl)
        self._entries[request_id] = entry
        try:
            value = await work()
        except BaseException:
            self._entries.pop(request_id, None)
            entry.done.set()
            raise
        if self._keep(value):
            entry.value = value
        else:
            self._entries.pop(request_id, None)
        entry.done.set()
        return value
