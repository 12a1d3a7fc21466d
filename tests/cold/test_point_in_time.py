"""Point-in-time planning and retention with a history window (pure), and reading a shard back
as it was at a second (the reader over an in-memory bucket)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.cold.chain import earliest_point, plan_point_in_time, plan_retention
from dakera_actors.cold.format import (
    ArchivedObject,
    SnapshotBody,
    chunk_key,
    encode_chunk,
    encode_snapshot,
    parse_key,
    snapshot_key,
)
from dakera_actors.cold.restore import PointOutOfReach, load_shard_at
from dakera_actors.log import get_logger
from dakera_actors.runtime.offload import INLINE
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.wal.record import WalRecord

E1 = 1 << 32 | 1
E2 = 2 << 32 | 1
LOG = get_logger("test")


def snap(chain: int, seq: int, at: float | None) -> ArchivedObject:
    o = parse_key(snapshot_key(3, chain, seq, at))
    assert o is not None
    return o


def chunk(chain: int, first: int, last: int, at: float | None) -> ArchivedObject:
    o = parse_key(chunk_key(3, chain, first, last, at))
    assert o is not None
    return o


def test_names_carry_the_time_and_older_names_still_parse() -> None:
    s = snap(E1, 120, 1796169600.123)
    assert (s.shard, s.chain, s.last, s.snapshot, s.at) == (3, E1, 120, True, 1796169600.123)
    c = chunk(E1, 121, 180, 1796169601.25)
    assert (c.first, c.last, c.snapshot, c.at) == (121, 180, False, 1796169601.25)
    old = parse_key(snapshot_key(3, E1, 7))
    assert old is not None and old.at is None and old.key.endswith("s-00000000000000000007")
    assert parse_key(snapshot_key(3, E1, 7) + "-t12") is None  # a malformed stamp is not a name of ours


def test_a_point_is_rebuilt_from_the_newest_chain_with_a_snapshot_before_it() -> None:
    objects = [snap(E1, 0, 10.0), chunk(E1, 1, 50, 40.0), chunk(E1, 51, 90, 49.0),
               snap(E2, 90, 50.5), chunk(E2, 91, 120, 70.0), snap(E2, 120, 71.0), chunk(E2, 121, 130, 80.0)]
    late = plan_point_in_time(objects, 75.0)
    assert late is not None and late.chain == E2 and late.snapshot.last == 120 and late.seq == 130
    mid = plan_point_in_time(objects, 60.0)
    assert mid is not None and mid.chain == E2 and mid.snapshot.last == 90 and mid.seq == 130
    early = plan_point_in_time(objects, 45.0)  # before the takeover: the first primary's chain to its end
    assert early is not None and early.chain == E1 and early.snapshot.last == 0 and early.seq == 90
    assert plan_point_in_time(objects, 9.9) is not None  # seq 0 of the oldest chain: empty before its first write
    assert earliest_point(objects[1:]) == 50.5
    # an untimed snapshot (an older name) is never a base for a point in time
    assert plan_point_in_time([snap(E1, 3, None), chunk(E1, 4, 5, 3.0)], 100.0) is None
    # the shard's origin (seq 0 in its oldest chain) holds for any earlier time: it was empty then
    origin = [snap(E1, 0, 50.0), chunk(E1, 1, 5, 60.0)]
    early_origin = plan_point_in_time(origin, 20.0)
    assert early_origin is not None and early_origin.snapshot.last == 0 and earliest_point(origin) == 0.0
    # ... but a seq-0 snapshot of a later term is no origin
    assert plan_point_in_time([snap(E1, 4, 40.0), snap(E2, 0, 50.0)], 20.0) is None


def test_without_a_window_retention_is_the_newest_two_snapshots() -> None:
    objects = [snap(E1, 0, 1.0), chunk(E1, 1, 10, 2.0), snap(E2, 10, 3.0), chunk(E2, 11, 20, 4.0),
               snap(E2, 20, 5.0), chunk(E2, 21, 30, 6.0), snap(E2, 30, 7.0)]
    doomed = {o.key for o in plan_retention(objects, E2, now=100.0, window=0.0)}
    assert doomed == {o.key for o in objects[:4]}


def test_a_window_keeps_the_floor_snapshot_and_everything_after_it() -> None:
    objects = [snap(E1, 0, 1.0), chunk(E1, 1, 10, 2.0), snap(E2, 10, 3.0), chunk(E2, 11, 20, 4.0),
               snap(E2, 20, 5.0), chunk(E2, 21, 30, 6.0), snap(E2, 30, 7.0), chunk(E2, 31, 40, 8.0),
               snap(E2, 40, 9.0)]
    # window back to 4.5: the floor is the snapshot at 3.0 (seq 10); the older chain goes
    doomed = {o.key for o in plan_retention(objects, E2, now=10.0, window=5.5)}
    assert doomed == {objects[0].key, objects[1].key, snap(E2, 20, 5.0).key}  # 20 thinned: 10 and chunks reach
    # a window back past the chain's base: its base and the older chain stay
    assert {o.key for o in plan_retention(objects, E2, now=10.0, window=8.0)} == {snap(E2, 20, 5.0).key}


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, int, float]], float]:
    """A primary's uploads over time: ("c", records, t) chunks and ("s", 0, t) snapshots, t rising;
    a takeover ("t", 0, t) starts a new chain with a base snapshot."""
    steps = []
    t = 0.0
    for _ in range(draw(st.integers(5, 60))):
        t += draw(st.floats(0.1, 50.0))
        kind = draw(st.sampled_from("ccccst"))
        steps.append((kind, draw(st.integers(1, 20)) if kind == "c" else 0, t))
    return steps, draw(st.floats(1.0, 400.0))


@settings(max_examples=300, deadline=None)
@given(histories())
def test_after_any_retention_every_second_of_the_window_is_restorable(case: tuple[list[tuple[str, int, float]],
                                                                                   float]) -> None:
    steps, window = case
    chain = E1
    bucket: dict[str, ArchivedObject] = {}
    times: dict[int, float] = {0: 0.0}  # seq -> commit time (for the check below)
    seq = 0

    def upload(o: ArchivedObject) -> None:
        bucket[o.key] = o

    upload(snap(chain, 0, 0.0))
    for kind, n, t in steps:
        if kind == "c":
            for s in range(seq + 1, seq + n + 1):
                times[s] = t
            upload(chunk(chain, seq + 1, seq + n, t))
            seq += n
            continue
        if kind == "t":
            chain += 1 << 32  # a new primary (its term) takes over at seq: its base first
        upload(snap(chain, seq, t))
        for o in plan_retention(bucket.values(), chain, now=t, window=window):
            del bucket[o.key]
    now = steps[-1][2]
    rng = random.Random(seq)
    points = [now, max(now - window, 0.0)] + [rng.uniform(max(now - window, 0.0), now) for _ in range(20)]
    for point in points:
        plan = plan_point_in_time(bucket.values(), point)
        assert plan is not None, f"the point {point} of the window [{now - window}, {now}] is lost"
        # taken by the point, or the shard's origin (seq 0: nothing committed before it)
        assert plan.snapshot.at is not None and (plan.snapshot.at <= point or plan.snapshot.last == 0)
        # everything committed by the point is reached: the plan's records go past it (or to the end)
        reached = plan.seq
        committed = max(s for s, at in times.items() if at <= point)
        assert reached >= committed, f"the point {point}: records to {committed} committed, the plan reaches {reached}"
    # bounded: a chain holds snapshots at three positions at most (its base or floor, the newest two)
    per_chain: dict[int, set[int]] = {}
    for o in bucket.values():
        if o.snapshot:
            per_chain.setdefault(o.chain, set()).add(o.last)
    assert max(len(seqs) for seqs in per_chain.values()) <= 3


def record(seq: int, ts: float, mid: str) -> WalRecord:
    return WalRecord(0, 1, "delete", {"a": "x", "ids": [mid]}, ts, seq, E1)


async def test_reading_a_shard_at_a_point_stops_at_the_first_later_record(
        autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    bucket.objects[snapshot_key(1, E1, 10, 100.0)] = encode_snapshot(SnapshotBody(1, E1, 10, E1, [["base", b""]]))
    first = [record(11, 101.0, "a"), record(12, 102.0, "b"), record(13, 103.0, "c")]
    bucket.objects[chunk_key(1, E1, 11, 13, 103.0)] = encode_chunk(1, E1, first)
    bucket.objects[chunk_key(1, E1, 14, 15, 105.0)] = encode_chunk(1, E1, [record(14, 104.0, "d"),
                                                                            record(15, 105.0, "e")])
    bucket.objects[snapshot_key(1, E1, 15, 106.0)] = encode_snapshot(SnapshotBody(1, E1, 15, E1, [["later", b""]]))
    got = await load_shard_at(bucket, 1, 102.5, INLINE, LOG)
    assert got is not None and got.memories == [["base", b""]] and [r.seq for r in got.records] == [11, 12]
    got = await load_shard_at(bucket, 1, 104.0, INLINE, LOG)
    assert got is not None and [r.seq for r in got.records] == [11, 12, 13, 14]
    got = await load_shard_at(bucket, 1, 200.0, INLINE, LOG)
    assert got is not None and got.memories == [["later", b""]] and got.records == []
    with pytest.raises(PointOutOfReach) as raised:
        await load_shard_at(bucket, 1, 99.0, INLINE, LOG)
    assert raised.value.earliest == 100.0 and raised.value.shard == 1
    assert await load_shard_at(bucket, 2, 99.0, INLINE, LOG) is None  # nothing archived: nothing to restore
