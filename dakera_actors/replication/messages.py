"""The replication protocol's messages between a shard's primary and its other copies.

Replicas pull: :class:`Fetch` carries a copy's position in each shard it replicates from one
primary and is its acknowledgement; :class:`FetchReply` answers with the records that follow or
the shards to copy whole (:class:`SnapshotRequest` streams :class:`SnapshotChunk`). A new primary
asks the other copies where they are (:class:`PositionQuery`, with the map to install first when
it is taking over). :class:`StatusRequest` asks a primary for its view of its replicas.
Every field is bounded at decode (:mod:`dakera_actors.wirebounds`).
"""

from __future__ import annotations

from typing import Any

import attrs

from ..sharding.shardmap import ShardMap
from ..wire import message
from ..wirebounds import (
    EPOCH,
    NODE_ID,
    POSITION,
    REASON,
    RF,
    SEQ,
    SHARD,
    SHARD_LIST,
    SHARDS_MAX,
    Blob,
    Bool,
    Fixed,
    Float,
    Int,
    Opaque,
    Seq,
    Text,
    bound,
)

#: one replicated record on the wire: [shard, seq, epoch, op, body, ts] (the body is checked by
#: dakera_actors.store.records before it is logged)
RECORD = Fixed((SHARD, SEQ, EPOCH, Text(64), Opaque(), Float(0.0, 1e11)))
#: [shard, lag ms, lag records, healthy replicas, replicas, [[replica, behind, fetched, acked, lag ms]]]
STATUS_ROW = Fixed((SHARD, Int(), Int(), RF, RF, Seq(Fixed((NODE_ID, Int(), Bool(), SEQ, Int())), RF.hi)))


@message("repl.fetch")
@attrs.frozen
class Fetch:
    positions: list[list[int]] = attrs.field(metadata=bound(Seq(POSITION, SHARDS_MAX)))  # [shard, epoch, seq]
    wait_ms: int = attrs.field(default=0, metadata=bound(Int(0, 60_000)))


@message("repl.records")
@attrs.frozen
class FetchReply:
    records: list[list[Any]] = attrs.field(metadata=bound(Seq(RECORD)))  # [shard, seq, epoch, op, body, ts], in order per shard
    snapshot: list[int] = attrs.field(factory=list, metadata=bound(SHARD_LIST))  # shards the replica must copy whole


@message("repl.snapshot-request")
@attrs.frozen
class SnapshotRequest:
    shard: int = attrs.field(metadata=bound(SHARD))


@message("repl.snapshot-chunk")
@attrs.frozen
class SnapshotChunk:
    shard: int = attrs.field(metadata=bound(SHARD))
    epoch: int = attrs.field(metadata=bound(EPOCH))
    seq: int = attrs.field(metadata=bound(SEQ))
    memories: list[Any] = attrs.field(metadata=bound(Seq(Fixed((Opaque(), Blob())))))  # [memory record, vector bytes]
    last: bool


@message("repl.position-query")
@attrs.frozen
class PositionQuery:
    """Where is each of these shards on you? With a map: install it and stop taking their records
    from anyone else first (a takeover)."""

    shards: list[int] = attrs.field(metadata=bound(SHARD_LIST))
    map: ShardMap | None = None


@message("repl.positions")
@attrs.frozen
class Positions:
    positions: list[list[int]] = attrs.field(metadata=bound(Seq(POSITION, SHARDS_MAX)))  # [shard, epoch, seq]
    refused: str = attrs.field(default="", metadata=bound(REASON))


@message("repl.status-request")
@attrs.frozen
class StatusRequest:
    pass


@message("repl.status")
@attrs.frozen
class StatusReply:
    shards: list[list[Any]] = attrs.field(metadata=bound(Seq(STATUS_ROW, SHARDS_MAX)))  # see Replicator.local_status
