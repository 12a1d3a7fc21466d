"""Replication status: the cluster-wide merge of every primary's typed rows (:mod:`.rows`).

:func:`cluster_report` merges every primary's rows into ``GET /admin/cluster/replication``.
Pure: the fan-out that gathers the rows is the replicator's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .rows import ShardStatus

if TYPE_CHECKING:
    from ..sharding.shardmap import ShardMap


def cluster_report(smap: ShardMap, write_ack: str, rows: Mapping[str, Sequence[ShardStatus] | None],
                   ) -> dict[str, Any]:
    """``GET /admin/cluster/replication``: every primary's rows (``rows``: member -> its rows, or None
    when it did not answer), merged. Only a shard's primary in ``smap`` is believed about it."""
    merged: dict[int, ShardStatus] = {}
    missing = sorted(member for member, answer in rows.items() if answer is None)
    for member, answer in rows.items():
        for reported in answer or ():
            if 0 <= reported.shard < len(smap.placement) and smap.owner(reported.shard) == member:
                merged[reported.shard] = reported
    want = wanted_replicas(smap)
    shards, under, healthy, worst = [], 0, 0, 0
    for shard, copies in enumerate(smap.placement):
        row = merged.get(shard)
        ok = row is not None and row.healthy_replicas >= want
        under += 0 if ok else 1
        healthy += row.healthy_replicas if row is not None else 0
        worst = max(worst, row.lag_ms if row is not None else 0)
        shards.append({"id": shard, "primary": copies[0] if copies else None, "replicas": list(copies[1:]),
                       "lag_ms": row.lag_ms if row else None, "lag_records": row.lag_records if row else None,
                       "healthy_replicas": row.healthy_replicas if row else 0, "under_replicated": not ok})
    return {"replication_factor": smap.rf, "write_ack": write_ack,
            "healthy_replicas": healthy, "under_replicated_shards": under, "lag_ms": worst,
            "down": list(smap.down), "unreachable_primaries": missing, "shards": shards}


def wanted_replicas(smap: ShardMap) -> int:
    """Healthy replicas a shard should have: RF - 1, fewer while the cluster has fewer members."""
    return min(smap.rf, len(smap.members())) - 1


def primaries(smap: ShardMap, *, besides: Iterable[str] = ()) -> list[str]:
    """The members leading at least one shard in ``smap`` (the ones to ask for rows)."""
    return sorted({c[0] for c in smap.placement if c} - set(besides))
