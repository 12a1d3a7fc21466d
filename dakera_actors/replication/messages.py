"""The replication protocol's messages between a shard's primary and its other copies.

Replicas pull: :class:`Fetch` carries a copy's position in each shard it replicates from one
primary and is its acknowledgement; :class:`FetchReply` answers with the records that follow or
the shards to copy whole (:class:`SnapshotRequest` streams :class:`SnapshotChunk`). A new primary
asks the other copies where they are (:class:`PositionQuery`, with the map to install first when
it is taking over). :class:`StatusRequest` asks a primary for its view of its replicas (typed
rows: :class:`~.status.ShardStatus`). A record travels as the WAL's own
:class:`~dakera_actors.wal.record.WalRecord`, packed as ``[shard, seq, epoch, op, body, ts]``.
Every field is bounded at decode (:mod:`dakera_actors.wirebounds`).
"""

from __future__ import annotations

from typing import Any

import attrs

from ..sharding.shardmap import ShardMap
from ..wal.record import WalRecord
from ..wire import message, register_structure_hook, register_unstructure_hook
from ..wirebounds import (
    EPOCH,
    POSITION,
    REASON,
    SEQ,
    SHARD,
    SHARD_LIST,
    SHARDS_MAX,
    Blob,
    Fixed,
    Float,
    Int,
    Nested,
    Opaque,
    OutOfBounds,
    Seq,
    Text,
    bound,
)
from .rows import ShardStatus


def record_wire(record: WalRecord) -> list[Any]:
    """A record as a fetch reply carries it: ``[shard, seq, epoch, op, body, ts]`` (its LSN is the
    primary's own and means nothing to a replica, whose log assigns its own)."""
    return [record.shard, record.seq, record.epoch, record.op, record.body, record.ts]


def _structure_record(value: Any, _type: Any) -> WalRecord:
    """Records are most of every fetch reply: decode them directly, as strictly as cattrs would."""
    if not isinstance(value, list | tuple) or len(value) != 6:
        raise TypeError("a record must be [shard, seq, epoch, op, body, ts]")
    shard, seq, epoch, op, body, ts = value
    if (any(type(x) is not int for x in (shard, seq, epoch)) or type(op) is not str
            or type(ts) not in (int, float)):
        raise TypeError("bad record field types")
    return WalRecord(0, shard, op, body, float(ts), seq, epoch)


class _RecordBound(Fixed):
    """A decoded record, checked field by field in its wire order (a :class:`Fixed` of the wire form)."""

    def __call__(self, v: Any) -> None:
        if not isinstance(v, WalRecord):
            raise OutOfBounds("WalRecord expected")
        super().__call__(record_wire(v))


register_structure_hook(WalRecord, _structure_record)
register_unstructure_hook(WalRecord, record_wire)
#: one replicated record: [shard, seq, epoch, op, body, ts] (the body is checked by
#: dakera_actors.store.records before it is logged)
RECORD = _RecordBound((SHARD, SEQ, EPOCH, Text(64), Opaque(), Float(0.0, 1e11)))


@message("repl.fetch")
@attrs.frozen
class Fetch:
    positions: list[list[int]] = attrs.field(metadata=bound(Seq(POSITION, SHARDS_MAX)))  # [shard, epoch, seq]
    wait_ms: int = attrs.field(default=0, metadata=bound(Int(0, 60_000)))


@message("repl.records")
@attrs.frozen
class FetchReply:
    records: list[WalRecord] = attrs.field(metadata=bound(Seq(RECORD)))  # in order per shard
    snapshot: list[int] = attrs.field(factory=list, metadata=bound(SHARD_LIST))  # shards the replica must copy whole
    #: [shard, epoch, seq] of each asked shard the primary serves live, as of this reply
    heads: list[list[int]] = attrs.field(factory=list, metadata=bound(Seq(POSITION, SHARDS_MAX)))


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
    #: the shard's session records (after its memories; a peer from before sessions sends none)
    sessions: list[Any] = attrs.field(factory=list, metadata=bound(Seq(Opaque())))


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
    #: shards whose copy here was lost with the disk and has not caught up yet: no quorum counts them
    lost: list[int] = attrs.field(factory=list, metadata=bound(SHARD_LIST))


@message("repl.status-request")
@attrs.frozen
class StatusRequest:
    pass


@message("repl.status")
@attrs.frozen
class StatusReply:
    shards: list[ShardStatus] = attrs.field(metadata=bound(Seq(Nested(ShardStatus), SHARDS_MAX)))
