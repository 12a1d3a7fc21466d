"""The WAL actor: owns the log files, makes appends durable with group commit.

Every Append waiting in the mailbox when the previous fsync returns goes into the next write,
and all of them share one fsync: concurrent writers pay for one disk flush, not one each.
A write is answered only after its records are fsynced. The blocking file calls run in a
worker thread so the node's event loop keeps serving while the disk works; a simulated disk
(``blocking = False``, see :mod:`.memory`) is called on the event loop, so MockClock tests
never see a thread. A failing disk crashes the actor and with it the node: a log in an unknown
state must not take more writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from ..metrics import NodeMetrics
from ..runtime import BatchActor, Request
from .memory import WalLog
from .record import Entry, WalRecord

T = TypeVar("T")
APPEND_TIMEOUT = 120.0  # a disk that takes this long for one fsync is a failed disk


async def disk_call(blocking: bool, fn: Callable[..., T], *args: Any) -> T:
    """Run a storage call: in a worker thread when it blocks, else on the event loop (after a checkpoint)."""
    if blocking:
        return await trio.to_thread.run_sync(fn, *args)
    await trio.lowlevel.checkpoint()
    return fn(*args)


@attrs.frozen
class Append:
    entries: list[Entry]


@attrs.frozen
class TruncateBefore:
    lsn: int


class WalActor(BatchActor):
    def __init__(self, log: WalLog, metrics: NodeMetrics, *, mailbox_size: int = 1024) -> None:
        super().__init__("wal", mailbox_size=mailbox_size)
        self.log = log
        self.metrics = metrics

    async def append(self, entries: Sequence[Entry]) -> list[WalRecord]:
        """Append and fsync; returns the records with their LSNs, in order."""
        records: list[WalRecord] = await self.ask(Append(list(entries)), timeout=APPEND_TIMEOUT)
        return records

    async def truncate_before(self, lsn: int) -> int:
        """Delete sealed segments wholly below ``lsn``; returns how many went."""
        deleted: int = await self.ask(TruncateBefore(lsn), timeout=APPEND_TIMEOUT)
        return deleted

    async def on_stop(self) -> None:
        self.log.close()

    def _write_and_sync(self, entries: list[Entry]) -> tuple[list[WalRecord], float]:
        records = self.log.append(entries)
        started = time.perf_counter()
        self.log.sync()
        return records, time.perf_counter() - started

    async def handle_batch(self, batch: list[Request]) -> None:
        appends = [r for r in batch if isinstance(r.message, Append)]
        if appends:
            entries = [e for r in appends for e in r.message.entries]
            records, fsync_seconds = await disk_call(self.log.blocking, self._write_and_sync, entries)
            self.metrics.wal_fsync_seconds.observe(fsync_seconds)
            self.metrics.wal_batch_records.observe(len(records))
            self.metrics.wal_records.inc(len(records))
            at = 0
            for request in appends:
                n = len(request.message.entries)
                request.reply(records[at:at + n])
                at += n
        for request in batch:
            if isinstance(request.message, TruncateBefore):
                deleted = await disk_call(self.log.blocking, self.log.truncate_before,
                                          request.message.lsn)
                self.metrics.wal_segments_deleted.inc(deleted)
                request.reply(deleted)
            elif not isinstance(request.message, Append):
                raise TypeError(f"wal actor got {type(request.message).__name__}")
