"""A primary's replication status rows: one :class:`ShardStatus` per shard it leads, one
:class:`ReplicaStatus` per replica of it.

They are the wire form of :class:`~dakera_actors.replication.messages.StatusReply` (every field
bounded), what the rebalancer reads to tell when a learner has caught up
(:func:`dakera_actors.sharding.rebalance.read_round`), and what
:func:`dakera_actors.replication.status.merge` merges. Plain data: no map, no I/O.
"""

from __future__ import annotations

import attrs

from ..wirebounds import NODE_ID, RF, SEQ, SHARD, Int, Nested, Seq, bound


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
