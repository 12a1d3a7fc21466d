"""The archiver: carries out the :class:`~.core.ArchiveCore`'s decisions against the object store.

Every quarter of the flush interval it tells the core which shards this node is primary of
(``roles``: shard -> chain, the map epoch of its term) and where each shard stands, and runs what
the core asks for: listings, snapshot and chunk uploads, deletions, each in its own task (one
per shard at a time, ``concurrency`` at most). Encoding a snapshot or a chunk (msgpack and zlib)
runs on the offload threads, never on the event loop. Nothing here is on a write's path: a
store that is down or slow only makes the archive lag, which the metrics and the admin API show.

It also archives each fencing token this node holds as leader (``cluster/tokens/<token>``,
with the committed voters), so a cluster restarted from the bucket elects above it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import attrs
import trio

from ..log import EventLogger
from ..runtime import Actor
from ..runtime.offload import Offload
from ..storage.objects import ObjectExists, ObjectStore, ObjectStoreError
from ..store.shard import FrozenShard, ShardSet
from ..store.tail import ShardTail
from .core import ArchiveCore, Delete, Effect, Inspect, Refused, UploadChunk, UploadSnapshot
from .format import (
    ArchivedObject,
    SnapshotBody,
    TokenRecord,
    chunk_key,
    encode_chunk,
    encode_snapshot,
    encode_token,
    parse_key,
    shard_prefix,
    snapshot_key,
    token_key,
)
from .seeding import Seeder
from .stats import ColdTierStats

#: (token, leader id, committed voters) while this node leads, else None
Leadership = Callable[[], "tuple[int, str, list[str]] | None"]


@attrs.define
class Counters:
    objects_written: int = 0
    bytes_written: int = 0
    uploads_ok: int = 0
    uploads_failed: int = 0
    last_upload_at: float | None = None


class Archiver(Actor):
    def __init__(self, store: ObjectStore, core: ArchiveCore, shards: ShardSet, tails: Mapping[int, ShardTail],
                 roles: Callable[[], Mapping[int, int]], log: EventLogger, offload: Offload, nursery: trio.Nursery, *,
                 backend: str, location: str, flush_ms: int, leadership: Leadership | None = None,
                 wall_clock: Callable[[], float] = time.time, concurrency: int = 8,
                 on_upload: Callable[[str, int], None] | None = None) -> None:
        super().__init__("archiver")
        self.store = store
        self.core = core
        self.shards = shards
        self.tails = tails
        self.roles = roles
        self.log = log
        self.offload = offload
        self.nursery = nursery
        self.backend = backend
        self.location = location
        self.flush_ms = flush_ms
        self.leadership = leadership
        self.wall_clock = wall_clock
        self.counters = Counters()
        self._limit = trio.Semaphore(concurrency)
        self._next = 0.0
        self._tokens_archived = 0  # the highest token archived by this node (or found archived)
        self._token_busy = False
        #: called with ("ok"|"failed", bytes) after every upload (the node's metrics)
        self._on_upload = on_upload or (lambda outcome, size: None)

    @property
    def interval(self) -> float:
        return max(self.flush_ms / 4000, 0.01)

    def tier_stats(self) -> ColdTierStats:
        figures = self.core.figures(trio.current_time(), self.tails)
        c = self.counters
        return ColdTierStats(backend=self.backend, location=self.location, flush_ms=self.flush_ms,
                             backlog_limit=self.core.config.backlog_limit, shards_archived=figures.shards_archived,
                             objects_written=c.objects_written, bytes_written=c.bytes_written,
                             uploads_ok=c.uploads_ok, uploads_failed=c.uploads_failed, lag_seconds=figures.lag_seconds, backlog_bytes=figures.backlog_bytes,
                             circuit_open=self.core.circuit_open, last_upload_at=c.last_upload_at)

    # -- the actor's clock ---------------------------------------------------------------
    async def on_start(self) -> None:
        self._next = trio.current_time()

    def next_timer(self) -> float:
        return self._next

    async def on_timer(self, now: float) -> None:
        self._next = now + self.interval
        self.core.set_roles(self.roles(), now)
        positions = {s: self.shards.shards[s].position for s in self.core.shards if s in self.shards.shards}
        for effect in self.core.tick(now, positions, self.tails):
            self.nursery.start_soon(self._run, effect)
        self._archive_token()

    async def handle(self, message: object) -> None:
        raise TypeError(f"archiver got {type(message).__name__}")

    # -- carrying out effects ------------------------------------------------------------
    async def _run(self, effect: Effect) -> None:
        async with self._limit:
            follow = await self._carry_out(effect)
        for nxt in follow:
            self.nursery.start_soon(self._run, nxt)

    async def _carry_out(self, effect: Effect) -> list[Effect]:
        if isinstance(effect, Inspect):
            return await self._inspect(effect)
        if isinstance(effect, UploadSnapshot):
            return await self._upload_snapshot(effect)
        if isinstance(effect, UploadChunk):
            return await self._upload_chunk(effect)
        if isinstance(effect, Delete):
            await self._delete(effect)
            return []
        if isinstance(effect, Refused):
            self.log.error("archive_refused", shard=effect.shard, chain=effect.chain,
                           archived_seq=effect.archived_seq, local_seq=effect.local_seq,
                           detail="the archive holds more of this shard's history under this term than this node: "
                                  "not archiving it, so those records are not overwritten")
            return []
        raise TypeError(f"unknown archive effect {effect!r}")

    async def _inspect(self, effect: Inspect) -> list[Effect]:
        try:
            listing = await self.store.list(shard_prefix(effect.shard))
        except ObjectStoreError as exc:
            self._failed("list", effect.shard, exc)
            return self.core.inspected(effect.shard, effect.chain, None, 0, trio.current_time())
        objects = [o for info in listing if (o := parse_key(info.key, info.size)) is not None]
        local = self.shards.shard(effect.shard).seq
        follow = self.core.inspected(effect.shard, effect.chain, objects, local, trio.current_time())
        return follow

    async def _upload_snapshot(self, effect: UploadSnapshot) -> list[Effect]:
        frozen = self.shards.freeze(effect.shard)
        taken = self.wall_clock()  # no record inside is newer (its name says so: point-in-time restores)
        if not await self._ensure_token(max(effect.chain, frozen.epoch) >> 32):
            return self.core.uploaded(effect.shard, effect.chain, None, trio.current_time())
        data = await self.offload.run(_snapshot_object, effect.chain, frozen)
        key = snapshot_key(effect.shard, effect.chain, frozen.seq, taken)
        if not await self._put(key, data, effect.shard):
            return self.core.uploaded(effect.shard, effect.chain, None, trio.current_time())
        self.log.info("archive_snapshot_uploaded", shard=effect.shard, chain=effect.chain, seq=frozen.seq,
                      memories=len(frozen.memories), bytes=len(data))
        return self.core.uploaded(effect.shard, effect.chain, _named(key, len(data)), trio.current_time(),
                                  wall=self.wall_clock())

    async def _upload_chunk(self, effect: UploadChunk) -> list[Effect]:
        records = list(effect.records)
        if not await self._ensure_token(max(effect.chain, records[-1].epoch) >> 32):
            return self.core.uploaded(effect.shard, effect.chain, None, trio.current_time())
        data = await self.offload.run(encode_chunk, effect.shard, effect.chain, records)
        newest = max(r.ts for r in records)
        key = chunk_key(effect.shard, effect.chain, records[0].seq, records[-1].seq, newest)
        if not await self._put(key, data, effect.shard):
            return self.core.uploaded(effect.shard, effect.chain, None, trio.current_time())
        return self.core.uploaded(effect.shard, effect.chain, _named(key, len(data)), trio.current_time(),
                                  records=len(records), wall=self.wall_clock())

    async def _put(self, key: str, data: bytes, shard: int) -> bool:
        try:
            await self.store.put(key, data, if_absent=True)
        except ObjectExists:
            pass  # written before (a retry whose first try got through): the same name holds the same history
        except ObjectStoreError as exc:
            self.counters.uploads_failed += 1
            self._on_upload("failed", 0)
            self._failed("put", shard, exc)
            return False
        c = self.counters
        c.uploads_ok += 1
        c.objects_written += 1
        c.bytes_written += len(data)
        c.last_upload_at = self.wall_clock()
        self._on_upload("ok", len(data))
        return True

    async def _delete(self, effect: Delete) -> None:
        gone = []
        for obj in effect.objects:
            try:
                await self.store.delete(obj.key)
                gone.append(obj.key)
            except ObjectStoreError as exc:
                self._failed("delete", effect.shard, exc)
                break  # the rest is deleted by the next snapshot's retention
        self.core.deleted(effect.shard, effect.chain, gone)
        if gone:
            self.log.info("archive_pruned", shard=effect.shard, chain=effect.chain, objects=len(gone))

    def _failed(self, what: str, shard: int, exc: ObjectStoreError) -> None:
        self.log.warning("archive_call_failed", call=what, shard=shard, code=exc.code or "-", error=str(exc)[:200],
                         failures_in_a_row=self.core.failures + 1)

    # -- tokens --------------------------------------------------------------------------
    def _archive_token(self) -> None:
        """The leader records its token (with the committed voters) as soon as it holds it."""
        held = self.leadership() if self.leadership is not None else None
        if held is None or self._token_busy or held[0] <= self._tokens_archived or self.core.circuit_open:
            return
        self._token_busy = True

        async def put() -> None:
            try:
                await self._ensure_token(held[0])
            finally:
                self._token_busy = False

        self.nursery.start_soon(put)

    async def _ensure_token(self, token: int) -> bool:
        """Make sure a token record at or above ``token`` is archived before anything written under
        it is: a cluster restored from the bucket then starts above every epoch inside the archive."""
        if token <= self._tokens_archived:
            return True
        held = self.leadership() if self.leadership is not None else None
        leader, voters = (held[1], held[2]) if held is not None and held[0] == token else ("", [])
        try:
            data = encode_token(TokenRecord(token, leader, voters, self.wall_clock()))
            await self.store.put(token_key(token), data, if_absent=True)
            self.log.info("archive_token_recorded", token=token, voters=len(voters))
        except ObjectExists:
            pass  # recorded already (by its leader, or another node)
        except ObjectStoreError as exc:
            self._failed("put_token", -1, exc)
            return False
        self._tokens_archived = max(self._tokens_archived, token)
        return True


class TierView:
    """The cold tier as the admin views and the metrics read it (``stats()``, see
    :class:`.stats.ColdTier`): the archiver's figures, with the restores the seeder made."""

    def __init__(self, archiver: Archiver, seeder: Seeder | None = None) -> None:
        self._archiver = archiver
        self._seeder = seeder

    def stats(self) -> ColdTierStats:
        stats = self._archiver.tier_stats()
        if self._seeder is None:
            return stats
        seeded = self._seeder.counters
        return attrs.evolve(stats, restores=seeded.restores, bytes_read=stats.bytes_read + seeded.bytes_read)


def _snapshot_object(chain: int, frozen: FrozenShard) -> bytes:
    """A frozen shard as an archived snapshot object (CPU work: run on the offload threads)."""
    return encode_snapshot(SnapshotBody(frozen.id, chain, frozen.seq, frozen.epoch,
                                        [[m.to_record(), vector] for m, vector in frozen.memories],
                                        [s.to_record() for s in frozen.sessions]))


def _named(key: str, size: int) -> ArchivedObject:
    obj = parse_key(key, size)
    assert obj is not None, key
    return obj
