"""Published state: one writer sets a value, any number of readers watch it change.

Readers see the latest value, not every intermediate one (conflation), so a slow subscriber
can never make the publisher wait or make a queue grow: backpressure by construction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Published(Generic[T]):
    def __init__(self, initial: T) -> None:
        self._value = initial
        self._version = 0
        self._changed = trio.Event()

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    def set(self, value: T) -> None:
        """Publish ``value`` (even if equal to the old one: readers decide what matters)."""
        self._value = value
        self._version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def changes(self, *, include_current: bool = True) -> AsyncIterator[T]:
        """Yield the current value (optionally), then each newer value seen; never ends."""
        seen = self._version
        if include_current:
            yield self._value
        while True:
            if self._version == seen:
                await self._changed.wait()
            seen = self._version
            yield self._value

    async def wait_for(self, predicate: Callable[[T], bool]) -> T:
        """Return the first value (current or future) for which ``predicate`` holds."""
        async for value in self.changes():
            if predicate(value):
                return value
        raise AssertionError("unreachable")
