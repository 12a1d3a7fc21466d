"""Reading the archive back: a shard's newest chain, the cluster's identity and its token floor.

:func:`load_shard` lists a shard's objects, plans the restore (:func:`.chain.plan_restore`),
downloads the snapshot and the chunks after it and checks each (:mod:`.format`). A damaged
snapshot is skipped for the next one the plan finds; a damaged chunk ends the restore at the
record before it (and says so, at error level: records past it were acknowledged once).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import attrs

from ..log import EventLogger
from ..runtime.offload import Offload
from ..storage.objects import ObjectExists, ObjectNotFound, ObjectStore, ObjectStoreError, ObjectStoreUnusable
from ..store.tail import Position
from ..wal.record import WalRecord
from .chain import RestorePlan, earliest_point, plan_point_in_time, plan_restore
from .format import (
    IDENTITY,
    SHARDS,
    TOKENS,
    ArchivedObject,
    ArchiveFormatError,
    Identity,
    chain_token,
    decode_chunk,
    decode_identity,
    decode_snapshot,
    encode_identity,
    parse_key,
    parse_token_key,
    shard_prefix,
)


@attrs.frozen
class Restored:
    """A shard as the archive holds it: the snapshot's memories at ``base``, then ``records``."""

    shard: int
    chain: int
    base: Position
    memories: list[list[Any]]
    records: list[WalRecord]
    bytes_read: int
    sessions: list[dict[str, Any]] = attrs.field(factory=list)  # the snapshot's session records

    @property
    def position(self) -> Position:
        return (self.records[-1].epoch, self.records[-1].seq) if self.records else self.base


class PointOutOfReach(Exception):
    """The archive holds no snapshot of a shard as old as the point asked for; ``earliest`` is
    the oldest point it can restore (None: it holds no timed snapshot of the shard)."""

    def __init__(self, shard: int, earliest: float | None) -> None:
        super().__init__(f"shard {shard}: the archive reaches back to "
                         + (f"{earliest:.3f}" if earliest is not None else "no point in time"))
        self.shard = shard
        self.earliest = earliest


async def listing(store: ObjectStore, shard: int) -> list[ArchivedObject]:
    """The archived objects of ``shard``, as named (other keys under its prefix are ignored)."""
    listing = await store.list(shard_prefix(shard))
    return [o for info in listing if (o := parse_key(info.key, info.size)) is not None and o.shard == shard]


async def load_shard(store: ObjectStore, shard: int, offload: Offload, log: EventLogger) -> Restored | None:
    """The newest archived history of ``shard``, or None when the archive has none. Raises
    :class:`ObjectStoreError` when the store cannot be read (the caller retries: an unreadable
    archive is not an empty one)."""
    objects = await listing(store, shard)
    return await _load(store, shard, objects, lambda bad: plan_restore(objects, exclude=bad), offload, log)


async def load_shard_at(store: ObjectStore, shard: int, at: float, offload: Offload,
                        log: EventLogger) -> Restored | None:
    """``shard`` as it was at wall time ``at``: the newest snapshot taken at or before it and the
    archived records after it up to the last one committed at or before ``at``. None when the
    archive holds nothing of the shard (it never had data, or retention dropped it whole);
    :class:`PointOutOfReach` when it holds the shard only from later on."""
    objects = await listing(store, shard)
    if not objects:
        return None

    def plan(bad: set[str]) -> RestorePlan | None:
        return plan_point_in_time([o for o in objects if o.key not in bad], at)

    found = await _load(store, shard, objects, plan, offload, log, until=at)
    if found is None:
        raise PointOutOfReach(shard, earliest_point(objects))
    return found


