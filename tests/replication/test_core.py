"""ReplicationCore, pure: roles on map changes, fetch verdicts, retakes, handovers, the takeover
plan and verdict, acknowledgements, drop timers, lag and status. No Trio, no I/O: time and member
states are arguments."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.membership.member import MemberState
from dakera_actors.replication.core import (
    DropCopy,
    HandoverConfirmed,
    ReplicationConfig,
    ReplicationCore,
    Retake,
    StartFetching,
    StartTakeover,
    takeover_quorum,
    takeover_refusal,
)
from dakera_actors.replication.messages import Positions
from dakera_actors.replication.rows import ReplicaStatus, ShardStatus
from dakera_actors.sharding.shardmap import ShardMap
from dakera_actors.store.tail import ShardTail
from dakera_actors.wal.record import WalRecord

ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD
SHARDS = 4


def smap(version: int, placement: list[list[str]], *, token: int = 1, down: list[str] | None = None,
         since: list[int] | None = None, width: int = 0) -> ShardMap:
    return ShardMap(token=token, version=version, rf=3, placement=placement, down=down or [],
                    since=since if since is not None else [0] * len(placement), width=width)


def core(me: str = "a", **config: float) -> ReplicationCore:
    return ReplicationCore(me, {s: ShardTail(100) for s in range(SHARDS)}, ReplicationConfig(**config))  # type: ignore[arg-type]


def write(c: ReplicationCore, shard: int, *seqs: int, epoch: int = 7, at: float = 0.0) -> None:
    for seq in seqs:
        c.tails[shard].append(WalRecord(seq, shard, "put", {"n": seq}, 1.0, seq, epoch), at)


def live(c: ReplicationCore, m: ShardMap, now: float = 0.0) -> None:
    """Install ``m`` and finish the takeover of every shard it gives ``c`` (nobody else has data)."""
    c.on_map(m, now, held=set(), from_cluster=True)
    plan = c.plan_takeover({member: ALIVE for member in m.members()})
    if plan is not None:
        verdict = c.takeover_sources(plan, {}, {s: (0, 0) for s in plan.shards})
        c.finish_takeover(plan, verdict.ready)


# -- roles on map changes ------------------------------------------------------------------------
def test_a_new_primary_syncs_first_and_replicas_fetch_from_their_primaries() -> None:
    c = core("a")
    effects = c.on_map(smap(1, [["a", "b"], ["b", "a"], ["c", "a"], ["b", "c"]]), 0.0, held=set(), from_cluster=False)
    assert c.syncing == {0} and c.live == set()
    assert StartTakeover((0,)) in effects
    assert {e.peer for e in effects if isinstance(e, StartFetching)} == {"b", "c"}
    assert c.replicated_from("b") == [1] and c.replicated_from("c") == [2]
    assert not c.writable(0) and c.taking_over(0)
    assert not c.writable(1)  # not ours to write


def test_without_a_map_everything_is_writable() -> None:
    c = core()
    assert c.writable(0) and not c.taking_over(0) and c.epoch() == 0
    assert c.ack_state(0, 5, "all").verdict == "satisfied"


def test_an_older_or_equal_map_changes_nothing() -> None:
    c = core()
    c.on_map(smap(2, [["a"]] * SHARDS), 0.0, held=set(), from_cluster=True)
    assert c.on_map(smap(2, [["b"]] * SHARDS), 1.0, held=set(), from_cluster=True) == []
    assert c.on_map(smap(1, [["b"]] * SHARDS), 1.0, held=set(), from_cluster=True) == []
    assert c.map is not None and c.map.version == 2


def test_a_role_moved_while_live_is_handed_over_until_confirmed_or_expired() -> None:
    c = core("a", handover_wait=30.0)
    live(c, smap(1, [["a", "b"]] * SHARDS))
    assert c.live == set(range(SHARDS))
    c.on_map(smap(2, [["b", "a"]] * SHARDS), 5.0, held=set(), from_cluster=True)
    assert c.live == set() and set(c.handing_over) == set(range(SHARDS))
    assert c.next_deadline() == 35.0
    # the new primary fetches at our final position: confirmed for that shard
    write(c, 0, 1, 2)
    answer = c.on_fetch("b", [[0, 7, 2]], 6.0)
    assert HandoverConfirmed(0) in answer.effects and 0 not in c.handing_over
    # a fetch from someone else, or not yet current, confirms nothing
    write(c, 1, 1, 2)
    assert c.on_fetch("b", [[1, 7, 1]], 6.0).effects == [] and 1 in c.handing_over
    assert c.on_fetch("x", [[2, 0, 0]], 6.0).effects == [] and 2 in c.handing_over
    c.tick(35.0, {})
    assert c.handing_over == {}  # nobody came for the rest: not holding a drain forever


def test_a_role_that_changed_hands_in_unseen_maps_is_taken_over_again() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b"]] * SHARDS, since=[10] * SHARDS))
    assert 0 in c.live
    # version 5 still names us, but another primary held shard 0 in between (its since moved)
    effects = c.on_map(smap(5, [["a", "b"]] * SHARDS, since=[50, 10, 10, 10]), 1.0, held=set(), from_cluster=True)
    assert c.syncing == {0} and c.live == {1, 2, 3}
    assert StartTakeover((0,)) in effects


def test_the_previous_primary_is_remembered_for_the_takeover() -> None:
    c = core("b")
    c.on_map(smap(1, [["a", "b"]] * SHARDS), 0.0, held=set(), from_cluster=True)
    c.on_map(smap(2, [["b"]] * SHARDS), 1.0, held=set(), from_cluster=True)  # a was dropped entirely
    assert c.previous == {s: "a" for s in range(SHARDS)}
    plan = c.plan_takeover({"a": ALIVE})
    assert plan is not None and plan.asks == {"a": [0, 1, 2, 3]}
    assert c.confirmations(plan, [0, 2]) == {"a": [0, 2]}


# -- fetch verdicts ---------------------------------------------------------------------------------
def test_a_fetch_acknowledges_and_gets_what_follows() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b", "c"]] * SHARDS))
    write(c, 0, 1, 2, 3)
    answer = c.on_fetch("b", [[0, 7, 1]], 1.0)
    assert [r.seq for r in answer.records] == [2, 3] and answer.snapshot == [] and answer.acked
    assert c.progress[0].replicas["b"].acked == 1
    again = c.on_fetch("b", [[0, 7, 1]], 1.1)
    assert not again.acked  # old news wakes nobody
    assert c.on_fetch("b", [[0, 7, 3]], 1.2).records == []


def test_a_fetch_stops_at_the_record_cap_and_the_byte_budget() -> None:
    c = core("a", max_fetch_records=2)
    live(c, smap(1, [["a", "b"]] * SHARDS))
    write(c, 0, 1, 2, 3)
    write(c, 1, 1, 2, 3)
    assert [(r.shard, r.seq) for r in c.on_fetch("b", [[0, 0, 0], [1, 0, 0]], 1.0).records] == [(0, 1), (0, 2)]
    sized = core("a")
    live(sized, smap(1, [["a", "b"]] * SHARDS))
    write(sized, 0, 1, 2, 3)
    got = sized.on_fetch("b", [[0, 0, 0]], 1.0, budget=25, size=lambda r: 10).records
    assert [r.seq for r in got] == [1, 2]
    # one record always goes, whatever its size (else a large one would never move)
    assert len(sized.on_fetch("b", [[0, 0, 0]], 1.0, budget=5, size=lambda r: 10).records) == 1


def test_a_replica_the_tail_cannot_serve_gets_a_whole_copy_and_strangers_are_ignored() -> None:
    c = core("a")
    c.tails[0] = ShardTail(2)
    live(c, smap(1, [["a", "b"]] * SHARDS))
    write(c, 0, 1, 2, 3, 4)
    answer = c.on_fetch("b", [[0, 0, 0], [99, 0, 0]], 1.0)
    assert answer.snapshot == [0] and answer.records == []


def test_a_replica_with_a_newer_history_makes_a_live_primary_retake_the_shard() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b"]] * SHARDS))
    write(c, 0, 1, 2)
    answer = c.on_fetch("b", [[0, 7, 5]], 1.0)  # b holds writes nobody replicated to us
    assert answer.effects == [Retake(0, "b", (7, 2))]
    assert 0 in c.syncing and 0 not in c.live and not c.writable(0)
    assert c.on_fetch("b", [[0, 7, 5]], 1.1).effects == []  # once


def test_acks_count_only_on_our_history_and_only_from_the_maps_replicas() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b", "c"]] * SHARDS))
    write(c, 0, 1, 2, 3)
    c.on_fetch("b", [[0, 6, 2]], 1.0)  # seq 2 of another epoch: not ours
    c.on_fetch("x", [[0, 7, 3]], 1.0)  # not a replica in the map
    assert c.ack_state(0, 1, "quorum").have == 1


# -- acknowledgements -------------------------------------------------------------------------------
def test_quorum_and_all_wait_for_that_many_counted_copies() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b", "c"]] * SHARDS))
    write(c, 0, 1, 2)
    assert c.ack_state(0, 2, "primary").verdict == "satisfied"
    state = c.ack_state(0, 2, "quorum")
    assert (state.verdict, state.have, state.need) == ("waiting", 1, 2)
    c.on_fetch("b", [[0, 7, 2]], 1.0)
    assert c.ack_state(0, 2, "quorum").verdict == "satisfied"
    assert c.ack_state(0, 2, "all").verdict == "waiting"
    c.on_fetch("c", [[0, 7, 1]], 1.0)
    assert c.ack_state(0, 1, "all").verdict == "satisfied" and c.ack_state(0, 2, "all").verdict == "waiting"


def test_learners_and_copies_marked_down_are_neither_counted_nor_waited_for() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b", "c", "L"]] * SHARDS, width=3, down=["c"]))
    write(c, 0, 1)
    c.on_fetch("L", [[0, 7, 1]], 1.0)
    state = c.ack_state(0, 1, "all")
    assert (state.verdict, state.have, state.need) == ("waiting", 1, 2)  # a, b count; c is down; L learns
    c.on_fetch("b", [[0, 7, 1]], 1.0)
    assert c.ack_state(0, 1, "all").verdict == "satisfied"


def test_a_primary_the_map_moved_or_marked_down_refuses_as_moved() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b", "c"]] * SHARDS))
    write(c, 0, 1)
    c.on_map(smap(2, [["b", "a", "c"]] * SHARDS), 1.0, held=set(), from_cluster=True)
    assert c.ack_state(0, 1, "quorum").verdict == "moved"
    d = core("a")
    live(d, smap(1, [["a", "b", "c"]] * SHARDS))
    d.on_map(smap(2, [["a", "b", "c"]] * SHARDS, down=["a"]), 1.0, held=set(), from_cluster=True)
    assert d.ack_state(0, 1, "quorum").verdict == "moved"


def test_an_unknown_ack_mode_is_refused() -> None:
    c = core("a")
    live(c, smap(1, [["a", "b"]] * SHARDS))
    with pytest.raises(ValueError):
        c.ack_state(0, 1, "most")


# -- the takeover -----------------------------------------------------------------------------------
def test_the_plan_asks_every_copy_and_every_other_reachable_member() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b", "c"], ["a", "d"], ["b", "a"], ["b", "c"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"a": ALIVE, "b": ALIVE, "c": DEAD, "d": SUSPECT, "e": ALIVE})
    assert plan is not None and plan.shards == [0, 1]
    # c is known down (the leader already chose over it); e holds no copy but may hold a dropped one
    assert plan.asks == {"b": [0, 1], "d": [0, 1], "e": [0, 1]}
    assert plan.blocked == frozenset()


def test_a_copy_nobody_knows_yet_blocks_its_shard() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b"], ["a", "z"], ["b", "a"], ["b", "a"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE})
    assert plan is not None and plan.blocked == frozenset({1})
    verdict = c.takeover_sources(plan, {"b": Positions([[0, 0, 0], [1, 0, 0]])}, {0: (0, 0), 1: (0, 0)})
    assert verdict.blocked == frozenset({1}) and verdict.ready == [0]


def test_the_newest_copy_wins_and_an_up_to_date_shard_is_ready_at_once() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b", "c"], ["a", "b", "c"], ["b", "a"], ["b", "a"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    answers = {"b": Positions([[0, 7, 10], [1, 7, 3]]), "c": Positions([[0, 8, 2], [1, 7, 2]])}
    verdict = c.takeover_sources(plan, answers, {0: (7, 5), 1: (7, 3)})
    assert verdict.sources == {0: verdict.sources[0]} and verdict.sources[0].member == "c"
    assert verdict.sources[0].position == (8, 2)  # a newer epoch beats a longer history
    assert verdict.ready == [1]  # ours is the newest already


def test_positions_of_shards_not_asked_are_ignored_and_silence_is_no_answer() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b"], ["b", "a"], ["b", "a"], ["b", "a"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    verdict = c.takeover_sources(plan, {"b": RuntimeError("down"), "c": Positions([[0, 9, 9], [2, 9, 9]])},
                                 {0: (0, 0)})
    assert verdict.sources[0].member == "c"  # c holds an old copy of 0 (a recent map dropped it)
    verdict = c.takeover_sources(plan, {"b": RuntimeError("down")}, {0: (0, 0)})
    assert verdict.ready == [0] and verdict.sources == {}


def test_a_refusal_blocks_the_shards_asked_of_that_member() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b"], ["a", "c"], ["b", "a"], ["b", "a"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    verdict = c.takeover_sources(plan, {"b": Positions([], "a newer map is installed here"),
                                        "c": Positions([[0, 0, 0], [1, 0, 0]])}, {0: (0, 0), 1: (0, 0)})
    assert verdict.blocked == frozenset({0, 1})  # b was asked about both (every reachable member is)
    assert verdict.ready == []


def test_the_takeover_read_quorum_meets_every_acknowledging_quorum() -> None:
    # copies - needed + 1: with RF 3, quorum acks sit on 2 copies, so 2 must be heard from
    assert [takeover_quorum("quorum", n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    assert [takeover_quorum("all", n) for n in (1, 2, 3)] == [1, 1, 1]  # every copy has every ack
    assert [takeover_quorum("primary", n) for n in (1, 2, 3)] == [1, 1, 1]  # no promise on failover


def test_a_takeover_that_hears_too_few_copies_waits_under_quorum() -> None:
    """Seed 4158 of the simulator: a new primary whose asks all failed went live on its own copy,
    behind an update a quorum had acknowledged, and its newer epoch discarded the update."""
    c = core("a")
    c.on_map(smap(1, [["a", "b", "c"], ["b", "a", "c"], ["b", "a", "c"], ["b", "a", "c"]]), 0.0, held=set(),
             from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    silent = {"b": RuntimeError("no answer"), "c": RuntimeError("no answer")}
    assert c.takeover_sources(plan, silent, {0: (7, 5)}, mode="quorum").blocked == frozenset({0})
    assert c.takeover_sources(plan, silent, {0: (7, 5)}, mode="primary").ready == [0]  # availability first
    assert c.takeover_sources(plan, silent, {0: (7, 5)}, mode="all").ready == [0]  # ours has every ack
    one = {"b": RuntimeError("no answer"), "c": Positions([[0, 7, 5]])}
    verdict = c.takeover_sources(plan, one, {0: (7, 5)}, mode="quorum")
    assert verdict.ready == [0] and verdict.blocked == frozenset()


def test_a_copy_marked_down_still_counts_in_the_takeover_quorum() -> None:
    """Seed 389: a partition cut a primary off with one replica; the other side marked both down. A
    new primary there must not write at a quorum of one over what that pair acknowledged."""
    c = core("a")
    c.on_map(smap(2, [["a", "b", "c"], ["b", "a"], ["b", "a"], ["b", "a"]], down=["b", "c"]), 0.0, held=set(),
             from_cluster=True)
    plan = c.plan_takeover({"b": DEAD, "c": DEAD})
    assert plan is not None
    assert c.takeover_sources(plan, {}, {0: (7, 5)}, mode="quorum").blocked == frozenset({0})


def test_a_takeover_also_needs_a_quorum_of_the_copies_of_the_map_before() -> None:
    """The drained primary's shard moved to a node whose new map lists two copies: the writes were
    acknowledged over the three copies of the map before, so two of those must answer too."""
    c = core("a")
    c.on_map(smap(1, [["b", "a", "c"]] * SHARDS), 0.0, held=set(), from_cluster=True)
    c.on_map(smap(2, [["a", "c"]] + [["b", "a", "c"]] * (SHARDS - 1)), 1.0, held=set(), from_cluster=True)
    assert c.prior == {0: ("b", "a", "c")}
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None and plan.shards == [0]
    # the new map alone (a, c: quorum 1) would let a go live unheard; the map before says 2 of b, a, c
    assert c.takeover_sources(plan, {}, {0: (7, 5)}, mode="quorum").blocked == frozenset({0})
    verdict = c.takeover_sources(plan, {"b": Positions([[0, 7, 6]])}, {0: (7, 5)}, mode="quorum")
    assert verdict.sources[0].member == "b" and verdict.blocked == frozenset()
    c.finish_takeover(plan, [0])
    assert c.prior == {} and c.live == {0}


def test_a_takeover_goes_live_only_if_the_role_has_not_changed_hands_meanwhile() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b"]] * SHARDS, since=[1] * SHARDS), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE})
    assert plan is not None
    # meanwhile: shard 1 moved to b, shard 2 moved away and back (its since changed)
    c.on_map(smap(3, [["a", "b"], ["b", "a"], ["a", "b"], ["a", "b"]], since=[1, 3, 3, 1]), 1.0, held=set(),
             from_cluster=True)
    went = c.finish_takeover(plan, [0, 1, 2, 3])
    assert went == [0, 3] and c.live == {0, 3} and c.syncing == {2}
    assert c.live_since == {0: 1, 3: 1}
    assert c.writable(0) and not c.writable(2)


def test_no_plan_without_shards_to_take_over() -> None:
    c = core("a")
    assert c.plan_takeover({}) is None
    c.on_map(smap(1, [["b", "a"]] * SHARDS), 0.0, held=set(), from_cluster=True)
    assert c.plan_takeover({"b": ALIVE}) is None


# -- drop timers ------------------------------------------------------------------------------------
def test_an_old_copy_is_dropped_late_and_only_while_every_copy_is_alive() -> None:
    c = core("a", drop_delay=10.0)
    c.on_map(smap(1, [["b", "a"]] * SHARDS), 0.0, held=set(), from_cluster=False)  # the stored map
    c.on_map(smap(2, [["b", "a"]] * SHARDS), 0.5, held=set(), from_cluster=True)
    c.on_map(smap(3, [["b", "c"], ["b", "a"], ["b", "c"], ["b", "a"]]), 1.0, held={0, 1, 2}, from_cluster=True)
    assert c.drop_at == {0: 11.0, 2: 11.0}  # shard 3 holds nothing here; 1 is still ours
    assert c.tick(10.9, {"b": ALIVE, "c": ALIVE}) == [] and c.next_deadline() == 11.0
    effects = c.tick(11.0, {"b": ALIVE, "c": SUSPECT})
    assert effects == [] and c.drop_at == {0: 21.0, 2: 21.0}  # c is unwell: wait
    assert c.tick(21.0, {"b": ALIVE, "c": ALIVE}) == [DropCopy(0, 3), DropCopy(2, 3)]
    assert c.drop_at == {} and c.next_deadline() == math.inf


def test_a_copy_named_again_is_not_dropped() -> None:
    c = core("a", drop_delay=10.0)
    c.on_map(smap(1, [["b", "a"]] * SHARDS), 0.0, held=set(), from_cluster=False)
    c.on_map(smap(2, [["b", "c"]] * SHARDS), 1.0, held={0}, from_cluster=True)
    assert c.drop_at == {0: 11.0}
    c.on_map(smap(3, [["b", "a"]] * SHARDS), 2.0, held={0}, from_cluster=True)
    assert c.drop_at == {}


def test_nothing_is_dropped_before_a_map_came_from_the_cluster() -> None:
    c = core("a")
    # only maps from the disk (a restarted node), and the first map seen: no drops yet
    c.on_map(smap(1, [["b", "c"]] * SHARDS), 0.0, held={0, 1}, from_cluster=False)
    c.on_map(smap(2, [["b", "c"]] * SHARDS), 1.0, held={0, 1}, from_cluster=False)
    assert c.drop_at == {} and not c.networked
    fresh = core("a")
    fresh.on_map(smap(1, [["b", "c"]] * SHARDS), 0.0, held={0}, from_cluster=True)  # nothing installed before
    assert fresh.drop_at == {} and not fresh.networked


def test_a_drop_due_while_the_map_names_us_again_is_cancelled() -> None:
    c = core("a", drop_delay=1.0)
    c.on_map(smap(1, [["b", "a"]] * SHARDS), 0.0, held=set(), from_cluster=False)
    c.on_map(smap(2, [["b", "c"]] * SHARDS), 0.0, held={0}, from_cluster=True)
    c.map = smap(3, [["b", "a"]] * SHARDS)  # as if installed without on_map (defensive path)
    assert c.tick(5.0, {"a": ALIVE, "b": ALIVE}) == [] and c.drop_at == {}


# -- lag and status ---------------------------------------------------------------------------------
def test_lag_and_health_count_only_fresh_counted_replicas() -> None:
    c = core("a", lag_alert_ms=1000, silent_replica=5.0)
    live(c, smap(1, [["a", "b", "c", "L"]] * SHARDS, width=3))
    write(c, 0, 1, at=10.0)
    write(c, 0, 2, at=11.0)
    c.on_fetch("b", [[0, 7, 2]], 11.0)  # current
    c.on_fetch("c", [[0, 7, 1]], 11.0)  # one behind since 11.0
    c.on_fetch("L", [[0, 0, 0]], 11.0)  # a learner far behind: not in the worst lag
    lag = c.shard_lag(0, 11.5)
    assert (lag.lag_records, lag.healthy, lag.replicas) == (1, 2, 3)
    assert lag.lag_ms == pytest.approx(500.0)
    lag = c.shard_lag(0, 12.5)
    assert lag.healthy == 1  # c is 1.5 s behind now
    assert c.shard_lag(0, 17.0).healthy == 0  # nobody fetched for 6 s
    assert c.under_replicated(17.0) == SHARDS


def test_local_status_rows_are_typed_and_empty_while_taking_over() -> None:
    c = core("a")
    c.on_map(smap(1, [["a", "b"], ["a", "b"], ["b", "a"], ["b", "a"]]), 0.0, held=set(), from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE})
    assert plan is not None
    c.finish_takeover(plan, [0])
    write(c, 0, 1, 2, at=1.0)
    c.on_fetch("b", [[0, 7, 1]], 2.0)
    rows = c.local_status(2.5)
    assert rows == [ShardStatus(0, 1500, 1, 0, 1, [ReplicaStatus("b", 1, True, 1, 1500)]),
                    ShardStatus(1, 0, 0, 0, 1, [])]


# -- invariants over any sequence of maps -----------------------------------------------------------
MEMBERS = ["a", "b", "c"]


@st.composite
def map_sequences(draw: st.DrawFn) -> list[ShardMap]:
    maps = []
    for version in range(1, draw(st.integers(1, 8)) + 1):
        placement = [draw(st.permutations(MEMBERS).map(lambda p: list(p[:draw(st.integers(1, 3))])))
                     for _ in range(SHARDS)]
        since = [draw(st.integers(0, 3)) for _ in range(SHARDS)]
        maps.append(smap(version, placement, since=since, down=draw(st.sampled_from([[], ["a"], ["b"]]))))
    return maps


@given(map_sequences(), st.lists(st.booleans(), min_size=8, max_size=8))
def test_roles_stay_consistent_whatever_maps_arrive(maps: list[ShardMap], finish: list[bool]) -> None:
    """Whatever maps arrive (and whether takeovers finish in between): a shard is never both live
    and syncing, only shards the map gives us are, a copy the map names is never due for deletion,
    a shard we do not lead never acknowledges, and no fetch loop is asked for ourselves."""
    c = core("a")
    for i, m in enumerate(maps):
        effects = c.on_map(m, float(i), held={0, 1, 2, 3}, from_cluster=True)
        assert all(e.peer != "a" for e in effects if isinstance(e, StartFetching))
        if finish[i]:
            live(c, m, float(i))
        mine = set(m.primaries_of("a"))
        assert not c.live & c.syncing
        assert c.live | c.syncing == mine
        assert not set(c.drop_at) & {s for s, copies in enumerate(m.placement) if "a" in copies}
        for shard in range(SHARDS):
            if shard not in c.live:
                assert c.ack_state(shard, 1, "quorum").verdict == "moved"


def test_takeover_refusal_answers_only_under_the_asked_map() -> None:
    asked = smap(2, [["a", "b"]])
    assert takeover_refusal(asked, asked, "") == ""
    assert takeover_refusal(smap(2, [["a", "b"]]), asked, "") == ""  # the same key, another copy
    assert takeover_refusal(None, asked, "") == "a newer map is installed here"
    assert takeover_refusal(smap(3, [["a", "b"]]), asked, "") == "a newer map is installed here"
    assert takeover_refusal(smap(1, [["a", "b"]]), asked, "stale token") == "stale token"


# -- copies lost with the disk -------------------------------------------------------------------
def forgetful_core(me: str = "a", until: float = 100.0) -> ReplicationCore:
    """A node started with every copy empty (a replaced disk): each vouches for nothing until ``until``."""
    return ReplicationCore(me, {s: ShardTail(100) for s in range(SHARDS)}, ReplicationConfig(),
                           lost=set(range(SHARDS)), lost_until=until)


def test_copies_lost_with_the_disk_make_no_takeover_quorum_of_their_own() -> None:
    """The 30-minute chaos run: two replaced copies (this node and b) outvoted c, the only copy
    holding the data, which was cut off; the new primary went live empty."""
    c = forgetful_core("a")
    c.on_map(smap(1, [["a", "b", "c"], ["b", "a", "c"], ["b", "a", "c"], ["b", "a", "c"]]), 0.0, held=set(),
             from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    empty_b = {"b": Positions([[0, 0, 0]], lost=[0]), "c": RuntimeError("cut off")}
    assert c.takeover_sources(plan, empty_b, {0: (0, 0)}, mode="quorum", now=5.0).blocked == frozenset({0})
    # b not lost (its (0, 0) is the truth: it acknowledged nothing), but our own copy vouches
    # for nothing: one of three is no quorum; once the time is up ours counts again
    honest_b = {"b": Positions([[0, 0, 0]]), "c": RuntimeError("cut off")}
    assert c.takeover_sources(plan, honest_b, {0: (0, 0)}, mode="quorum", now=5.0).blocked == frozenset({0})
    assert c.takeover_sources(plan, honest_b, {0: (0, 0)}, mode="quorum", now=100.0).ready == [0]
    # the copy with the data answers: caught up from it, whatever the others lost
    found = {"b": Positions([[0, 0, 0]], lost=[0]), "c": Positions([[0, 7, 20]])}
    verdict = c.takeover_sources(plan, found, {0: (0, 0)}, mode="quorum", now=5.0)
    assert verdict.sources[0].member == "c" and verdict.sources[0].position == (7, 20)
    # even primary mode needs one copy that vouches (the own empty copy is not one)
    assert c.takeover_sources(plan, empty_b, {0: (0, 0)}, mode="primary", now=5.0).blocked == frozenset({0})


def test_every_copy_answering_is_heard_whatever_they_lost() -> None:
    """A new cluster (every disk empty) or one restarting from its bucket: no copy vouches, but
    every copy answered, so the newest among them is all there is."""
    c = forgetful_core("a")
    c.on_map(smap(1, [["a", "b", "c"], ["b", "a", "c"], ["b", "a", "c"], ["b", "a", "c"]]), 0.0, held=set(),
             from_cluster=True)
    plan = c.plan_takeover({"b": ALIVE, "c": ALIVE})
    assert plan is not None
    everyone = {"b": Positions([[0, 0, 0]], lost=[0]), "c": Positions([[0, 0, 0]], lost=[0])}
    assert c.takeover_sources(plan, everyone, {0: (0, 0)}, mode="quorum", now=5.0).ready == [0]
    assert c.finish_takeover(plan, [0]) == [0]
    assert 0 not in c.lost  # taken over: it holds every acknowledged write now


def test_a_lost_copy_vouches_again_once_it_reaches_a_live_primarys_head_or_the_time_is_up() -> None:
    c = forgetful_core("a", until=100.0)
    assert c.forgetful(1, 99.0) and not c.forgetful(1, 100.0)  # bounded: see the README
    assert c.lost_of([0, 1], 5.0) == [0, 1]
    c.tails[1].append(WalRecord(1, 1, "put", {}, 1.0, 1, 7), 0.0)
    assert c.recovered([[1, 7, 2], [2, 7, 0]]) == []  # behind shard 1's head; 2 is not ours to judge yet
    c.tails[1].append(WalRecord(2, 1, "put", {}, 1.0, 2, 7), 0.0)
    assert c.recovered([[1, 7, 2]]) == [1]
    assert c.lost_of([0, 1], 5.0) == [0]


def test_a_live_primary_tells_each_fetch_its_heads() -> None:
    c = core("a")
    m = smap(1, [["a", "b"], ["a", "b"], ["b", "a"], ["b", "a"]])
    live(c, m)
    write(c, 0, 1, 2, 3)
    answer = c.on_fetch("b", [[0, 7, 3], [1, 0, 0], [2, 0, 0]], 1.0)
    assert answer.heads == [[0, 7, 3], [1, 0, 0]]  # shard 2 is not ours: no head from us


def test_a_routed_map_newer_than_the_cores_holds_primary_service_back() -> None:
    c = core("a")
    m1, m2 = smap(1, [["a", "b"]] * SHARDS), smap(2, [["b", "a"]] * SHARDS)
    assert not c.behind(None)
    assert c.behind(m1)  # the router has a map, the core none yet
    live(c, m1)
    assert not c.behind(m1) and c.behind(m2)
    c.on_map(m2, 1.0, held=set(), from_cluster=True)
    assert not c.behind(m2)


def test_a_node_starting_with_every_copy_empty_treats_them_all_as_lost() -> None:
    tails = {s: ShardTail(100) for s in range(SHARDS)}
    assert ReplicationCore.lost_at_start(tails) == set(range(SHARDS))
    tails[2].append(WalRecord(1, 2, "put", {}, 1.0, 1, 7), 0.0)
    assert ReplicationCore.lost_at_start(tails) == set()  # an intact disk: its empty copies are the truth
