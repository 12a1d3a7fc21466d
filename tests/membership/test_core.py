"""SWIM core, pure: the state table, refutation, probes, indirect probes, suspicion, gossip, leave."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.membership.core import Send, StartPushPull, SwimConfig, SwimCore
from dakera_actors.membership.member import Member, MemberState, Update, supersedes
from dakera_actors.membership.messages import SwimAck, SwimGossip, SwimNack, SwimPing, SwimPingReq
from dakera_actors.membership.suspicion import Suspicion

A, S, D, L = (int(s) for s in (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT))
CFG = SwimConfig()


def core(self_id: str = "me", seeds: list[str] | None = None, now: float = 0.0, **cfg: Any) -> SwimCore:
    return SwimCore(SwimConfig(**cfg) if cfg else CFG, self_id=self_id, address=f"{self_id}:1", api=f"http://{self_id}",
                    meta={}, incarnation=10, seeds=seeds or [], rng=random.Random(1), now=now)


def with_peers(c: SwimCore, *ids: str, now: float = 0.0) -> SwimCore:
    for i in ids:
        c.apply(Update(i, A, 1, address=f"{i}:1", api=f"http://{i}"), now)
    return c


def member(state: int, inc: int) -> Member:
    return Member("x", "x:1", "", inc, MemberState(state), {})


# -- the state table -------------------------------------------------------------------
TABLE = [
    # (current state, current inc, update state, update inc, wins?)
    (A, 5, A, 4, False), (A, 5, A, 5, False), (A, 5, A, 6, True),
    (A, 5, S, 4, False), (A, 5, S, 5, True), (A, 5, S, 6, True),
    (A, 5, D, 4, False), (A, 5, D, 5, True), (A, 5, D, 6, True),
    (A, 5, L, 4, False), (A, 5, L, 5, True), (A, 5, L, 6, True),
    (S, 5, A, 5, False), (S, 5, A, 6, True), (S, 5, S, 5, False), (S, 5, S, 6, True),
    (S, 5, D, 5, True), (S, 5, L, 5, True), (S, 5, D, 4, False),
    (D, 5, A, 5, False), (D, 5, A, 6, True), (D, 5, S, 5, False), (D, 5, S, 6, True),
    (D, 5, D, 5, False), (D, 5, D, 6, True), (D, 5, L, 5, True),
    (L, 5, A, 5, False), (L, 5, A, 6, True), (L, 5, S, 5, False), (L, 5, D, 5, False), (L, 5, L, 6, True),
]


@pytest.mark.parametrize("cur,cur_inc,new,new_inc,wins", TABLE)
def test_supersedes_state_table(cur: int, cur_inc: int, new: int, new_inc: int, wins: bool) -> None:
    assert supersedes(member(cur, cur_inc), Update("x", new, new_inc)) is wins


@pytest.mark.parametrize("cur,cur_inc,new,new_inc,wins", TABLE)
def test_apply_follows_the_state_table(cur: int, cur_inc: int, new: int, new_inc: int, wins: bool) -> None:
    c = core()
    c.apply(Update("x", A, cur_inc, address="x:1"), 0.0)
    if cur != A:
        c.apply(Update("x", cur, cur_inc, by="other"), 0.0)
    assert c.members["x"].state == cur
    changed = c.apply(Update("x", new, new_inc, by="third"), 1.0)
    assert changed is wins
    expected = (new, new_inc) if wins else (cur, cur_inc)
    assert (c.members["x"].state, c.members["x"].incarnation) == expected


def test_unknown_member_only_enters_alive() -> None:
    c = core()
    for state in (S, D, L):
        assert not c.apply(Update("ghost", state, 1), 0.0)
    assert "ghost" not in c.members
    assert c.apply(Update("ghost", A, 1, address="g:1"), 0.0)
    assert c.members["ghost"].alive and c.members["ghost"].address == "g:1"


@pytest.mark.parametrize("state", [S, D, L])
def test_accusation_about_me_is_refuted_with_a_higher_incarnation(state: int) -> None:
    c = core()
    assert c.incarnation == 10
    assert c.apply(Update("me", state, 10, by="x"), 0.0)
    assert c.me.alive and c.incarnation == 11
    assert c.stats.refutations == 1
    assert any(u.id == "me" and u.state == A and u.incarnation == 11 for u in c.queue.pending())
    assert not c.apply(Update("me", state, 10, by="x"), 0.0)  # old news, already refuted
    if state != L:
        assert c.awareness.score >= 1


def test_knowledge_of_a_newer_me_is_outbid() -> None:
    c = core()  # e.g. restarted with a lower incarnation than peers remember
    c.apply(Update("me", A, 50), 0.0)
    assert c.incarnation == 51


@given(st.lists(st.tuples(st.sampled_from([A, S, D, L]), st.integers(0, 8)), max_size=40))
def test_view_never_goes_back_to_an_older_incarnation(updates: list[tuple[int, int]]) -> None:
    c = core()
    c.apply(Update("x", A, 0, address="x:1"), 0.0)
    seen = (0, A)
    for state, inc in updates:
        c.apply(Update("x", state, inc, by="y"), 0.0)
        m = c.members["x"]
        assert (m.incarnation, m.state) >= seen  # lexicographic: never older, never better news at one inc
        seen = (m.incarnation, m.state)


# -- probes ----------------------------------------------------------------------------
def sends(effects: list[Any], kind: type) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and isinstance(e.message, kind)]


def run_until(c: SwimCore, until: float, inbox: Any = None) -> list[Any]:
    out: list[Any] = []
    while (t := c.next_deadline()) <= until:
        out.extend(c.tick(t))
    return out


def first_ping(c: SwimCore) -> Send:
    """Run the core until it sends its first probe."""
    for _ in range(100):
        pings = sends(c.tick(c.next_deadline()), SwimPing)
        if pings:
            return pings[0]
    raise AssertionError("no probe sent")


def test_ping_is_answered_with_an_ack_only_for_the_right_target() -> None:
    c = core()
    (ack,) = c.handle(SwimPing(7, "me"), "peer:1", 0.0)
    assert ack.address == "peer:1" and isinstance(ack.message, SwimAck) and ack.message.seq == 7
    assert c.handle(SwimPing(8, "someone-else"), "peer:1", 0.0) == []


def test_probe_acked_directly_raises_no_suspicion() -> None:
    c = with_peers(core(), "p1")
    ping = first_ping(c)
    c.handle(SwimAck(ping.message.seq), "p1:1", c._probe.timeout_at - 0.01)  # type: ignore[union-attr]
    run_until(c, c._next_probe + 0.01)
    assert c.members["p1"].alive and c.stats.probes_failed == 0


def test_unanswered_probe_goes_indirect_then_suspects() -> None:
    c = with_peers(core(), "p1", "p2", "p3", "p4")
    ping = first_ping(c)
    target = ping.message.target
    effects = run_until(c, ping_time := c._probe.timeout_at)  # type: ignore[union-attr]
    reqs = sends(effects, SwimPingReq)
    assert len(reqs) == 3 and all(r.message.target == target for r in reqs)
    assert target not in {r.address.split(":")[0] for r in reqs}
    assert ping_time > 0
    run_until(c, c._next_probe)
    assert c.members[target].state == MemberState.SUSPECT and c.stats.suspicions == 1


def test_indirect_ack_is_relayed_and_a_silent_target_gets_a_nack() -> None:
    helper = with_peers(core("h"), "t")
    effects = helper.handle(SwimPingReq(99, "t", "t:1"), "asker:1", 0.0)
    (ping,) = sends(effects, SwimPing)
    assert ping.address == "t:1"
    (relay,) = sends(helper.handle(SwimAck(ping.message.seq), "t:1", 0.1), SwimAck)
    assert relay.address == "asker:1" and relay.message.seq == 99
    effects = helper.handle(SwimPingReq(100, "t", "t:1"), "asker:1", 1.0)
    nacks = sends(run_until(helper, 2.0), SwimNack)
    assert [(n.address, n.message.seq) for n in nacks] == [("asker:1", 100)]


def test_in_three_nodes_the_one_possible_confirmation_is_enough() -> None:
    """With 3 members only one can confirm a suspicion the other raised: waiting for a second
    (SUSPICION_MULT - 2 = 2) would hold every verdict at the long timeout (5.7 s, not 2 s)."""
    small = with_peers(core(), "x", "a")
    small.apply(Update("x", S, 1, by="a"), 0.0)
    assert small._suspicions["x"].k == 1
    low, high = small._suspicion_bounds()
    assert small._suspicions["x"].deadline == pytest.approx(high)  # alone, the accuser waits long
    small.apply(Update("x", S, 1, by="a"), 0.5)
    assert small._suspicions["x"].deadline == pytest.approx(high)  # the accuser again is no confirmation
    confirmed = with_peers(core(), "x", "a")
    confirmed.apply(Update("x", S, 1, by="me"), 0.0)
    confirmed.apply(Update("x", S, 1, by="a"), 0.1)
    assert confirmed._suspicions["x"].deadline == pytest.approx(low)
    bigger = with_peers(core(), "x", "a", "b", "c")
    bigger.apply(Update("x", S, 1, by="a"), 0.0)
    assert bigger._suspicions["x"].k == 2


def test_ack_through_a_helper_saves_the_target() -> None:
    c = with_peers(core(), "p1", "p2")
    ping = first_ping(c)
    run_until(c, c._probe.timeout_at)  # type: ignore[union-attr]
    c.handle(SwimAck(ping.message.seq), "p2:1", c._probe.timeout_at + 0.05)  # type: ignore[union-attr]
    run_until(c, c._next_probe)
    assert all(m.alive for m in c.members.values())


def test_suspicion_expires_into_dead_faster_with_confirmations() -> None:
    lone = with_peers(core(), "x", "a", "b", "c")
    lone.apply(Update("x", S, 1, by="a"), 0.0)
    crowd = with_peers(core(), "x", "a", "b", "c")
    crowd.apply(Update("x", S, 1, by="a"), 0.0)
    crowd.apply(Update("x", S, 1, by="b"), 0.1)
    crowd.apply(Update("x", S, 1, by="c"), 0.2)
    assert crowd._suspicions["x"].deadline < lone._suspicions["x"].deadline
    low, high = crowd._suspicion_bounds()
    assert lone._suspicions["x"].deadline == pytest.approx(high)
    assert crowd._suspicions["x"].deadline == pytest.approx(low)
    crowd.tick(low + 0.01)
    assert crowd.members["x"].state == MemberState.DEAD and crowd.stats.deaths_declared == 1


def test_suspicion_timer_shrinks_logarithmically() -> None:
    s = Suspicion(1, 0.0, k=3, min_timeout=2.0, max_timeout=12.0, origin="a")
    timeouts = [s.timeout]
    for by in ("a", "b", "b", "c", "d", "e"):
        s.confirm(by)
        timeouts.append(s.timeout)
    assert timeouts[0] == 12.0 and timeouts[-1] == 2.0
    assert timeouts == sorted(timeouts, reverse=True)
    assert timeouts[1] == 12.0 and timeouts[2] == timeouts[3]  # the origin and repeats do not count


def test_refuted_suspicion_is_cancelled() -> None:
    c = with_peers(core(), "x")
    c.apply(Update("x", S, 1, by="a"), 0.0)
    c.apply(Update("x", A, 2, address="x:1"), 0.5)
    c.tick(100.0)
    assert c.members["x"].alive


def test_buddy_system_tells_a_suspect_it_is_suspected() -> None:
    c = with_peers(core(), "x")
    c.apply(Update("x", S, 1, by="a"), 0.0)
    ping = first_ping(c)
    first = ping.message.updates[0]
    assert (first.id, first.state, first.incarnation) == ("x", S, 1)


def test_piggyback_respects_the_packet_budget_and_retransmit_limit() -> None:
    c = core()
    for i in range(200):
        c.apply(Update(f"node-{i:03}", A, 1, address=f"10.0.0.{i % 250}:7946", api="http://x:3300",
                       meta={"maintenance": False}), 0.0)
    from dakera_actors.wire import encode_frame
    (ack,) = c.handle(SwimPing(1, "me"), "p:1", 0.0)
    assert len(encode_frame(ack.message, "me")) <= 1400 - 29  # fits in a sealed packet
    assert ack.message.updates  # and carries news
    limit = c.queue.limit(c.reachable_count())
    for _ in range(limit * 40):
        c.handle(SwimPing(1, "me"), "p:1", 0.0)
    assert len(c.queue) == 0  # every update was sent its share of times, then dropped


def test_gossip_goes_to_a_few_members() -> None:
    c = with_peers(core(), *(f"p{i}" for i in range(10)))
    gossip = sends(c.tick(CFG.gossip_interval), SwimGossip)
    assert len(gossip) == CFG.gossip_nodes and len({g.address for g in gossip}) == CFG.gossip_nodes


def test_join_retries_seeds_with_backoff_until_a_push_pull_succeeds() -> None:
    c = core(seeds=["s1:1", "s2:1", "me:1", "s3:1", "s4:1"])
    first = [e for e in c.tick(0.0) if isinstance(e, StartPushPull)]
    assert len(first) == 3 and all(e.join for e in first)  # a few seeds at a time
    assert {e.address for e in first} <= {"s1:1", "s2:1", "s3:1", "s4:1"}  # never itself
    times = []
    t = 0.0
    while len(times) < 4:
        t = c.next_deadline()
        if any(isinstance(e, StartPushPull) and e.join for e in c.tick(t)):
            times.append(t)
    gaps = [b - a for a, b in zip([0.0] + times[:-1], times, strict=True)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]
    c.push_pull_done("s1:1", ok=True, join=True)
    assert not any(isinstance(e, StartPushPull) and e.join for e in c.tick(t + 100))


def test_push_pull_merge_and_state() -> None:
    c = core()
    c.merge([Update("a", A, 3, address="a:1"), Update("b", A, 1, address="b:1"), Update("b", D, 1)], 0.0)
    assert c.members["a"].alive and c.members["b"].state == MemberState.DEAD
    assert {u.id for u in c.local_state()} == {"me", "a", "b"}


def test_leave_announces_left_and_stops_probing() -> None:
    c = with_peers(core(), "a", "b")
    effects = c.leave(1.0)
    assert {e.address for e in effects} == {"a:1", "b:1"}
    assert all(e.message.updates[0].state == L for e in effects)
    assert c.me.state == MemberState.LEFT and c.incarnation == 11
    assert not sends(run_until(c, 10.0), SwimPing)
    assert not c.apply(Update("me", S, 11, by="a"), 11.0)  # no refuting once gone


def test_meta_change_bumps_incarnation_and_spreads() -> None:
    c = core()
    c.set_meta({"maintenance": True}, 0.0)
    assert c.incarnation == 11 and c.me.maintenance
    assert any(u.id == "me" and u.meta == {"maintenance": True} for u in c.queue.pending())


def test_dead_members_are_reaped_after_retention() -> None:
    c = with_peers(core(dead_retention=60.0), "x")
    c.apply(Update("x", D, 1, by="a"), 0.0)
    c.tick(30.0)
    assert "x" in c.members
    c.tick(61.0)
    assert "x" not in c.members


def test_push_pull_spacing_grows_with_the_cluster() -> None:
    from dakera_actors.membership.core import push_pull_scale

    assert [push_pull_scale(n) for n in (1, 32, 33, 64, 65, 1000)] == [1, 1, 2, 2, 3, 6]


def test_a_peer_joining_through_a_node_counts_as_joined() -> None:
    c = core(seeds=["s1:1"])
    assert not c.joined
    c.merge([Update("p", A, 1, address="p:1")], 0.0)
    assert not c.joined  # a periodic exchange is not a join
    c.merge([Update("q", A, 1, address="q:1")], 0.0, joining_peer=True)
    assert c.joined
