"""Replication status: each primary's typed rows about its replicas, and the cluster-wide merge.

A primary reports one :class:`ShardStatus` per shard it leads (its :class:`ReplicaStatus` rows say
how far each replica is); the rows are also the wire form of
:class:`~dakera_actors.replication.messages.StatusReply`, with every field bounded. The rebalancer
reads them to tell when a learner has caught up (:func:`dakera_actors.sharding.rebalance.read_round`);
:func:`cluster_report` merges every primary's rows into ``GET /admin/cluster/replication``.
Pure: the fan-out that gathers the rows is the replicator's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..wirebounds import NODE_ID, RF, SEQ, SHARD, Int, Nested, Seq, bound

if TYPE_CHECKING:
    from ..sharding.shardmap import ShardMap


@attrs.frozen
class ReplicaStatus:
    """What a primary knows of one replica of one shard."""

    member: str = attrs.field(metadata=bound(NODE_ID))
    behind: int = attrs.field(metadata=bound(Int()))  # records it lacks
    fresh: bool  # it fetched recently
    acked: int = attrs.field(metadata=bound(SEQ))  # the highest seq it acknowledged
    lag_ms: int = attrs.field(metadata=bound(Int()))  # since the oldest record it lacks was committed


@attrs.frozen
class ShardStatus:
    """A primary's view of one shard it leads: the worst lag, healthy replicas, and each replica.
    ``replicas`` is empty while the primary is still taking the shard over."""

    shard: int = attrs.field(metadata=bound(SHARD))
    lag_ms: int = attrs.field(metadata=bound(Int()))
    lag_records: int = attrs.field(metadata=bound(Int()))
    healthy_replicas: int = attrs.field(metadata=bound(RF))
    replica_count: int = attrs.field(metadata=bound(RF))
    replicas: list[ReplicaStatus] = attrs.field(factory=list, metadata=bound(Seq(Nested(ReplicaStatus), RF.hi)))


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
