"""A point-in-time restore's source: every shard as it was at one second, rebuilt from the archive.

For each shard, the cold tier's reader (:func:`~dakera_actors.cold.restore.load_shard_at`) gives
the newest snapshot taken at or before the point and the archived records after it, up to the
last one committed at or before the point. They are applied to a scratch copy of the shard (in
memory, on the offload threads: the node's own shards are never touched), and the result is a
:class:`~.bundle.Part` like a backup's, so the restore job writes it back the same way.

The point must be covered by the archive on every shard: when a shard's archive starts later
(retention dropped what was older), the restore is refused with the oldest point it could reach.
A shard the archive holds nothing of refuses it too: every primary archives an empty base for a
shard the archive never held, so nothing at all means this is not the cluster's whole archive (a
node-local one, or its primary's first upload still pending), and restoring it empty would wipe
its agents.
"""

from __future__ import annotations

from ..cold.chain import earliest_point
from ..cold.restore import PointOutOfReach, Restored, listing, load_shard_at
from ..log import EventLogger
from ..runtime.offload import Offload
from ..storage.objects import ObjectStore
from ..store.shard import ShardSet
from .bundle import Part


def _no_terms(_text: str) -> list[str]:
    return []  # the scratch copy is read for its memories only: no text index needed


def replay(found: Restored, shard_count: int, dim: int) -> Part:
    """The shard ``found`` describes, as a Part (CPU work: run it on the offload threads)."""
    scratch = ShardSet(shard_count, dim, _no_terms)
    scratch.apply(0, found.shard, "load", {"memories": found.memories, "sessions": found.sessions},
                  found.base[1], found.base[0])
    for rec in found.records:
        scratch.apply(0, found.shard, rec.op, rec.body, rec.seq, rec.epoch)
    frozen = scratch.freeze(found.shard)
    return Part(found.shard, frozen.epoch, frozen.seq, [[m.to_record(), v] for m, v in frozen.memories],
                [s.to_record() for s in frozen.sessions])


async def parts_at(archive: ObjectStore, *, shard_count: int, dim: int, at: float, offload: Offload,
                   log: EventLogger) -> tuple[list[Part], int]:
    """Every shard as it was at ``at`` and the records replayed; :class:`PointOutOfReach` names
    a shard whose archive starts later."""
    parts: list[Part] = []
    records = 0
    for shard in range(shard_count):
        found = await load_shard_at(archive, shard, at, offload, log)
        if found is None:
            raise PointOutOfReach(shard, None)
        records += len(found.records)
        parts.append(await offload.run(replay, found, shard_count, dim,
                                       size=sum(len(m[1]) for m in found.memories) + 64 * len(found.records)))
    return parts, records


async def check_reach(archive: ObjectStore, shard_count: int, at: float) -> None:
    """:class:`PointOutOfReach` unless every shard has an archived snapshot taken at or before
    ``at`` (names only: one listing per shard, nothing downloaded)."""
    for shard in range(shard_count):
        objects = await listing(archive, shard)
        earliest = earliest_point(objects)
        if earliest is None or earliest > at:
            raise PointOutOfReach(shard, earliest)


__all__ = ["PointOutOfReach", "check_reach", "parts_at", "replay"]
