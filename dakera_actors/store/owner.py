"""The shard owner: the one writer of this node's shards.

Writes wait in its mailbox; it takes all that wait (group commit), appends them to the WAL in
one durable batch, applies the records to the shard state machine in LSN order, and only then
answers each writer. So a write is acknowledged only once it is fsynced, the state always equals
a prefix of the log, and reads (plain method calls on the ShardSet, on the same event loop) never
see a write that could still be lost.

It also keeps restart time bounded: after enough records it dumps the shards that changed and
hands the images to the checkpointer, which writes snapshots and lets the WAL drop what they
cover. And it purges expired memories through the log, so replicas and replays agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import trio
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import Unavailable
from ..log import get_logger
from ..metrics import NodeMetrics
from ..runtime import Actor, BatchActor, Request
from ..runtime.offload import Offload
from ..wal import record as walrecord
from ..wal.actor import Entry, WalActor, disk_call
from ..wal.memory import SnapshotStorage
from ..wal.record import WalRecord
from .shard import FrozenShard, ShardSet, record_contents, snapshot_image
from .sizing import cut_by_bytes
from .tail import ShardTail, feed

WRITE_TIMEOUT = 150.0  # above the WAL's own fsync ceiling: a write answers or the node is down
_log = get_logger("dakera_actors.store")


LOAD_RECORD_BYTES = 8 * 1024 * 1024  # of memories per ``load`` record of an install (the WAL takes 64 MiB)
APPLY_SLICE_BYTES = 64 * 1024  # content indexed between two yields to the event loop


async def tokenize_ahead(shards: ShardSet, offload: Offload, contents: list[str]) -> None:
    """Tokenize what the next apply will index on the offload threads, not on the event loop (a
    copy or a restore of a whole shard would otherwise tokenize every memory on the loop)."""
    if contents:
        shards.expect(contents, await offload.run(shards.tokens_ahead, contents, size=sum(map(len, contents))))


def record_size(record: WalRecord) -> int:
    """About how much indexing applying ``record`` costs: the bytes of content it indexes."""
    return sum(len(c) for c in record_contents(record.op, record.body)) + 64


@attrs.frozen
class Write:
    entries: list[tuple[int, str, Any]]  # (shard, op, body)
    ts: float


@attrs.frozen
class Committed:
    """What a write returns: what applying it returned, and the shard seq of its last record."""

    results: list[Any]
    seq: int


@attrs.frozen
class Replicate:
    """Records a primary sent, logged and applied here in its order (each keeps its seq and epoch)."""

    records: list[WalRecord]


@attrs.frozen
class Install:
    """A whole copy of a shard, from its primary: replaces this node's copy as one logged batch."""

    shard: int
    memories: list[list[Any]]  # [memory record, vector bytes]
    seq: int
    epoch: int
    sessions: list[dict[str, Any]] = attrs.field(factory=list)  # session records


@attrs.frozen
class Drop:
    """This node no longer holds a copy of the shard: empty it (logged, like everything)."""

    shard: int


@attrs.frozen
class Barrier:
    """Answered once every write queued before it has been committed (or refused)."""


@attrs.frozen
class CheckpointNow:
    """Answered once every shard changed since its snapshot has a new one on disk (a clean stop)."""


class OwnerHooks(Protocol):
    """What the replication layer tells the owner; a single node has none (always writable)."""

    def epoch(self) -> int: ...
    def writable(self, shard: int) -> bool: ...
    def committed(self, records: list[WalRecord]) -> None: ...


@attrs.frozen
class Checkpoint:
    images: list[FrozenShard]
    live_shards: list[int]