async def _load(store: ObjectStore, shard: int, objects: list[ArchivedObject],
                planner: Callable[[set[str]], RestorePlan | None], offload: Offload, log: EventLogger, *,
                until: float | None = None) -> Restored | None:
    bad: set[str] = set()
    while (plan := planner(bad)) is not None:
        try:
            raw = await store.get(plan.snapshot.key)
            snap = await offload.run(decode_snapshot, raw, plan.snapshot, size=len(raw))
        except (ArchiveFormatError, ObjectNotFound) as exc:
            log.error("archive_object_unusable", key=plan.snapshot.key, problem=str(exc))
            bad.add(plan.snapshot.key)
            continue
        read = len(raw)
        records: list[WalRecord] = []
        for chunk in plan.chunks:
            try:
                data = await store.get(chunk.key)
                got = await offload.run(decode_chunk, data, chunk, size=len(data))
            except (ArchiveFormatError, ObjectNotFound) as exc:
                log.error("archive_chain_cut", key=chunk.key, problem=str(exc), shard=shard,
                          restored_to_seq=records[-1].seq if records else snap.seq)
                break
            read += len(data)
            at = records[-1].seq if records else snap.seq
            fresh = [r for r in got if r.seq > at]  # overlapping chunks repeat the same records
            if until is not None:
                late = next((n for n, r in enumerate(fresh) if r.ts > until), None)
                if late is not None:  # the history as of ``until`` is the prefix before it
                    records.extend(fresh[:late])
                    break
            records.extend(fresh)
        return Restored(shard, plan.chain, (snap.epoch, snap.seq), snap.memories, records, read, snap.sessions)
    return None


@attrs.frozen
class ArchiveInfo:
    """What a node learns from the archive before it starts: the cluster and its token floor."""

    identity: Identity
    created: bool  # this node wrote the identity (a new archive)
    token_floor: int  # the highest fencing token the archived cluster used (0: none)
    chains: int  # how many shard chains the archive holds (0: nothing to restore)


async def open_archive(store: ObjectStore, *, shards: int, node_id: str, wall_clock: Callable[[], float],
                       new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> ArchiveInfo:
    """Read (or create, once) the archive's identity, refuse a shard count that differs from the
    archived cluster's (agents would map to other shards: ``DAKERA_SHARDS``), and find the token
    floor: the highest token named by a token record or inside any chain's epoch."""
    try:
        identity, created = await _identity(store, shards, node_id, wall_clock, new_id)
        floor = 0
        for info in await store.list(TOKENS):
            token = parse_token_key(info.key)
            if token is not None:
                floor = max(floor, token)
        chains = set()
        for info in await store.list(SHARDS):
            obj = parse_key(info.key)
            if obj is not None:
                chains.add((obj.shard, obj.chain))
                floor = max(floor, chain_token(obj.chain))
    except ObjectStoreError as exc:
        raise ObjectStoreUnusable("DAKERA_STORAGE", f"the archive cannot be read ({exc})") from None
    if identity.shards != shards:
        raise ObjectStoreUnusable(
            "DAKERA_SHARDS", f"is {shards} but the archived cluster {identity.cluster_id} has {identity.shards} "
            "shards (agents would be looked for in the wrong shards); use the same shard count or another prefix")
    return ArchiveInfo(identity, created, floor, len(chains))


async def _identity(store: ObjectStore, shards: int, node_id: str, wall_clock: Callable[[], float],
                    new_id: Callable[[], str]) -> tuple[Identity, bool]:
    for _ in range(3):
        try:
            raw = await store.get(IDENTITY)
        except ObjectNotFound:
            ident = Identity(new_id(), shards, wall_clock(), node_id)
            try:
                await store.put(IDENTITY, encode_identity(ident), if_absent=True)
                return ident, True
            except ObjectExists:
                continue  # another node of the same cluster wrote it first: read theirs
        try:
            return decode_identity(raw), False
        except ArchiveFormatError as exc:
            raise ObjectStoreUnusable("DAKERA_S3_PREFIX", f"holds an unreadable cluster identity ({exc})") from None
    raise ObjectStoreUnusable("DAKERA_STORAGE", "the cluster identity keeps changing under this node")


__all__ = ["ArchiveInfo", "PointOutOfReach", "listing", "Restored", "load_shard", "load_shard_at", "open_archive"]
