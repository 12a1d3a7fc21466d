"""The archive core's decisions, driven by hand (pure: no Trio, no store)."""

from __future__ import annotations

from dakera_actors.cold.core import (
    ArchiveConfig,
    ArchiveCore,
    Delete,
    Inspect,
    Refused,
    UploadChunk,
    UploadSnapshot,
)
from dakera_actors.cold.format import chunk_key, parse_key, snapshot_key
from dakera_actors.store.tail import ShardTail
from dakera_actors.wal.record import WalRecord

E = 3 << 32 | 1


def obj(key):
    o = parse_key(key)
    assert o is not None
    return o


class Shard:
    """One shard's position and tail, as the owner keeps them."""

    def __init__(self, limit=100):
        self.tail = ShardTail(limit)
        self.seq = 0

    def write(self, n, at):
        for _ in range(n):
            self.seq += 1
            self.tail.append(WalRecord(self.seq, 0, "put", {"x": "y" * 10}, 0.0, self.seq, E), at)

    @property
    def position(self):
        return self.tail.last


def setup(**cfg):
    core = ArchiveCore(ArchiveConfig(**{"flush": 1.0, **cfg}), size=lambda r: 100)
    shard = Shard()
    core.set_roles({0: E}, now=0.0)
    return core, shard


def tick(core, shard, now):
    return core.tick(now, {0: shard.position}, {0: shard.tail})


def test_inspect_then_base_then_chunks_within_the_flush_interval():
    core, shard = setup()
    assert tick(core, shard, 0.0) == [Inspect(0, E)]
    assert tick(core, shard, 0.1) == []  # busy: one call per shard at a time
    assert core.inspected(0, E, [], local_seq=0, now=0.1) == []
    # the archive never held the shard: an empty base says it was empty from then on
    assert tick(core, shard, 0.2) == [UploadSnapshot(0, E)]
    core.uploaded(0, E, obj(snapshot_key(0, E, 0, 0.2)), 0.25)
    assert tick(core, shard, 0.26) == []  # nothing written: nothing more to archive
    shard.write(3, at=0.3)
    (first,) = tick(core, shard, 0.8)  # records after the base go up in chunks
    assert isinstance(first, UploadChunk) and [r.seq for r in first.records] == [1, 2, 3]
    core.uploaded(0, E, obj(chunk_key(0, E, 1, 3)), 0.9, records=3)
    shard.write(2, at=1.0)
    assert tick(core, shard, 1.2) == []  # waits for half the flush interval to batch records
    (up,) = tick(core, shard, 1.5)
    assert isinstance(up, UploadChunk) and [r.seq for r in up.records] == [4, 5]
    assert core.figures(1.6, {0: shard.tail}).lag_seconds == 0.6000000000000001 or \
        abs(core.figures(1.6, {0: shard.tail}).lag_seconds - 0.6) < 1e-9
    core.uploaded(0, E, obj(chunk_key(0, E, 4, 5)), 1.6, records=2)
    assert core.figures(1.7, {0: shard.tail}).lag_seconds == 0.0


def test_a_shard_the_archive_already_holds_waits_for_a_write_before_its_base():
    core, shard = setup()
    assert tick(core, shard, 0.0) == [Inspect(0, E)]
    older = E - (1 << 32)
    assert core.inspected(0, E, [obj(snapshot_key(0, older, 0, 0.0))], local_seq=0, now=0.1) == []
    assert tick(core, shard, 0.2) == []  # an older term's base covers it: nothing to upload yet
    shard.write(3, at=0.3)
    assert tick(core, shard, 0.3) == [UploadSnapshot(0, E)]  # our chain's base goes up at once


