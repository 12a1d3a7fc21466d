"""The archive's decisions for the shards one node is primary of (pure: no I/O, no clock, no Trio).

For each shard this node is primary of under chain (map epoch) ``E``, the core decides what to
upload next so that every acknowledged record reaches the bucket within the flush interval:

1. **Inspect** first: list what the archive holds of the shard (so a restart of the same primary
   continues its chain, and retention knows what is there).
2. **A base**: the chain's first object is a whole-shard snapshot, uploaded at once.
3. **Chunks**: the records committed since, taken from the shard's in-memory tail once the oldest
   has waited half the flush interval (a chunk then carries every record up to now: one object
   per shard per half interval at most, however busy the shard).
4. **A fresh snapshot** instead of a chunk when the tail no longer reaches back to the last
   archived record (a long outage, or an install), when the unarchived records pass the backlog
   bound, or after enough chunks; then retention (:func:`.chain.plan_retention`) deletes what the
   new snapshot covers.

Failures: an upload that fails is retried at the next tick; after ``breaker_failures`` failures
in a row the circuit opens (no calls for a back-off that doubles up to ``breaker_max``), then one
probe upload is let through. Nothing here blocks a write: the records stay durable in the local
WAL and snapshots (the backlog *is* the unarchived part of the shard's history on disk), and the
archive catches up when the store answers again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from ..store.tail import Position, ShardTail
from ..wal.record import WalRecord
from .chain import plan_restore, plan_retention
from .format import ArchivedObject


@attrs.frozen
class ArchiveConfig:
    flush: float = 1.0  # seconds: DAKERA_COLD_FLUSH_MS
    backlog_limit: int = 256 * 1024 * 1024  # bytes of unarchived records before a snapshot replaces them
    chunk_records: int = 4096  # records per chunk at most (the rest go in the next one)
    snapshot_records: int = 50_000  # records chunked since the base before a fresh snapshot
    snapshot_chunks: int = 512  # chunks since the base before a fresh snapshot
    breaker_failures: int = 3
    breaker_base: float = 1.0
    breaker_max: float = 30.0
    #: seconds of point-in-time history retention keeps (the backup schedule's retention_days);
    #: None: not known yet, nothing is deleted until it is
    history: float | None = 0.0


# -- effects: what the actor carries out and reports back ----------------------------------
@attrs.frozen
class Inspect:
    shard: int
    chain: int


@attrs.frozen
class UploadSnapshot:
    shard: int
    chain: int


@attrs.frozen
class UploadChunk:
    shard: int
    chain: int
    records: tuple[WalRecord, ...]


@attrs.frozen
class Delete:
    shard: int
    chain: int
    objects: tuple[ArchivedObject, ...]


@attrs.frozen
class Refused:
    """The archive holds more of the shard's history under this very chain than this node does (it
    lost records it had uploaded): archiving it now would overwrite them, so the shard is not archived."""

    shard: int
    chain: int
    archived_seq: int
    local_seq: int


Effect = Inspect | UploadSnapshot | UploadChunk | Delete | Refused


@attrs.define
class ShardArchive:
    """The archive of one shard under this node's current term as its primary."""

    chain: int
    since: float  # when this node became its primary (under this chain)
    known: dict[str, ArchivedObject] = attrs.Factory(dict)
    inspected: bool = False
    refused: bool = False
    archived: int | None = None  # last seq archived in our chain (None: no base yet)
    needs_snapshot: bool = False
    records_since_snapshot: int = 0
    chunks_since_snapshot: int = 0
    busy: bool = False
    dirty_since: float | None = None  # commit time of the oldest record not archived


@attrs.frozen
class Figures:
    shards_archived: int
    lag_seconds: float
    backlog_bytes: int


RecordSize = Callable[[WalRecord], int]


