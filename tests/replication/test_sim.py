"""Replication and shard-map leadership in a discrete-event simulation (tests/replication/sim.py):
the real ReplicationCore and MapLeader of every node, random fault schedules, checked after every
step and at the end.

CI runs ``REPL_SIM_SCHEDULES`` schedules (10,000 by default: half ``quorum``, half ``all``) in
chunks, so progress shows; ``make sim SCHEDULES=1000000`` runs many more outside pytest."""

from __future__ import annotations

import dataclasses
import os

import pytest

from . import sim
from .sim import LEASE_TTL, Schedule, Tally, batch, report_failure, run

SCHEDULES = int(os.environ.get("REPL_SIM_SCHEDULES", "2000"))  # make sim-sweep: 10,000
CHUNKS = 10
MIN_ACKNOWLEDGED = 0.6  # below this, a run says little (most writes answered 503 or timed out)

# -- what the simulator found in the protocol ------------------------------------------------------
# Fixed: a new primary went live with its own copy when its position queries went unanswered (it
# was mute, or cut off), behind writes a quorum had acknowledged, and its newer epoch discarded them
# when the histories met (seed 4158 in the CI range, one failure at a time; seeds 982, 273, 70 and
# 389 when failures pile up). ReplicationCore.takeover_sources now waits for answers from enough
# counted copies, of this map and of the one before, to meet every acknowledging quorum
# (replication.core.takeover_quorum).
LONG_LEASE = ("safety assumes the lease runs out before SWIM declares the majority dead (defaults: 1 s lease, "
              ">= 2 s to Dead); with a longer lease a leader cut off alone publishes a map marking the majority down "
              "and acknowledges quorum writes by itself. The configuration refuses such a lease (exit 2: "
              "tests/unit/test_config.py); this pins why")

#: seeds of the CI range whose one-failure-at-a-time schedule fails, (mode, seed) -> why: the random
#: chunks leave them out, and each must be pinned by a strict xfail test of its own (none today)
KNOWN: dict[tuple[str, int], str] = {}


def check(tally: Tally) -> None:
    if tally.failures:
        pytest.fail(report_failure(tally.failures[0]) + f"\nall failing seeds: {[o.schedule.seed for o in tally.failures]}",
                    pytrace=False)
    # not vacuous: many writes, most of them acknowledged
    assert tally.writes > 10 * tally.schedules
    assert tally.share() >= MIN_ACKNOWLEDGED, f"only {tally.share():.0%} of writes acknowledged"


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("mode", ["quorum", "all"])
def test_random_schedules_keep_every_acknowledged_write(mode: str, chunk: int) -> None:
    """One failed node at a time (crash with or without its disk, restart, partition, one-way cut,
    deaf, mute), on top of delay, packet loss, drifting clocks, a join and a drain, and two nodes
    that may believe they lead: no acknowledged write is lost or undone for a reader, no shard has
    two primaries acknowledging in one epoch, and every shard has its copies, all equal, once the
    storm is over."""
    per = SCHEDULES // 2 // CHUNKS
    skip = frozenset(seed for (m, seed) in KNOWN if m == mode)
    check(batch(mode, range(chunk * per, (chunk + 1) * per), skip=skip))


