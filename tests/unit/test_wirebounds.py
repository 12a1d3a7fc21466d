"""Every field of every wire message is bounded; out-of-range values reject the frame, never the node."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dakera_actors import wirebounds as wb
from dakera_actors.wire import FrameRejected, decode_frame, encode_frame
from tests.hostile import load_all_messages, mutated, payload_of

MESSAGES = load_all_messages()
MAX = 64 * 1024 * 1024


def decode(tag: str, payload: Any) -> Any:
    return decode_frame(msgpack.packb([1, tag, "node-1", payload], use_bin_type=True), max_size=MAX).message


def rejected(tag: str, payload: Any) -> str:
    with pytest.raises(FrameRejected) as info:
        decode(tag, payload)
    return info.value.reason


@pytest.mark.parametrize("tag", sorted(MESSAGES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_payloads_round_trip(tag: str, data: st.DataObject) -> None:
    msg = decode(tag, data.draw(payload_of(MESSAGES[tag])))
    assert decode_frame(encode_frame(msg, "n"), max_size=MAX).message == msg


@pytest.mark.parametrize("tag", sorted(MESSAGES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_payloads_are_rejected_or_within_bounds(tag: str, data: st.DataObject) -> None:
    try:
        msg = decode(tag, data.draw(mutated(MESSAGES[tag])))
    except FrameRejected as exc:
        assert exc.reason == "invalid"
        return
    wb.check_message(msg)  # whatever got through is within every bound
    encode_frame(msg, "n")  # and can be sent on (no int msgpack cannot carry)


def test_every_field_has_a_bound() -> None:
    assert len(MESSAGES) >= 31
    for cls in MESSAGES.values():
        for _name, check in wb.checks_of(cls):
            assert callable(check)


@pytest.mark.parametrize("value", [2**30, 2**31, 2**32, 2**63, 2**64 - 1, -1, True, 1.5])
def test_out_of_range_tokens_are_rejected(value: Any) -> None:
    # the probe: LeaseAnnounce(token=2**32) poisoned the node; a ShardMap or a PositionQuery the same
    assert rejected("lease.announce", {"token": value, "remaining": 1.0}) == "invalid"
    smap = {"token": value, "version": 1, "rf": 1, "placement": [["a"]]}
    assert rejected("shard.map", smap) == "invalid"
    assert rejected("repl.position-query", {"shards": [0], "map": smap}) == "invalid"


def test_nested_shapes_are_checked() -> None:
    # the probe: Fetch(positions=[[0]]) raised ValueError in the replicator and the node exited
    assert rejected("repl.fetch", {"positions": [[0]]}) == "invalid"
    assert rejected("repl.fetch", {"positions": [[0, 1, 2**64 - 1]]}) == "invalid"
    assert rejected("repl.fetch", {"positions": [[70_000, 1, 1]]}) == "invalid"
    assert decode("repl.fetch", {"positions": [[0, 1, 2]]}).positions == [[0, 1, 2]]
    assert rejected("repl.records", {"records": [[0, 1, 1, "put", {}]]}) == "invalid"
    assert rejected("lease.request", {"token": 1, "ttl": float("nan")}) == "invalid"
    assert rejected("swim.gossip", {"updates": [{"id": "a", "state": 9, "incarnation": 1}]}) == "invalid"
    # the leader's map header in its metadata is compared with the map's key: it must be two ints
    update = {"id": "a", "state": 0, "incarnation": 1, "meta": {"map": ["x", 1]}}
    assert rejected("swim.gossip", {"updates": [update]}) == "invalid"
    assert rejected("repl.snapshot-chunk", {"shard": 0, "epoch": 0, "seq": 0, "memories": [[{}]],
                                            "last": True}) == "invalid"


def test_deep_and_huge_values_are_rejected() -> None:
    deep: Any = 0
    for _ in range(100):
        deep = [deep]
    assert rejected("repl.records", {"records": [[0, 1, 1, "put", deep, 1.0]]}) == "invalid"
    assert rejected("lease.request", {"token": 1, "ttl": 1.0, "voters": ["a"] * 2000}) == "invalid"
    assert rejected("swim.ping", {"seq": 1, "target": "x" * 300}) == "invalid"


def test_epoch_never_overflows() -> None:
    from dakera_actors.sharding.shardmap import ShardMap

    assert wb.epoch_of(wb.TOKEN_MAX, wb.VERSION_MAX) == wb.EPOCH_MAX < 2**63
    # what the wire accepts can grow by a billion before the encoding refuses it
    assert wb.WIRE_TOKEN_MAX + 2**30 <= wb.TOKEN_MAX and wb.WIRE_VERSION_MAX + 2**31 <= wb.VERSION_MAX
    with pytest.raises(wb.EpochOverflow):
        wb.epoch_of(2**31, 1)
    with pytest.raises(wb.EpochOverflow):
        wb.epoch_of(1, 2**32)
    with pytest.raises(wb.EpochOverflow):
        _ = ShardMap(token=2**32, version=1, rf=1, placement=[["a"]]).epoch


def test_a_bound_failure_names_the_path() -> None:
    from dakera_actors.membership.member import Update
    from dakera_actors.membership.messages import SwimGossip
    from dakera_actors.replication.messages import Fetch

    with pytest.raises(wb.OutOfBounds, match=r"^positions\[1\]\[2\]: int in"):
        wb.check_message(Fetch(positions=[[0, 1, 2], [0, 1, -1]]))
    with pytest.raises(wb.OutOfBounds, match=r"^updates\[0\]\.meta\.map\[0\]: int in"):
        wb.check_message(SwimGossip(updates=[Update("a", 0, 1, meta={"map": [2**40, 1]})]))
