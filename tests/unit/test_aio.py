"""The one Trio-asyncio bridge (runtime/aio.py, used by the S3 object store): a Trio timeout or
cancellation reaches the asyncio side, and a call outside every loop says what is missing."""

from __future__ import annotations

import asyncio

import pytest
import trio

from dakera_actors.runtime.aio import NoAsyncioLoop, open_asyncio_loop, run_aio


async def test_cancelling_the_trio_caller_cancels_the_asyncio_call() -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with open_asyncio_loop():
        with trio.move_on_after(0.01):
            await run_aio(forever)
        assert cancelled == [True]  # told, and unwound before run_aio returned


async def test_run_aio_outside_a_loop_says_so_and_nested_blocks_share_one_loop() -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    with pytest.raises(NoAsyncioLoop):
        await run_aio(loop_id)
    async with open_asyncio_loop():
        outer = await run_aio(loop_id)
        async with open_asyncio_loop():
            assert await run_aio(loop_id) == outer