class ArchiveCore:
    def __init__(self, config: ArchiveConfig, size: RecordSize) -> None:
        self.config = config
        self.size = size
        self.shards: dict[int, ShardArchive] = {}
        self.failures = 0  # uploads failed in a row
        self.open_until: float | None = None  # circuit open until then (None: closed)
        self.probing = False  # the one upload let through a half-open circuit is out

    # -- inputs --------------------------------------------------------------------------
    def set_roles(self, roles: Mapping[int, int], now: float) -> None:
        """The shards this node is primary of now, each with its chain (map epoch)."""
        for shard in list(self.shards):
            if shard not in roles:
                del self.shards[shard]
        for shard, chain in roles.items():
            current = self.shards.get(shard)
            if current is None or current.chain != chain:
                self.shards[shard] = ShardArchive(chain, since=now)

    @property
    def circuit_open(self) -> bool:
        return self.open_until is not None

    def _may_call(self, now: float) -> bool:
        if self.open_until is None:
            return True
        if now >= self.open_until and not self.probing:
            self.probing = True
            return True
        return False

    def tick(self, now: float, positions: Mapping[int, Position], tails: Mapping[int, ShardTail]) -> list[Effect]:
        """What to upload now (at most one call in flight per shard)."""
        effects: list[Effect] = []
        for shard, arch in sorted(self.shards.items()):
            if arch.busy or arch.refused:
                continue
            position = positions.get(shard, (0, 0))
            tail = tails.get(shard)
            self._track(arch, position, tail, now)
            effect = self._next(shard, arch, position, tail, now)
            if effect is None:
                continue
            if not self._may_call(now):
                break
            arch.busy = True
            effects.append(effect)
        return effects

    def _track(self, arch: ShardArchive, position: Position, tail: ShardTail | None, now: float) -> None:
        """Keep ``dirty_since`` (the oldest unarchived commit) and the backlog bound up to date."""
        if position[1] == 0 or (arch.archived is not None and position[1] <= arch.archived):
            arch.dirty_since = None
            return
        if arch.archived is None:
            arch.dirty_since = arch.since  # no base yet: everything since we became primary waits
        else:
            at = None
            if tail is not None:
                # the first unarchived record, or (the tail no longer reaching it) the oldest it holds
                at = tail.committed_at(max(arch.archived, tail.base[1]) + 1)
            if at is not None:
                # records replayed at start carry commit time 0: count them from when we became primary
                arch.dirty_since = max(at, arch.since)
            elif arch.dirty_since is None:
                arch.dirty_since = now
        if arch.archived is not None and tail is not None and not arch.needs_snapshot:
            pending = tail.after(arch.archived, max_records=len(tail.entries))
            if sum(self.size(r) for r in pending) > self.config.backlog_limit:
                arch.needs_snapshot = True

    def _next(self, shard: int, arch: ShardArchive, position: Position, tail: ShardTail | None,
              now: float) -> Effect | None:
        if not arch.inspected:
            return Inspect(shard, arch.chain)
        if arch.archived is None and not arch.known and position == (0, 0):
            # the archive has never held this shard: an empty base says it was empty from now on
            # (a point-in-time restore before its first write then finds it empty, not unknown)
            return UploadSnapshot(shard, arch.chain)
        if arch.dirty_since is None:
            return None
        if arch.archived is None or arch.needs_snapshot:
            return UploadSnapshot(shard, arch.chain)
        if now - arch.dirty_since < self.config.flush * 0.5:
            return None
        reach = tail is not None and tail.epoch_at(arch.archived) is not None
        if not reach or (arch.records_since_snapshot >= self.config.snapshot_records
                         or arch.chunks_since_snapshot >= self.config.snapshot_chunks):
            return UploadSnapshot(shard, arch.chain)
        assert tail is not None
        records = tail.after(arch.archived, max_records=self.config.chunk_records)
        return UploadChunk(shard, arch.chain, tuple(records)) if records else None

    def inspected(self, shard: int, chain: int, objects: Iterable[ArchivedObject] | None,
                  local_seq: int, now: float) -> list[Effect]:
        """The listing of the shard's objects (None: the call failed; it is asked again)."""
        arch = self._current(shard, chain)
        if arch is None:
            return []
        arch.busy = False
        if objects is None:
            self._failed(now)
            return []
        self._succeeded()
        arch.known = {o.key: o for o in objects}
        arch.inspected = True
        plan = plan_restore(o for o in arch.known.values() if o.chain == chain)
        if plan is not None:
            if plan.seq > local_seq:
                arch.refused = True
                return [Refused(shard, chain, plan.seq, local_seq)]
            arch.archived = plan.seq  # a restart under the same term: continue the chain
        return []

    def set_history(self, seconds: float) -> None:
        """Keep ``seconds`` of point-in-time history from the next retention on."""
        self.config = attrs.evolve(self.config, history=max(float(seconds), 0.0))

    def uploaded(self, shard: int, chain: int, obj: ArchivedObject | None, now: float, *,
                 records: int = 0, wall: float = 0.0) -> list[Effect]:
        """An upload finished (``obj`` None: it failed). A snapshot may let retention delete
        (``wall``: the wall clock, for the history window)."""
        arch = self._current(shard, chain)
        if obj is None:
            self._failed(now)
            if arch is not None:
                arch.busy = False
            return []
        self._succeeded()
        if arch is None:
            return []  # no longer primary: what was uploaded stays valid, retention is the next primary's
        arch.busy = False
        arch.known[obj.key] = obj
        if not obj.snapshot and arch.archived is not None and obj.first > arch.archived + 1:
            arch.needs_snapshot = True  # cannot happen with our own chunks; never archive a hole
            return []
        arch.archived = max(arch.archived or 0, obj.last)
        arch.dirty_since = None
        if obj.snapshot:
            arch.needs_snapshot = False
            arch.records_since_snapshot = arch.chunks_since_snapshot = 0
            if self.config.history is None:
                return []  # the window is not known yet: keep everything until it is
            doomed = plan_retention(arch.known.values(), chain, now=wall, window=self.config.history)
            return [Delete(shard, chain, tuple(doomed))] if doomed else []
        arch.records_since_snapshot += records
        arch.chunks_since_snapshot += 1
        return []

    def deleted(self, shard: int, chain: int, keys: Iterable[str]) -> None:
        arch = self._current(shard, chain)
        if arch is not None:
            arch.busy = False
            for key in keys:
                arch.known.pop(key, None)

    def _current(self, shard: int, chain: int) -> ShardArchive | None:
        arch = self.shards.get(shard)
        return arch if arch is not None and arch.chain == chain else None

    def _failed(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.config.breaker_failures:
            self.open_until = now + min(self.config.breaker_max,
                                        self.config.breaker_base * 2 ** (self.failures - self.config.breaker_failures))

    def _succeeded(self) -> None:
        self.failures = 0
        self.open_until = None
        self.probing = False

    # -- what it reports -----------------------------------------------------------------
    def figures(self, now: float, tails: Mapping[int, ShardTail]) -> Figures:
        lag, backlog, done = 0.0, 0, 0
        for shard, arch in self.shards.items():
            if arch.archived is not None:
                done += 1
            if arch.dirty_since is not None:
                lag = max(lag, now - arch.dirty_since)
                tail = tails.get(shard)
                if tail is not None and arch.archived is not None:
                    backlog += sum(self.size(r) for r in tail.after(arch.archived, max_records=len(tail.entries)))
        return Figures(done, max(lag, 0.0), backlog)