class ShardOwner(BatchActor):
    def __init__(self, shards: ShardSet, wal: WalActor, checkpointer: Checkpointer, metrics: NodeMetrics,
                 tails: dict[int, ShardTail], *, wall_clock: Callable[[], float] = time.time, checkpoint_records: int = 50_000,
                 checkpoint_interval: float = 300.0, purge_interval: float = 1.0) -> None:
        super().__init__("shard-owner")
        self.shards = shards
        self.wal = wal
        self.checkpointer = checkpointer
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.checkpoint_records = checkpoint_records
        self.checkpoint_interval = checkpoint_interval
        self.purge_interval = purge_interval
        self._since_checkpoint = 0
        self._next_checkpoint = math.inf
        self._next_purge = math.inf
        self.hooks: OwnerHooks | None = None
        #: the replication tails (shard -> newest records), kept in step with every commit
        self.tails = tails

    # -- the writers' side -------------------------------------------------------------
    async def commit(self, entries: list[tuple[int, str, Any]], ts: float) -> Committed:
        """Write as the shard's primary; raises :class:`~dakera_actors.errors.Unavailable` when this node may not write it now."""
        committed: Committed = await self.ask(Write(entries, ts), timeout=WRITE_TIMEOUT)
        return committed

    async def replicate(self, records: list[WalRecord]) -> int:
        """Log and apply a primary's records (in order, from the shard's current seq on); returns
        how many were new."""
        applied: int = await self.ask(Replicate(records), timeout=WRITE_TIMEOUT)
        return applied

    async def install(self, install: Install) -> None:
        await self.ask(install, timeout=WRITE_TIMEOUT)

    async def drop(self, shard: int) -> None:
        await self.ask(Drop(shard), timeout=WRITE_TIMEOUT)

    async def barrier(self) -> None:
        await self.ask(Barrier(), timeout=WRITE_TIMEOUT)

    async def checkpoint_now(self) -> None:
        """Snapshot every shard changed since its snapshot, after the writes queued before, and wait
        until the snapshots are written: a clean stop's last step, so the next start replays
        nothing. The WAL, checkpointer and owner must still be running."""
        await self.ask(CheckpointNow(), timeout=WRITE_TIMEOUT)

    # -- the actor's side --------------------------------------------------------------
    async def on_start(self) -> None:
        now = trio.current_time()
        self._next_checkpoint = now + self.checkpoint_interval
        self._next_purge = now + self.purge_interval

    def next_timer(self) -> float:
        return min(self._next_checkpoint, self._next_purge)

    async def on_timer(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval
            await self._purge_expired()
        if now >= self._next_checkpoint:
            await self._checkpoint()

    async def handle_batch(self, batch: list[Request]) -> None:
        """One durable batch: primary writes get the next seqs of their shards; replicated records
        keep theirs (those already here or out of order are dropped); installs go in whole."""
        entries: list[Entry] = []
        answers: list[tuple[Request, int, int]] = []  # (request, first entry, entry count)
        next_seq: dict[int, int] = {}
        epoch = self.hooks.epoch() if self.hooks is not None else 0

        def seq_after(shard: int) -> int:
            seq = next_seq.get(shard, self.shards.shard(shard).seq) + 1
            next_seq[shard] = seq
            return seq

        for req in batch:
            msg = req.message
            if isinstance(msg, Write):
                refused = [s for s in {e[0] for e in msg.entries} if self.hooks and not self.hooks.writable(s)]
                if refused:
                    req.fail(Unavailable(f"shard {refused[0]} is moving to or from this node; retry shortly"))
                    continue
                start = len(entries)
                entries.extend(WalRecord(0, shard, op, body, msg.ts, seq_after(shard), epoch)
                               for shard, op, body in msg.entries)
                answers.append((req, start, len(msg.entries)))
            elif isinstance(msg, Replicate):
                start = len(entries)
                for record in msg.records:
                    if record.seq == next_seq.get(record.shard, self.shards.shard(record.shard).seq) + 1:
                        next_seq[record.shard] = record.seq
                        entries.append(record)  # logged as it came (the log gives it its own LSN)
                answers.append((req, start, len(entries) - start))
            elif isinstance(msg, Install):
                start = len(entries)
                now = self.wall_clock()
                entries.append((msg.shard, "reset", {}, now))
                # cut by encoded bytes: a shard of large non-ASCII memories in one record was over the
                # WAL's record limit, and the replica crashed on it
                budget = min(LOAD_RECORD_BYTES, walrecord.MAX_RECORD_BYTES // 2)
                entries.extend((msg.shard, "load", {"memories": part}, now)
                               for part, _size in cut_by_bytes(msg.memories, budget) if part)
                entries.extend((msg.shard, "load", {"memories": [], "sessions": part}, now)
                               for part, _size in cut_by_bytes(msg.sessions, budget) if part)
                entries.append((msg.shard, "mark", {"seq": msg.seq, "epoch": msg.epoch}, now))
                next_seq[msg.shard] = msg.seq
                answers.append((req, start, len(entries) - start))
            elif isinstance(msg, Drop):
                entries.append((msg.shard, "reset", {}, self.wall_clock()))
                next_seq[msg.shard] = 0
                answers.append((req, len(entries) - 1, 1))
            else:
                answers.append((req, len(entries), 0))  # a Barrier
        results = await self._commit(entries) if entries else []
        for req, start, count in answers:
            msg = req.message
            if isinstance(msg, Write):
                last = entries[start + count - 1]
                assert isinstance(last, WalRecord)
                req.reply(Committed(results[start:start + count], last.seq))
            elif isinstance(msg, Replicate):
                req.reply(count)
            elif not isinstance(msg, CheckpointNow):
                req.reply(None)
        waiting = [req for req, _, _ in answers if isinstance(req.message, CheckpointNow)]
        if waiting:
            await self._checkpoint(wait=True)
            for req in waiting:
                req.reply(None)
        elif self._since_checkpoint >= self.checkpoint_records:
            await self._checkpoint()

    async def _commit(self, entries: list[Entry]) -> list[Any]:
        records = await self.wal.append(entries)
        self._since_checkpoint += len(records)
        results = []
        applied_bytes = 0
        for record in records:
            results.append(self.shards.apply(record.lsn, record.shard, record.op, record.body, record.seq,
                                             record.epoch))
            applied_bytes += record_size(record)
            if applied_bytes >= APPLY_SLICE_BYTES:
                # indexing a big batch takes long: let the lease and gossip timers run between
                # slices (the records are durable already; readers may see part of the batch)
                applied_bytes = 0
                await trio.lowlevel.checkpoint()
        now = trio.current_time()
        for record in records:
            feed(self.tails, record, now)
        if self.hooks is not None:
            self.hooks.committed(records)
        return results

    async def _purge_expired(self) -> None:
        now = self.wall_clock()
        due = [s.id for s in self.shards.shards.values() if (at := s.next_expiry()) is not None and at <= now
               and (self.hooks is None or self.hooks.writable(s.id))]
        if due:
            # a purge is a primary's write like any other: it replicates, replicas never purge alone
            epoch = self.hooks.epoch() if self.hooks is not None else 0
            purged = await self._commit([(shard, "purge", {"now": now}, now, self.shards.shard(shard).seq + 1, epoch)
                                         for shard in due])
            _log.info("memories_expired", shards=len(due), memories=sum(purged))

    async def _checkpoint(self, *, wait: bool = False) -> None:
        """Dump every shard changed since its last snapshot and hand the images over (``wait``: and
        wait until the checkpointer has written them)."""
        self._since_checkpoint = 0
        self._next_checkpoint = trio.current_time() + self.checkpoint_interval
        live = [s.id for s in self.shards.shards.values() if s.applied_lsn > 0]
        # every record up to `at` is applied: each snapshot holds its shard up to it, so it is stored
        # under `at`, and `live` names every shard with a record up to it (recovery's replay floor)
        at = max((self.shards.shards[sid].applied_lsn for sid in live), default=0)
        last = self.checkpointer.last_checkpoint
        # a shard idle since before the last checkpoint is snapshotted again under `at`: otherwise
        # its old snapshot pins the log (and the replay floor) where it was written
        dirty = [sid for sid in live if self.shards.shards[sid].applied_lsn > self.checkpointer.snapshot_lsn(sid)
                 or self.checkpointer.snapshot_lsn(sid) < last]
        if dirty:
            # each freeze is consistent (nothing is applied while it is taken) and cheap; the
            # checkpointer turns it into an image in its worker thread, off the event loop
            frozen = [attrs.evolve(self.shards.freeze(sid, terms=True), at=at, live=tuple(sorted(live)))
                      for sid in dirty]
            if wait:
                await self.checkpointer.ask(Checkpoint(frozen, live), timeout=WRITE_TIMEOUT)
            else:
                await self.checkpointer.tell(Checkpoint(frozen, live))


class Checkpointer(Actor):
    """Writes shard snapshots off the write path, then lets the WAL drop what they cover."""

    def __init__(self, store: SnapshotStorage, wal: WalActor, metrics: NodeMetrics, *, keep: int = 2) -> None:
        super().__init__("checkpointer", mailbox_size=4)
        self.store = store
        self.wal = wal
        self.metrics = metrics
        self.keep = keep
        self._snap_lsn: dict[int, int] = {}
        #: the file LSN of the newest checkpoint written whole (0: none yet)
        self.last_checkpoint = 0

    def snapshot_lsn(self, shard: int) -> int:
        return self._snap_lsn.get(shard, 0)

    def known(self, latest: dict[int, int]) -> None:
        """The snapshot LSNs found on disk at start."""
        self._snap_lsn.update(latest)
        self.last_checkpoint = max([self.last_checkpoint, *latest.values()])

    def wal_floor(self, live_shards: list[int]) -> int:
        """The LSN every live shard can be rebuilt from with any of its kept snapshots."""
        return min((self.store.oldest_lsn(s) or 0 for s in live_shards), default=0)

    def _write(self, frozen: FrozenShard) -> float:
        started = time.perf_counter()
        self.store.write(frozen.id, frozen.file_lsn, snapshot_image(frozen))
        self.store.prune(frozen.id, keep=self.keep)
        return time.perf_counter() - started

    async def handle(self, message: Any) -> Any:
        assert isinstance(message, Checkpoint)
        for frozen in message.images:
            seconds = await disk_call(self.store.blocking, self._write, frozen)
            self._snap_lsn[frozen.id] = frozen.file_lsn
            self.metrics.snapshots_written.inc()
            self.metrics.snapshot_seconds.observe(seconds)
        # the log is needed from the oldest snapshot recovery may fall back to (a newer one can
        # turn out damaged), not from the newest; a shard without any needs all of it
        self.last_checkpoint = max([self.last_checkpoint, *(f.file_lsn for f in message.images)])
        floor = await disk_call(self.store.blocking, self.wal_floor, message.live_shards)
        deleted = await self.wal.truncate_before(floor + 1) if floor else 0
        _log.info("checkpoint_done", shards=len(message.images), wal_floor=floor, segments_deleted=deleted)


class ShardCollector(Collector):
    """``dakera_shard_memories{shard}``, read from the state at scrape time."""

    def __init__(self, shards: ShardSet) -> None:
        self._shards = shards

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("dakera_shard_memories", "Memories held per shard on this node", labels=["shard"])
        for shard in sorted(self._shards.shards.values(), key=lambda s: s.id):
            if shard.applied_lsn:
                family.add_metric([str(shard.id)], shard.memory_count)
        yield family
