"""The replication history checker (``history.py``) judged on histories written by hand: it must
flag each kind of violation and accept what an operation of unknown outcome may leave."""

from __future__ import annotations

import pytest

from .history import ABSENT, History, Op


def history(*ops: tuple[str, str, float, float, str, object]) -> History:
    h = History()
    for kind, mid, start, end, outcome, value in ops:
        h.ops.append(Op(kind, mid, "agent-1", "node-1", (start, 0), (end, 0), outcome, value))
    return h


def test_a_lost_acknowledged_write_is_flagged() -> None:
    h = history(("store", "a", 0, 1, "ok", 0))
    assert h.check_final({"a": ABSENT})
    assert not h.check_final({"a": 0})


def test_a_write_of_unknown_outcome_may_or_may_not_be_there() -> None:
    h = history(("store", "a", 0, 1, "unknown", 0))
    assert not h.check_final({"a": ABSENT}) and not h.check_final({"a": 0})
    failed = history(("store", "a", 0, 1, "failed", 0))
    assert failed.check_final({"a": 0}), "a write refused for sure (4xx) must not appear"


def test_a_lost_acknowledged_update_is_flagged_unless_a_later_unknown_one_replaced_it() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 3, "ok", 1), ("update", "a", 4, 5, "unknown", 2))
    assert h.check_final({"a": 0}), "the final read is older than the newest acknowledged update"
    assert not h.check_final({"a": 1}) and not h.check_final({"a": 2})
    earlier_unknown = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 3, "unknown", 1),
                              ("update", "a", 4, 5, "ok", 2))
    assert earlier_unknown.check_final({"a": 1}), "an unknown update before the acknowledged one is superseded"


def test_a_forgotten_memory_that_comes_back_is_flagged() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("forget", "a", 2, 3, "ok", ABSENT))
    assert h.check_final({"a": 0})
    assert not h.check_final({"a": ABSENT})
    unknown = history(("store", "a", 0, 1, "ok", 0), ("forget", "a", 2, 3, "unknown", ABSENT))
    assert not unknown.check_final({"a": 0}) and not unknown.check_final({"a": ABSENT})


def test_a_read_older_than_a_write_acknowledged_before_it_began_is_flagged() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 3, "ok", 1),
                ("read", "a", 4, 5, "ok", 0))
    assert h.check_reads()
    fresh = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 3, "ok", 1), ("read", "a", 4, 5, "ok", 1))
    assert not fresh.check_reads()


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 6, "ok", 1),
                ("read", "a", 3, 4, "ok", 0), ("read", "a", 3, 4, "ok", 1))
    assert not h.check_reads()
    # a write invoked after the read ended cannot be what it saw
    late = history(("store", "a", 0, 1, "ok", 0), ("read", "a", 2, 3, "ok", 1), ("update", "a", 4, 5, "ok", 1))
    assert late.check_reads()
    # a read that began before the store was acknowledged may find nothing
    early = history(("store", "a", 0, 2, "ok", 0), ("read", "a", 1, 3, "ok", ABSENT))
    assert not early.check_reads()
    after = history(("store", "a", 0, 2, "ok", 0), ("read", "a", 3, 4, "ok", ABSENT))
    assert after.check_reads()


def test_a_read_through_a_cut_off_node_is_excused_only_within_its_window() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("update", "a", 2, 3, "ok", 1), ("read", "a", 4, 5, "ok", 0))
    h.cut_off.append(("node-1", (3.5, 0), (4.5, 0)))
    assert not h.check_reads()
    h.cut_off[0] = ("node-2", (3.5, 0), (4.5, 0))
    assert h.check_reads()
    h.cut_off[0] = ("node-1", (5.5, 0), (6, 0))
    assert h.check_reads()


def test_operations_at_one_clock_reading_are_ordered_by_tick() -> None:
    h = History()
    h.ops += [Op("store", "a", "agent-1", "node-1", (1.0, 1), (1.0, 2), "ok", 0),
              Op("read", "a", "agent-1", "node-1", (1.0, 3), (1.0, 4), "ok", ABSENT)]
    assert h.check_reads(), "the read began after the store was acknowledged, at the same clock reading"


def test_the_share_of_acknowledged_writes_counts_every_write() -> None:
    h = history(("store", "a", 0, 1, "ok", 0), ("store", "b", 0, 1, "unknown", 0),
                ("store", "c", 0, 1, "failed", 0), ("read", "a", 2, 3, "ok", 0))
    assert h.share_acknowledged() == 1 / 3
    assert History().share_acknowledged() == 0.0


def test_an_unavailable_cluster_cannot_pass() -> None:
    from .test_replication_history import MIN_WRITES, judge

    unavailable = history(*[("store", f"m{i}", i, i + 0.5, "unknown", 0) for i in range(MIN_WRITES * 2)])
    with pytest.raises(AssertionError, match="acknowledged"):
        judge(unavailable, {f"m{i}": ABSENT for i in range(MIN_WRITES * 2)}, seed=0)
    healthy = history(*[("store", f"m{i}", i, i + 0.5, "ok", 0) for i in range(MIN_WRITES)])
    judge(healthy, {f"m{i}": 0 for i in range(MIN_WRITES)}, seed=0)
