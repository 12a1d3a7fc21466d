"""Snapshot at L plus the log after L rebuilds exactly the state a replay of the whole log does."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.wal import SnapshotStore, WalRecord, WriteAheadLog

SHARDS = range(4)
State = dict[int, dict[str, Any]]


def apply(state: State, rec: WalRecord) -> None:
    """The toy state machine: a key-value dict per shard."""
    shard = state.setdefault(rec.shard, {})
    if rec.op == "put":
        shard[rec.body["k"]] = rec.body["v"]
    elif rec.op == "delete":
        shard.pop(rec.body["k"], None)


def replay_all(wal: WriteAheadLog) -> State:
    state: State = {s: {} for s in SHARDS}
    for rec in wal.replay():
        apply(state, rec)
    return state


def restore(wal: WriteAheadLog, store: SnapshotStore) -> State:
    """What a restarting node does: each shard's snapshot, then the log after it."""
    state: State = {}
    covered: dict[int, int] = {}
    for shard in SHARDS:
        lsn, snap = store.latest(shard) or (0, {})
        state[shard], covered[shard] = snap, lsn
    for rec in wal.replay(after_lsn=min(covered.values())):
        if rec.lsn > covered[rec.shard]:
            apply(state, rec)
    return state


def ops(seed: int, n: int) -> list[tuple[int, str, Any, float]]:
    rng = random.Random(seed)
    return [(rng.choice(SHARDS), rng.choice(["put", "put", "delete"]),
             {"k": f"k{rng.randrange(8)}", "v": rng.choice([i, f"v{i}", b"\x01" * (i % 5)])}, float(i))
            for i in range(n)]


def check(seed: int, n: int, cuts: list[float]) -> int:
    """Log ``n`` ops with per-shard snapshots at ``cuts``; returns how many segments truncation deleted."""
    entries = ops(seed, n)
    with tempfile.TemporaryDirectory() as d:
        wal = WriteAheadLog.open(Path(d) / "wal", segment_bytes=200)
        store = SnapshotStore(Path(d) / "snapshots")
        live: State = {s: {} for s in SHARDS}
        # each shard snapshots at its own point in the log, as a real node would
        snap_at = {shard: int(cut * n) for shard, cut in zip(SHARDS, cuts, strict=True)}
        for i, entry in enumerate(entries):
            for shard in SHARDS:
                if snap_at[shard] == i:
                    store.write(shard, wal.last_lsn, live[shard])
            for rec in wal.append([entry]):
                apply(live, rec)
        for shard in SHARDS:
            if snap_at[shard] >= n:
                store.write(shard, wal.last_lsn, live[shard])
        wal.sync()

        assert replay_all(wal) == live
        assert restore(wal, store) == live
        # the Checkpointer.wal_floor rule: every shard can be rebuilt from any snapshot it keeps
        floor = min((store.oldest_lsn(s) or 0 for s in SHARDS), default=0)
        deleted = wal.truncate_before(floor + 1) if floor else 0
        wal.close()

        with WriteAheadLog.open(Path(d) / "wal", segment_bytes=200) as reopened:
            assert reopened.recovery.clean and reopened.last_lsn == n
            assert restore(reopened, store) == live
    return deleted


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 80), cuts=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_snapshot_plus_tail_equals_whole_replay(seed: int, n: int, cuts: list[float]) -> None:
    check(seed, n, cuts)


def test_the_same_after_truncation_dropped_most_of_the_log() -> None:
    assert check(seed=7, n=80, cuts=[0.7, 0.8, 0.9, 1.0]) >= 5