def test_a_tail_that_no_longer_reaches_the_archive_gets_a_snapshot_and_retention():
    core, shard = setup()
    tick(core, shard, 0.0)
    core.inspected(0, E, [], local_seq=0, now=0.0)
    shard.write(1, at=0.0)
    tick(core, shard, 0.0)
    assert core.uploaded(0, E, obj(snapshot_key(0, E, 1)), 0.1) == []
    shard.write(150, at=1.0)  # more than the tail keeps
    assert tick(core, shard, 2.0) == [UploadSnapshot(0, E)]
    shard.write(1, at=2.0)
    assert core.uploaded(0, E, obj(snapshot_key(0, E, 151)), 2.1) == []  # two snapshots are kept
    (up,) = tick(core, shard, 3.0)
    assert isinstance(up, UploadChunk) and [r.seq for r in up.records] == [152]
    core.uploaded(0, E, obj(chunk_key(0, E, 152, 152)), 3.1, records=1)
    core._current(0, E).needs_snapshot = True
    shard.write(1, at=3.2)
    assert tick(core, shard, 3.3) == [UploadSnapshot(0, E)]
    (delete,) = core.uploaded(0, E, obj(snapshot_key(0, E, 153)), 3.4)
    assert isinstance(delete, Delete) and [o.key for o in delete.objects] == [snapshot_key(0, E, 1)]


def test_a_backlog_over_its_bound_is_replaced_by_one_snapshot():
    core, shard = setup(backlog_limit=1000)
    tick(core, shard, 0.0)
    core.inspected(0, E, [], local_seq=0, now=0.0)
    shard.write(1, at=0.0)
    tick(core, shard, 0.0)
    core.uploaded(0, E, obj(snapshot_key(0, E, 1)), 0.0)
    shard.write(11, at=1.0)  # 11 records of 100 bytes: over the 1000-byte bound
    assert tick(core, shard, 1.0) == [UploadSnapshot(0, E)]  # at once, not after half an interval


def test_the_circuit_opens_after_repeated_failures_and_lets_one_probe_through():
    core, shard = setup(breaker_failures=3, breaker_base=1.0)
    tick(core, shard, 0.0)
    core.inspected(0, E, [], local_seq=0, now=0.0)
    shard.write(1, at=0.0)
    now = 0.0
    for _ in range(3):
        assert tick(core, shard, now) == [UploadSnapshot(0, E)]
        core.uploaded(0, E, None, now)
        now += 0.1
    assert core.circuit_open and core.open_until == 0.2 + 1.0
    assert tick(core, shard, 1.0) == []  # open: no calls at all
    assert tick(core, shard, 1.3) == [UploadSnapshot(0, E)]  # the probe
    core.uploaded(0, E, None, 1.4)
    assert core.open_until == 1.4 + 2.0  # doubled
    assert tick(core, shard, 3.0) == []
    assert tick(core, shard, 3.5) == [UploadSnapshot(0, E)]
    core.uploaded(0, E, obj(snapshot_key(0, E, 1)), 3.6)
    assert not core.circuit_open and core.failures == 0


def test_a_restarted_primary_continues_its_chain_and_refuses_to_overwrite_what_it_lost():
    core, shard = setup()
    shard.write(7, at=0.0)
    tick(core, shard, 0.0)
    listing = [obj(snapshot_key(0, E, 3)), obj(chunk_key(0, E, 4, 5))]
    assert core.inspected(0, E, listing, local_seq=7, now=0.0) == []
    (up,) = tick(core, shard, 1.0)
    assert isinstance(up, UploadChunk) and [r.seq for r in up.records] == [6, 7]
    # a node that has less than its own chain archived (its disk was replaced) stays off the archive
    core2, shard2 = setup()
    shard2.write(2, at=0.0)
    tick(core2, shard2, 0.0)
    assert core2.inspected(0, E, listing, local_seq=2, now=0.0) == [Refused(0, E, 5, 2)]
    assert tick(core2, shard2, 5.0) == []


def test_a_new_term_starts_a_new_chain_and_old_reports_are_ignored():
    core, shard = setup()
    tick(core, shard, 0.0)
    core.inspected(0, E, [], local_seq=0, now=0.0)
    shard.write(1, at=0.0)
    tick(core, shard, 0.0)
    e2 = E + 1
    core.set_roles({0: e2}, now=0.5)
    assert core.uploaded(0, E, obj(snapshot_key(0, E, 1)), 0.6) == []  # the old term's: ignored
    assert tick(core, shard, 0.7) == [Inspect(0, e2)]
    core.set_roles({}, now=0.8)
    assert tick(core, shard, 0.9) == [] and core.shards == {}
