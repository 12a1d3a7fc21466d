"""The chaos schedule (pure): reproducible from its seed, inside the fault model, every kind used."""

from __future__ import annotations

from collections import Counter

import pytest

from .faults import KINDS, NETWORK, PROCESS, excused, ring_cuts, schedule


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    a = schedule(7, 300, 5, KINDS, clock_nodes=(2,), spare=5)
    assert a == schedule(7, 300, 5, KINDS, clock_nodes=(2,), spare=5)
    assert a != schedule(8, 300, 5, KINDS, clock_nodes=(2,), spare=5)


@pytest.mark.parametrize("seed", range(20))
def test_steps_stay_inside_the_fault_model(seed: int) -> None:
    steps = schedule(seed, 600, 5, KINDS, clock_nodes=(2,), spare=5)
    joined = False
    end = 0.0
    for step in steps:
        assert step.at >= end, "steps never overlap: each one is healed before the next"
        end = step.at + step.length
        kinds = [f.kind for f in step.faults]
        assert sum(k in PROCESS for k in kinds) <= 1 and sum(k in NETWORK for k in kinds) <= 1
        if "wipe" in kinds:
            assert kinds == ["wipe"], "an empty disk is never combined with another fault"
        for fault in step.faults:
            if fault.kind in ("pause", "kill", "wipe", "drain", "clock-jump"):
                assert len(fault.nodes) == 1
            if fault.kind == "clock-jump":
                assert fault.nodes == (2,) and 0 < abs(fault.params[0]) <= 40
            if fault.kind == "join":
                assert not joined and fault.nodes == (5,)
                joined = True
            elif not joined and fault.kind != "netem":
                assert 5 not in fault.nodes + fault.other, "the spare is not touched before it joins"
            if fault.kind in ("partition", "isolate-minority"):
                assert 1 <= len(fault.nodes) < len(fault.other), "the side cut off is a minority"


def test_a_long_run_uses_every_kind() -> None:
    used = Counter(f.kind for s in schedule(3, 1800, 5, KINDS, clock_nodes=(2,), spare=5) for f in s.faults)
    assert set(used) == set(KINDS), set(KINDS) - set(used)
    assert used["join"] == 1


def test_unknown_kinds_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="tornado"):
        schedule(1, 60, 5, ["partition", "tornado"])


def test_a_ring_keeps_each_node_with_its_two_neighbours() -> None:
    order = (3, 5, 2, 1, 4)
    cuts = ring_cuts(order)
    for node in order:
        reaches = {b for b in order if b != node and (node, b) not in cuts}
        heard = {a for a in order if a != node and (a, node) not in cuts}
        i = order.index(node)
        assert reaches == heard == {order[i - 1], order[(i + 1) % 5]}


def test_a_read_in_a_window_may_miss_only_writes_acknowledged_after_the_window_began() -> None:
    windows = [(100.0, 130.0)]  # a partition from 100 s, healed at 115 s, plus the grace
    assert excused(105.0, (110.0, 111.0), windows)  # acknowledged by the majority during the cut
    assert excused(99.5, (110.0, 111.0), windows)  # within the slack of the fault's start
    # acknowledged long before the fault: the cut-off primary had it, so missing it is a bug
    assert not excused(40.0, (110.0, 111.0), windows)
    assert not excused(105.0, (131.0, 132.0), windows)  # the read is after the window
    assert not excused(105.0, (90.0, 95.0), windows)  # ... or before it
    assert excused(100.5, (100.6, 140.0), windows)  # a slow read that began in the window
    assert not excused(105.0, (110.0, 111.0), [])
