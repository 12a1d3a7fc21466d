"""One record type end to end: the WalRecord the primary's log wrote is what a fetch reply carries,
packed as [shard, seq, epoch, op, body, ts], and decodes back into a WalRecord for the replica's log."""

from __future__ import annotations

import pytest

from dakera_actors import wire
from dakera_actors.replication.messages import FetchReply, StatusReply
from dakera_actors.replication.status import ReplicaStatus, ShardStatus
from dakera_actors.wal.record import WalRecord, numbered


def test_a_record_travels_in_its_wire_order_and_comes_back_without_the_primarys_lsn() -> None:
    logged = WalRecord(812, 3, "put", {"m": ["x"], "v": b"\x00"}, 1.5, seq=9, epoch=(4 << 32) | 2)
    payload = wire.unstructure(FetchReply([logged], [5]))
    assert payload["records"] == [[3, 9, (4 << 32) | 2, "put", {"m": ["x"], "v": b"\x00"}, 1.5]]
    back = wire.structure(payload, FetchReply)
    assert back.records == [WalRecord(0, 3, "put", {"m": ["x"], "v": b"\x00"}, 1.5, seq=9, epoch=(4 << 32) | 2)]
    assert numbered(back.records[0], 17) == WalRecord(17, 3, "put", {"m": ["x"], "v": b"\x00"}, 1.5, 9, (4 << 32) | 2)


@pytest.mark.parametrize("bad", [
    [3, 9, 1, "put", {}],  # a field short
    [3, 9, 1, "put", {}, True],  # a bool is not a time
    ["3", 9, 1, "put", {}, 1.0],  # a string is not a shard
    [3, -1, 1, "put", {}, 1.0],  # out of bounds
    [3, 9, 2**63, "put", {}, 1.0],
    [3, 9, 1, "x" * 65, {}, 1.0],
    [70_000, 9, 1, "put", {}, 1.0],
])
def test_a_malformed_record_fails_the_frame(bad: list[object]) -> None:
    with pytest.raises(Exception):  # noqa: B017 - cattrs wraps the field error in its own group
        wire.structure({"records": [bad], "snapshot": []}, FetchReply)


def test_status_rows_round_trip_typed() -> None:
    reply = StatusReply([ShardStatus(2, 10, 1, 1, 2, [ReplicaStatus("b", 1, True, 4, 10)])])
    assert wire.structure(wire.unstructure(reply), StatusReply) == reply
    with pytest.raises(Exception):  # noqa: B017
        wire.structure({"shards": [{"shard": 2, "lag_ms": 1, "lag_records": 1, "healthy_replicas": 99,
                                    "replica_count": 1, "replicas": []}]}, StatusReply)
