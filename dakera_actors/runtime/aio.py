"""The one bridge from Trio to asyncio libraries (aiobotocore for S3; the L1.5 cache speaks to
Redis on Trio's own sockets, see :mod:`dakera_actors.cache.connection`).

The node is Trio; a few clients it uses are asyncio only. They run on one trio-asyncio loop per
Trio run: :func:`open_asyncio_loop` opens it unless one is already open (a store opened inside
another's block shares it: a client must be called on the loop it was made on, and every task of
the node sees one current loop), and
:func:`run_aio` runs an asyncio coroutine function on it as a plain Trio call. Cancelling the
Trio call cancels the asyncio task (one ``CancelledError`` thrown into it) and waits for it to
unwind, so a Trio timeout around :func:`run_aio` bounds the asyncio work too.

Nothing else in the package imports ``trio_asyncio`` (an import-linter contract).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio_asyncio

T = TypeVar("T")


class NoAsyncioLoop(RuntimeError):
    """:func:`run_aio` was called outside every :func:`open_asyncio_loop` block."""


@asynccontextmanager
async def open_asyncio_loop() -> AsyncIterator[None]:
    """The asyncio loop of this Trio run: opened here (and closed when the block ends) unless a
    block further out already opened one, which is then shared."""
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


def loop_is_open() -> bool:
    return trio_asyncio.current_loop.get() is not None


async def run_aio(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` (an asyncio coroutine function, no arguments: bind them with a lambda or
    functools.partial) on the current asyncio loop and return its result, or raise what it raised."""
    if trio_asyncio.current_loop.get() is None:
        raise NoAsyncioLoop("no asyncio loop is open here: call inside open_asyncio_loop()")
    result: T = await trio_asyncio.aio_as_trio(fn)()
    return result
