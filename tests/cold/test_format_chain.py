"""The cold tier's names, object format and chain rules (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.cold.chain import plan_restore, plan_retention
from dakera_actors.cold.format import (
    ArchiveFormatError,
    SnapshotBody,
    TokenRecord,
    chunk_key,
    decode_chunk,
    decode_snapshot,
    decode_token,
    encode_chunk,
    encode_snapshot,
    encode_token,
    parse_key,
    snapshot_key,
)
from dakera_actors.wal.record import WalRecord

E1, E2, E3 = 1 << 32 | 1, 2 << 32 | 1, 2 << 32 | 5


def snap(shard: int, chain: int, seq: int):
    obj = parse_key(snapshot_key(shard, chain, seq))
    assert obj is not None
    return obj


def chunk(shard: int, chain: int, first: int, last: int):
    obj = parse_key(chunk_key(shard, chain, first, last))
    assert obj is not None
    return obj


def test_names_parse_back_and_order_by_seq():
    s, c = snap(7, E2, 120), chunk(7, E2, 121, 180)
    assert (s.shard, s.chain, s.first, s.last, s.snapshot) == (7, E2, 120, 120, True)
    assert (c.first, c.last, c.snapshot) == (121, 180, False)
    assert snapshot_key(7, E2, 9) < snapshot_key(7, E2, 10)  # zero padding: name order is seq order
    for junk in ["shards/7/1/s-1", "shards/00007/x/s-00000000000000000001", "probe/a",
                 chunk_key(1, 1, 5, 4), "shards/00001/00000000000000000001/c-00000000000000000000-00000000000000000001"]:
        assert parse_key(junk) is None


def test_snapshot_and_chunk_round_trip_and_refuse_damage():
    body = SnapshotBody(3, E1, 10, E1, [[{"id": "m"}, b"\0" * 8]])
    data = encode_snapshot(body)
    assert decode_snapshot(data, snap(3, E1, 10)) == body
    with pytest.raises(ArchiveFormatError, match="unlike its name"):
        decode_snapshot(data, snap(3, E1, 11))  # renamed object: refused
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(ArchiveFormatError, match="crc"):
        decode_snapshot(bytes(flipped), snap(3, E1, 10))
    with pytest.raises(ArchiveFormatError):
        decode_snapshot(data[:10], snap(3, E1, 10))
    records = [WalRecord(99, 3, "put", {"m": 1}, 1.5, seq, E1) for seq in (11, 12)]
    raw = encode_chunk(3, E1, records)
    got = decode_chunk(raw, chunk(3, E1, 11, 12))
    assert [(r.seq, r.epoch, r.op, r.body, r.lsn) for r in got] == [(11, E1, "put", {"m": 1}, 0), (12, E1, "put", {"m": 1}, 0)]
    with pytest.raises(ArchiveFormatError, match="unlike its name"):
        decode_chunk(raw, chunk(3, E1, 11, 13))
    with pytest.raises(ArchiveFormatError, match="kind"):
        decode_snapshot(raw, snap(3, E1, 12))
    # epochs never go backwards inside one primary's history: refused
    backwards = [WalRecord(0, 3, "put", {}, 0.0, 11, E2), WalRecord(0, 3, "put", {}, 0.0, 12, E1)]
    with pytest.raises(ArchiveFormatError, match="epochs"):
        decode_chunk(encode_chunk(3, E1, backwards), chunk(3, E1, 11, 12))
    tok = TokenRecord(5, "n1", ["n1", "n2"], 1.0)
    assert decode_token(encode_token(tok), 5) == tok
    with pytest.raises(ArchiveFormatError):
        decode_token(encode_token(tok), 6)


def test_restore_takes_the_newest_chain_with_a_base_and_stops_at_a_hole():
    objs = [snap(1, E1, 10), chunk(1, E1, 11, 20), chunk(1, E1, 21, 400),  # a stale primary's long chain
            snap(1, E2, 15), chunk(1, E2, 16, 18), chunk(1, E2, 19, 25), chunk(1, E2, 30, 40)]  # hole at 26
    plan = plan_restore(objs)
    assert plan is not None and plan.chain == E2 and plan.seq == 25
    assert plan.keys == [snapshot_key(1, E2, 15), chunk_key(1, E2, 16, 18), chunk_key(1, E2, 19, 25)]
    # the newest chain's base not up yet: the one before it is used
    without_base = [o for o in objs if o.key != snapshot_key(1, E2, 15)] + [chunk(1, E3, 26, 27)]
    plan = plan_restore(without_base)
    assert plan is not None and plan.chain == E1 and plan.seq == 400
    # a damaged newest snapshot: the older one of the same chain, with the chunks after it
    objs2 = [snap(1, E2, 10), chunk(1, E2, 11, 30), snap(1, E2, 30), chunk(1, E2, 31, 35)]
    plan = plan_restore(objs2, exclude={snapshot_key(1, E2, 30)})
    assert plan is not None and plan.snapshot.last == 10 and plan.seq == 35
    assert plan_restore([chunk(1, E2, 1, 5)]) is None
    assert plan_restore([]) is None


def test_retention_keeps_two_snapshots_and_never_touches_newer_chains():
    objs = [snap(1, E1, 5), chunk(1, E1, 6, 9),
            snap(1, E2, 9), chunk(1, E2, 10, 12), snap(1, E2, 12), chunk(1, E2, 13, 20), snap(1, E2, 20),
            chunk(1, E2, 21, 22), snap(1, E3, 22)]
    doomed = {o.key for o in plan_retention(objs, E2)}
    assert doomed == {snapshot_key(1, E1, 5), chunk_key(1, E1, 6, 9), snapshot_key(1, E2, 9),
                      chunk_key(1, E2, 10, 12)}
    assert plan_retention([snap(1, E1, 5), chunk(1, E2, 6, 7)], E2) == []  # no base of our own: nothing goes


@st.composite
def archives(draw):
    """A shard's objects written by a few successive primaries, some uploads lost."""
    objs, seq = [], 0
    for chain in sorted(draw(st.sets(st.integers(1, 50), min_size=1, max_size=4))):
        base = draw(st.integers(0, seq + 3))  # a new primary's base may be behind or ahead of the last chain
        seq = base
        objs.append(snap(0, chain, seq))
        for _ in range(draw(st.integers(0, 6))):
            if draw(st.booleans()):
                objs.append(snap(0, chain, seq))
            n = draw(st.integers(1, 5))
            if draw(st.integers(0, 9)):  # one upload in ten never made it
                objs.append(chunk(0, chain, seq + 1, seq + n))
            seq += n
    return list(set(objs))


@settings(max_examples=300, deadline=None)
@given(archives())
def test_retention_never_shortens_what_a_restore_reaches(objs):
    before = plan_restore(objs)
    assert before is not None
    kept = [o for o in objs if o not in set(plan_retention(objs, before.chain))]
    after = plan_restore(kept)
    assert after is not None and (after.chain, after.seq) == (before.chain, before.seq)
    # and if the newest snapshot turns out damaged, retention has not made the fallback worse
    bad = {after.snapshot.key}
    fallback, had = plan_restore(kept, exclude=bad), plan_restore(objs, exclude=bad)
    if had is not None and had.chain == before.chain:
        assert fallback is not None and (fallback.chain, fallback.seq) >= (had.chain, had.seq)
