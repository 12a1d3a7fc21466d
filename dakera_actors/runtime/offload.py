"""CPU-heavy work off the event loop: embedding, large JSON, snapshot images.

The event loop also runs the protocols (lease renewals, gossip probes, replication): a 2 MB batch
embedded on the loop held ``/health`` for seconds and let the lease lapse. Heavy calls go to
worker threads instead, a bounded number at a time (more threads than cores only adds contention;
the GIL is released by numpy, xxhash and the JSON codec for much of the work).

A node on a simulated disk (the deterministic simulations under MockClock) runs them inline: a
worker thread would let the mock clock jump while the work is in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

#: below this many bytes of input the call is cheaper than the hop to a thread
SMALL_INPUT = 64 * 1024


class Offload:
    """Runs CPU-bound callables in at most ``threads`` worker threads (inline when ``inline``)."""

    def __init__(self, threads: int = 2, *, inline: bool = False) -> None:
        self.inline = inline
        self.limiter = trio.CapacityLimiter(threads)

    async def run(self, fn: Callable[..., T], *args: Any, size: int | None = None) -> T:
        """``fn(*args)`` in a worker thread; inline when this is a simulated node or ``size`` (the
        input's size in bytes, when the caller knows it) is small."""
        if self.inline or (size is not None and size < SMALL_INPUT):
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)


#: for services built without a node (unit tests): everything inline
INLINE = Offload(1, inline=True)
