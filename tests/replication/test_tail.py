"""The replication toolbox, pure: tails, fetch decisions, acknowledgements, lag."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.replication.progress import ShardProgress, needed
from dakera_actors.replication.tail import ShardTail, decide, feed, is_prefix, replaces
from dakera_actors.wal.record import WalRecord
from dakera_actors.wirebounds import epoch_of


def entry(seq: int, epoch: int = 7) -> WalRecord:
    return WalRecord(seq, 0, "put", {"n": seq}, 1.0, seq=seq, epoch=epoch)


def tail_of(*seqs: int, epoch: int = 7, limit: int = 100) -> ShardTail:
    tail = ShardTail(limit)
    for seq in seqs:
        tail.append(entry(seq, epoch), 0.0)
    return tail


def test_epochs_order_like_map_keys() -> None:
    assert epoch_of(1, 9) < epoch_of(2, 1) < epoch_of(2, 2)
    assert epoch_of(0, 0) == 0


def test_tail_keeps_the_newest_and_remembers_what_came_before() -> None:
    tail = tail_of(*range(1, 11), limit=4)
    assert [e.seq for e in tail.entries] == [7, 8, 9, 10]
    assert tail.base == (7, 6)
    assert tail.last == (7, 10)
    assert tail.epoch_at(6) == 7 and tail.epoch_at(10) == 7
    assert tail.epoch_at(5) is None and tail.epoch_at(11) is None
    assert [e.seq for e in tail.after(8, max_records=10)] == [9, 10]
    assert [e.seq for e in tail.after(6, max_records=2)] == [7, 8]


def test_tail_ignores_replays_and_marks_a_gap_unknown() -> None:
    tail = tail_of(1, 2, 3)
    tail.append(entry(2), 0.0)
    assert tail.last == (7, 3) and len(tail.entries) == 3
    tail.append(entry(6), 0.0)
    assert tail.base == (-1, 5) and tail.last == (7, 6)
    assert decide(tail, (7, 5)) == "snapshot"  # nobody's record 5 matches an unknown one


def test_decide_sends_records_to_a_replica_on_our_history() -> None:
    tail = tail_of(1, 2, 3, 4)
    assert decide(tail, (0, 0)) == "records"
    assert decide(tail, (7, 2)) == "records"
    assert decide(tail, (7, 4)) == "current"


def test_decide_copies_whole_when_the_tail_does_not_reach_back() -> None:
    tail = tail_of(*range(1, 21), limit=5)
    assert decide(tail, (7, 3)) == "snapshot"
    assert decide(tail, (0, 0)) == "snapshot"
    assert decide(tail, (7, 15)) == "records"


def test_a_diverged_replica_is_replaced_only_by_a_newer_history() -> None:
    # the new primary wrote 101.. under a newer epoch: the old primary's 101..105 are not ours
    new = ShardTail(100)
    new.reset((5, 100))
    for seq in (101, 102, 103):
        new.append(entry(seq, epoch=9), 0.0)
    assert decide(new, (5, 105)) == "snapshot"  # (9, 103) > (5, 105): ours is newer
    assert decide(new, (5, 100)) == "records"  # the common prefix
    # the promoted copy has written nothing yet: the returning one keeps its extra records
    idle = ShardTail(100)
    idle.reset((5, 100))
    assert decide(idle, (5, 105)) == "wait"
    assert decide(idle, (8, 100)) == "wait"  # same length, newer epoch: never discarded


def test_only_acks_on_our_history_count() -> None:
    tail = tail_of(1, 2, 3)
    assert is_prefix(tail, (7, 2)) and is_prefix(tail, (0, 0)) and is_prefix(tail, (7, 3))
    assert not is_prefix(tail, (6, 2)) and not is_prefix(tail, (7, 4))


@pytest.mark.parametrize(("mode", "copies", "want"), [
    ("primary", 3, 1), ("quorum", 1, 1), ("quorum", 2, 2), ("quorum", 3, 2), ("quorum", 5, 3),
    ("all", 2, 2), ("all", 3, 3), ("all", 1, 1),
])
def test_needed(mode: str, copies: int, want: int) -> None:
    assert needed(mode, copies) == want


def test_needed_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError):
        needed("most", 3)


def test_progress_counts_acks_and_measures_lag_from_the_oldest_missing_record() -> None:
    tail = ShardTail(100)
    for seq, at in ((1, 10.0), (2, 11.0), (3, 12.5)):
        tail.append(entry(seq), at)
    progress = ShardProgress()
    progress.assign(["b", "c"], now=9.0)
    assert progress.count(1, ["a", "b", "c"]) == 1
    assert progress.ack("b", 2, tail.last[1], now=13.0)
    assert not progress.ack("b", 1, tail.last[1], now=13.1)  # old news
    assert progress.count(2, ["a", "b", "c"]) == 2 and progress.count(3, ["a", "b", "c"]) == 1
    assert progress.count(2, ["a", "c"]) == 1  # b is not counted (a learner, or marked down)
    assert progress.lag("b", tail, now=14.0) == (1, pytest.approx(1.5))  # record 3 at 12.5
    assert progress.lag("c", tail, now=14.0) == (3, pytest.approx(4.0))  # record 1 at 10.0
    assert not progress.ack("stranger", 3, 3, now=14.0)
    progress.ack("c", 3, 3, now=14.0)
    assert progress.lag("c", tail, now=20.0) == (0, 0.0)
    progress.assign(["c"], now=21.0)
    assert set(progress.replicas) == {"c"}


def test_lag_beyond_the_tail_counts_from_when_the_replica_was_seen_behind() -> None:
    tail = tail_of(*range(1, 50), limit=4)
    progress = ShardProgress()
    progress.assign(["b"], now=100.0)
    assert progress.lag("b", tail, now=103.0) == (49, pytest.approx(3.0))


def test_feed_follows_installs() -> None:
    tails = {0: ShardTail(10)}
    feed(tails, WalRecord(1, 0, "put", {}, 1.0, seq=1, epoch=4), now=1.0)
    feed(tails, WalRecord(2, 0, "reset", {}, 1.0), now=1.0)
    assert tails[0].last == (0, 0)
    feed(tails, WalRecord(3, 0, "mark", {"seq": 40, "epoch": 6}, 1.0), now=1.0)
    assert tails[0].last == (6, 40)
    feed(tails, WalRecord(4, 0, "put", {}, 1.0, seq=41, epoch=6), now=1.0)
    assert tails[0].last == (6, 41)
    feed(tails, WalRecord(5, 3, "put", {}, 1.0, seq=1, epoch=6), now=1.0)  # no tail for shard 3: ignored


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=60), st.integers(1, 8))
def test_a_replica_following_decisions_always_ends_equal(epochs: list[int], limit: int) -> None:
    """Whatever the primary wrote and however short its tail, a replica that applies what
    decide() says (records, or a whole copy) ends at the primary's position."""
    primary = ShardTail(limit)
    history: list[WalRecord] = []
    epoch = 1
    for seq, bump in enumerate(epochs, start=1):
        epoch += bump
        e = entry(seq, epoch)
        primary.append(e, 0.0)
        history.append(e)
    replica: tuple[int, int] = (0, 0)
    for _ in range(len(history) + 2):
        verdict = decide(primary, replica)
        if verdict == "current":
            break
        if verdict == "snapshot":
            replica = primary.last
        else:
            assert verdict == "records"
            got = primary.after(replica[1], max_records=3)
            assert got and got[0].seq == replica[1] + 1
            replica = (got[-1].epoch, got[-1].seq)
    assert replica == primary.last


def test_entries_are_immutable() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry(1).seq = 2  # type: ignore[misc]


def test_a_whole_copy_replaces_only_an_older_history() -> None:
    assert replaces((7, 10), (7, 9)) and replaces((8, 1), (7, 9))
    assert not replaces((7, 9), (7, 9)) and not replaces((6, 20), (7, 9))
