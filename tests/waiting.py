"""Waiting on a condition with a deadline: for effects of timers a test does not drive itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return once ``condition()`` holds; fail the test with TooSlowError after ``timeout``."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - polling an observable, not a task's event
            await trio.sleep(interval)


async def eventually_async(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0,
                           interval: float = 0.1) -> None:
    """:func:`eventually` for a condition that must be awaited (a record read from a store, an
    HTTP status): return once it holds; TooSlowError after ``timeout``."""
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 - polling an observable, not a task's event
            await trio.sleep(interval)