def test_primary_acks_loss_window_is_measured() -> None:
    """``primary`` acknowledges on the primary's WAL alone: the README says what it can lose.
    Measured, not asserted to be zero (figures in the output with -s), over faults that pile up;
    but it must see losses, or the checker would be blind to them."""
    tally = batch("primary", range(max(200, SCHEDULES // 20)), faults="any")
    print(f"\nprimary: {tally.schedules} schedules: {tally.loss_window()}")
    assert not tally.failures, report_failure(tally.failures[0])
    assert tally.windows and tally.lost > 0


def test_faults_that_pile_up_are_measured() -> None:
    """Beyond the README's promise (several nodes failed at once): how often quorum loses an
    acknowledged write, printed with -s; the seeds analysed are pinned below."""
    tally = batch("quorum", range(max(100, SCHEDULES // 50)), faults="any")
    failing = [o.schedule.seed for o in tally.failures]
    print(f"\nquorum, faults piling up: {len(failing)} of {tally.schedules} schedules lose or undo an "
          f"acknowledged write: {failing[:20]}")
    assert tally.schedules and tally.writes > 0


# -- seeds that once failed through a fault of the model, kept as regression cases -------------
REGRESSIONS = [
    (8, "quorum"),  # a takeover's answers were matched by the wrong id: the shard never went live
    (205, "quorum"),  # two crashes that took their disks: a quorum of copies is not two disks
    (307, "quorum"),  # a confirmation to the previous primary was applied after going live (the actor awaits it)
    (327, "quorum"),  # a write on the one live copy, which then lost its disk
    (377, "quorum"),  # a takeover fetch whose answer was lost waited 4 timeouts, not one
    (3, "quorum"),  # a member that joined in maintenance never got a map (it pulls the gossiped header)
    (840, "all"),
]


@pytest.mark.parametrize(("seed", "mode"), REGRESSIONS)
def test_regression_seeds(seed: int, mode: str) -> None:
    outcome = run(Schedule.generate(seed, mode, faults="any"))
    assert outcome.failure is None, report_failure(outcome)


# -- what the simulator found, now fixed (the takeover's read quorum): regression cases ------------
def test_a_takeover_that_hears_no_other_copy_does_not_go_live() -> None:
    """Seed 4158 (one failure at a time): the leader, mute, got a map moving a drained primary's
    shard to itself and went live on its own copy, missing an update a quorum acknowledged."""
    outcome = run(Schedule.generate(4158, "quorum"))
    assert outcome.failure is None, report_failure(outcome)


def test_restarted_replica_with_a_stale_map_does_not_lose_acknowledged_writes() -> None:
    """Seed 982: a node restarting with a stale stored map acknowledged, as a replica, writes of a
    deposed primary; the new primary must hear from enough old copies to find them."""
    outcome = run(dataclasses.replace(Schedule.generate(982, "quorum", faults="any"), excuse_down=False))
    assert outcome.failure is None, report_failure(outcome)


def test_a_map_only_a_cut_off_leader_installed_does_not_outrank_acknowledged_writes() -> None:
    """Seed 273: a leader cut off from the majority, lease still valid, moved a shard's primary to
    itself; hearing no copy, it now waits instead of serving."""
    outcome = run(Schedule.generate(273, "quorum", faults="any"))
    assert outcome.failure is None, report_failure(outcome)


def test_a_leader_without_a_map_does_not_lose_acknowledged_writes() -> None:
    """Seed 70: a just-joined leader with no map planned from scratch (version 1 under its token),
    moving primaries; the new primaries' takeovers must still find every acknowledged write."""
    outcome = run(Schedule.generate(70, "quorum", faults="any"))
    assert outcome.failure is None, report_failure(outcome)


def test_a_majority_of_copies_cut_off_at_once_keeps_its_acknowledged_writes() -> None:
    """Seed 389: a partition cut a shard's primary off with one replica; the other side marked both
    down, and its new primary would have written at a quorum of one: the read quorum counts the
    copies marked down, so it waits for one of them."""
    outcome = run(dataclasses.replace(Schedule.generate(389, "quorum", faults="any"), excuse_down=False))
    assert outcome.failure is None, report_failure(outcome)


# -- beyond the README's promise: a strict expected failure ---------------------------------------
@pytest.mark.xfail(strict=True, reason=LONG_LEASE)
def test_a_lease_that_outlives_the_dead_verdict_loses_quorum_writes() -> None:
    schedule = dataclasses.replace(Schedule.generate(21, "quorum", faults="any"), ttl=LEASE_TTL * 2, excuse_down=False)
    outcome = run(schedule)
    assert outcome.failure is None, outcome.failure


# -- the machinery -------------------------------------------------------------------------------
def test_a_failure_prints_the_seed_and_a_shrunk_trace() -> None:
    failing = dataclasses.replace(Schedule.generate(21, "quorum", faults="any"), ttl=LEASE_TTL * 2, excuse_down=False)
    outcome = run(failing)
    assert outcome.failure is not None
    text = report_failure(outcome)
    assert "seed=21" in text and "shrunk schedule" in text
    shrunk = text.split("-- shrunk schedule")[1].split("-- its trace:")[0]
    events = [line for line in shrunk.splitlines() if line.startswith("t=")]
    assert 0 < len(events) < len(failing.events)
    assert "failure: acknowledged writes lost" in text or "failure: read" in text


def test_schedules_are_deterministic() -> None:
    a, b = run(Schedule.generate(4242, "quorum")), run(Schedule.generate(4242, "quorum"))
    assert (a.steps, a.acked, a.writes, a.trace) == (b.steps, b.acked, b.writes, b.trace)


def test_the_checker_catches_a_replica_that_loses_a_record() -> None:
    """A mutation: a replica that logs a replicated record but forgets what it wrote (a WAL without
    fsync would) must make some schedule fail."""
    original = sim.SimNode.apply

    def forgetful(self: sim.SimNode, record: sim.WalRecord) -> None:
        original(self, record)
        if record.seq == 2 and self.map is not None and self.map.owner(record.shard) != self.id:
            self.shard(record.shard).data.pop(record.body[0], None)

    sim.SimNode.apply = forgetful  # type: ignore[method-assign]
    try:
        found = next((seed for seed in range(50) if run(Schedule.generate(seed, "quorum")).failure), None)
    finally:
        sim.SimNode.apply = original  # type: ignore[method-assign]
    assert found is not None


def test_the_checker_catches_a_primary_that_counts_acknowledgements_wrong() -> None:
    """A mutation: ``quorum`` counted as ``primary`` must lose acknowledged writes somewhere."""
    original = sim.SimNode.write_state

    def hasty(self: sim.SimNode, shard: int, seq: int, mode: str) -> str:
        return original(self, shard, seq, "primary")

    sim.SimNode.write_state = hasty  # type: ignore[method-assign]
    try:
        found = next((seed for seed in range(300) if run(Schedule.generate(seed, "quorum")).failure), None)
    finally:
        sim.SimNode.write_state = original  # type: ignore[method-assign]
    assert found is not None


def test_a_schedule_without_faults_converges_and_loses_nothing() -> None:
    schedule = Schedule.generate(7, "all")
    calm = dataclasses.replace(schedule, events=[e for e in schedule.events if e.kind == "op"], loss=0.0)
    outcome = run(calm)
    assert outcome.failure is None
    assert outcome.acked >= 0.9 * outcome.writes and not outcome.lost
