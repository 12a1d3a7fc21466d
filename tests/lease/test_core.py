"""The lease core, pure: grants, refusals, expiry, renewal, step-down, tokens, restart, fencing."""

from __future__ import annotations

import random

import pytest

from dakera_actors.lease.core import (
    Broadcast,
    ClusterConfig,
    LeaseConfig,
    LeaseCore,
    LeaseState,
    Persist,
    Send,
    TokenRefused,
)
from dakera_actors.lease.messages import (
    ConfigCommit,
    LeaseAnnounce,
    LeaseGrant,
    LeasePreVote,
    LeasePreVoteReply,
    LeaseRelease,
    LeaseRequest,
)

CFG = LeaseConfig(ttl=1.0, drift_margin=0.15, bootstrap_expect=3)
VOTERS = ClusterConfig(("a", "b", "c"), 1)


def voter(self_id: str = "b", state: LeaseState | None = None, now: float = 0.0, restarted: bool = False) -> LeaseCore:
    core = LeaseCore(CFG, self_id=self_id, state=state or LeaseState(config=VOTERS), now=now,
                     rng=random.Random(1), restarted=restarted)
    core.on_members({"a", "b", "c"}, set(), now)
    return core


def answer(core: LeaseCore, candidate: str, req: LeaseRequest, now: float) -> LeaseGrant:
    effects = core.handle(req, candidate, now)
    (send,) = [e for e in effects if isinstance(e, Send)]
    assert send.to == candidate
    if send.message.granted and not req.renew:
        assert isinstance(effects[0], Persist)  # the promise is durable before it is given
    return send.message


def test_voter_grants_one_lease_per_token_and_keeps_its_promise() -> None:
    v = voter()
    assert answer(v, "a", LeaseRequest(5, 1.0, config_version=1), 0.0).granted
    refused = answer(v, "c", LeaseRequest(6, 1.0, config_version=1), 0.5)
    assert not refused.granted and "promised to a" in refused.reason and refused.highest == 5
    assert not answer(v, "c", LeaseRequest(6, 1.0, config_version=1), 1.14).granted  # ttl + margin
    assert answer(v, "c", LeaseRequest(6, 1.0, config_version=1), 1.16).granted


def test_voter_never_grants_a_token_it_has_seen() -> None:
    v = voter()
    assert answer(v, "a", LeaseRequest(5, 1.0, config_version=1), 0.0).granted
    for token in (4, 5):
        assert not answer(v, "c", LeaseRequest(token, 1.0, config_version=1), 10.0).granted


def test_renewal_extends_only_the_holders_lease() -> None:
    v = voter()
    answer(v, "a", LeaseRequest(5, 1.0, config_version=1), 0.0)
    assert answer(v, "a", LeaseRequest(5, 1.0, renew=True, config_version=1), 0.9).granted
    assert not answer(v, "c", LeaseRequest(7, 1.0, config_version=1), 1.5).granted  # extended to 2.05
    assert not answer(v, "c", LeaseRequest(5, 1.0, renew=True, config_version=1), 1.5).granted


def test_non_voters_and_stale_configurations_are_refused() -> None:
    v = voter()
    assert "not a voter" in answer(v, "z", LeaseRequest(5, 1.0, config_version=1), 0.0).reason
    v2 = voter(state=LeaseState(config=ClusterConfig(("a", "b", "c"), 4)))
    assert "stale configuration" in answer(v2, "a", LeaseRequest(5, 1.0, config_version=3), 0.0).reason


def test_restarted_voter_stays_quiet_for_one_promise_period() -> None:
    v = voter(state=LeaseState(highest_token=5, config=VOTERS), now=100.0, restarted=True)
    assert "restarted" in answer(v, "a", LeaseRequest(6, 1.0, config_version=1), 100.5).reason
    assert answer(v, "a", LeaseRequest(6, 1.0, config_version=1), 101.2).granted


def test_release_frees_the_voter_at_once() -> None:
    v = voter()
    answer(v, "a", LeaseRequest(5, 1.0, config_version=1), 0.0)
    v.handle(LeaseRelease(5), "a", 0.1)
    assert answer(v, "c", LeaseRequest(6, 1.0, config_version=1), 0.2).granted


def campaign(core: LeaseCore, now: float, yes: tuple[str, ...] = ("b",)) -> list[object]:
    """Tick ``core`` into a pre-vote and answer it yes from ``yes``: the effects of the campaign."""
    effects = core.tick(now)
    asks = [e for e in effects if isinstance(e, Send) and isinstance(e.message, LeasePreVote)]
    assert asks and not any(isinstance(e, Persist) for e in effects)  # a pre-vote records nothing
    token = asks[0].message.token
    out: list[object] = []
    for voter_id in yes:
        out.extend(core.handle(LeasePreVoteReply(token=token, granted=True, highest=0), voter_id, now))
    return out


def elect(cores: dict[str, LeaseCore], now: float = 2.0) -> str:
    """Drive a campaign of the first core that campaigns, delivering messages instantly."""
    for node_id, core in cores.items():  # one after the other, each round delivered at once
        pending: list[tuple[str, object]] = [(node_id, e) for e in core.tick(now)]
        while pending:
            src, effect = pending.pop(0)
            targets = [effect.to] if isinstance(effect, Send) else list(cores) if isinstance(effect, Broadcast) else []
            for t in targets:
                if t != src:
                    pending.extend((t, e) for e in cores[t].handle(effect.message, src, now))  # type: ignore[union-attr]
    leaders = [i for i, c in cores.items() if c.is_leader(now)]
    assert len(leaders) == 1, leaders
    return leaders[0]


def test_a_quorum_elects_and_validity_counts_from_the_ask() -> None:
    cores = {i: voter(i) for i in "abc"}
    leader = elect(cores)
    core = cores[leader]
    assert core.lease_until == pytest.approx(2.0 + 1.0 - 0.15)
    assert core.leader_token == 1 and core.stats.elections_won == 1
    assert all(c.current_leader(2.0) == leader for c in cores.values())  # the announcement


def test_holder_steps_down_when_it_cannot_renew() -> None:
    cores = {i: voter(i) for i in "abc"}
    leader = elect(cores)
    core = cores[leader]
    effects = core.tick(core._next_renew)  # renewal round goes out; nobody answers
    assert any(isinstance(e, Send) and e.message.renew for e in effects)
    t = core.lease_until
    core.tick(t + 0.001)
    assert not core.is_leader(t + 0.001) and core.stats.step_downs == 1


def test_campaign_without_quorum_releases_its_grants() -> None:
    cores = {i: voter(i) for i in "abc"}
    a = cores["a"]
    effects = campaign(a, 5.0)
    requests = [e for e in effects if isinstance(e, Send) and isinstance(e.message, LeaseRequest)]
    assert requests and all(r.message.token == 1 for r in requests)
    later = a.tick(5.0 + CFG.request_timeout + 0.01)  # no answers came
    assert not a.is_leader(5.5)
    assert a._grant is None  # its own vote given back
    assert not any(isinstance(e, Send) and isinstance(e.message, LeaseRelease) for e in later)  # none others


def test_tokens_survive_restarts_and_are_never_proposed_twice() -> None:
    a = voter("a")
    effects = campaign(a, 5.0)
    persisted = [e.state for e in effects if isinstance(e, Persist)][-1]
    assert persisted.proposed_token == 1
    again = LeaseCore(CFG, self_id="a", state=persisted, now=10.0, rng=random.Random(2), restarted=True)
    again.on_members({"a", "b", "c"}, set(), 10.0)
    effects = campaign(again, 12.0)
    tokens = {e.message.token for e in effects if isinstance(e, Send) and isinstance(e.message, LeaseRequest)}
    assert tokens == {2}


def test_stale_leader_decisions_are_fenced() -> None:
    b = voter("b")
    b.handle(LeaseAnnounce(token=7, remaining=0.8, voters=["a", "b", "c"], config_version=1), "c", 0.0)
    assert b.current_leader(0.1) == "c"
    assert not b.fence(6) and b.stats.fencing_rejections == 1
    b.handle(LeaseAnnounce(token=6, remaining=0.8), "a", 0.2)  # the old leader still talking
    assert b.current_leader(0.3) == "c" and b.stats.fencing_rejections == 2
    assert b.fence(7) and b.fence(8) and not b.fence(7)


def test_bootstrap_needs_every_proposed_voter() -> None:
    cores = {i: LeaseCore(CFG, self_id=i, state=LeaseState(), now=0.0, rng=random.Random(3), restarted=False)
             for i in "abcd"}
    for c in cores.values():
        c.on_members({"a", "b", "c", "d"}, set(), 0.0)
    leader = elect(cores)
    assert cores[leader].config == ClusterConfig(("a", "b", "c"), 1)  # the first three by id
    assert all(c.config == ClusterConfig(("a", "b", "c"), 1) for c in cores.values())
    v = LeaseCore(CFG, self_id="b", state=LeaseState(), now=0.0, rng=random.Random(4), restarted=False)
    assert "not bootstrapped" in answer(v, "a", LeaseRequest(1, 1.0, bootstrap=["a", "c", "d"]), 0.0).reason


def test_config_commit_is_fenced_and_acknowledged_by_voters() -> None:
    b = voter("b")
    effects = b.handle(ConfigCommit(token=3, voters=["a", "b", "c", "d"], version=2), "a", 0.0)
    assert b.config == ClusterConfig(("a", "b", "c", "d"), 2)
    assert any(isinstance(e, Send) and e.to == "a" for e in effects)
    b.fence(9)
    b.handle(ConfigCommit(token=4, voters=["a"], version=3), "a", 0.1)
    assert b.config.version == 2  # a stale leader cannot shrink the voters


# -- pre-vote ------------------------------------------------------------------------------------
def test_a_pre_vote_binds_nobody_and_persists_nothing() -> None:
    v = voter()
    effects = v.handle(LeasePreVote(token=5, ttl=1.0, config_version=1), "a", 0.0)
    assert not any(isinstance(e, Persist) for e in effects)
    (reply,) = [e.message for e in effects if isinstance(e, Send)]
    assert isinstance(reply, LeasePreVoteReply) and reply.granted
    assert v.highest == 0 and v._grant is None  # no promise: another candidate may still win
    assert answer(v, "c", LeaseRequest(3, 1.0, config_version=1), 0.1).granted


def test_a_candidate_that_hears_no_pre_vote_never_binds_voters_nor_burns_tokens() -> None:
    """The deaf node of issue 13: it keeps asking, but hearing no answer it never campaigns."""
    a = voter("a")
    sent: list[object] = []
    now = 2.0
    for _ in range(100):
        effects = a.tick(now)
        assert not any(isinstance(e, Persist) for e in effects)
        sent.extend(e.message for e in effects if isinstance(e, Send))
        now = a.next_deadline() + 0.001
    assert sent and all(isinstance(m, LeasePreVote) for m in sent)
    assert a.proposed == 0 and a.stats.campaigns == 0


def test_voters_that_hear_a_live_leader_refuse_pre_votes() -> None:
    b = voter("b")
    b.handle(LeaseAnnounce(token=4, remaining=0.9, voters=["a", "b", "c"], config_version=1), "a", 0.0)
    effects = b.handle(LeasePreVote(token=5, ttl=1.0, config_version=1), "c", 0.1)
    (reply,) = [e.message for e in effects if isinstance(e, Send)]
    assert not reply.granted and "leader a is alive" in reply.reason
    effects = b.handle(LeasePreVote(token=5, ttl=1.0, config_version=1), "c", 1.0)  # the lease lapsed
    assert [e.message for e in effects if isinstance(e, Send)][0].granted


def test_a_leader_whose_lease_runs_out_gives_the_voters_back() -> None:
    cores = {i: voter(i) for i in "abc"}
    leader = elect(cores)
    core = cores[leader]
    end = core.lease_until
    effects = core.tick(end + 0.001)  # no renewal was heard (deaf): it steps down...
    releases = {e.to for e in effects if isinstance(e, Send) and isinstance(e.message, LeaseRelease)}
    assert releases == set(cores) - {leader}
    for other in releases:  # ...and the voters, which heard it, are free at once
        cores[other].handle(LeaseRelease(core.leader_token), leader, end + 0.01)
        assert cores[other]._grant is None


# -- token bounds --------------------------------------------------------------------------------
def test_a_forged_announce_beyond_the_bound_is_refused_and_counted() -> None:
    """Issue 13 item 2: LeaseAnnounce token 2^32 made the node follow 'evil' and persist it."""
    b = voter("b", state=LeaseState(highest_token=7, leader_token=7, config=VOTERS))
    effects = b.handle(LeaseAnnounce(token=2**32, remaining=0.9), "evil", 0.0)
    # nothing is sent or persisted: the only effect is the refusal, for the actor to log
    assert effects == [TokenRefused(2**32, 7, "evil", "LeaseAnnounce")]
    assert b.fence_floor == 7 and b.current_leader(0.1) is None
    assert b.stats.tokens_refused == 1
    assert not b.fence(2**31) and not b.fence(2**32) and b.stats.tokens_refused == 3


def test_fence_check_persists_a_raised_floor_and_reports_a_refusal() -> None:
    b = voter("b", state=LeaseState(highest_token=7, leader_token=7, config=VOTERS))
    accepted, effects = b.fence_check(8, 0.0)
    assert accepted and effects == [Persist(b.state())] and b.fence_floor == 8
    assert b.fence_check(8, 0.0) == (True, [])  # the floor did not move: nothing to persist
    assert b.fence_check(5, 0.0) == (False, [])  # stale: refused, counted as a fencing rejection
    assert b.fence_check(2**31, 0.0) == (False, [TokenRefused(2**31, 8)])


def test_a_token_jump_no_election_could_make_is_refused_until_time_explains_it() -> None:
    b = voter("b", state=LeaseState(highest_token=7, leader_token=7, config=VOTERS))
    jump = 7 + CFG.max_token_jump + 500
    assert b.handle(LeaseAnnounce(token=jump, remaining=0.9), "a", 0.0) == [TokenRefused(jump, 7, "a", "LeaseAnnounce")]
    assert not b.fence(jump, 0.0) and b.fence_floor == 7 and b.stats.tokens_refused == 2
    b.handle(LeaseAnnounce(token=8, remaining=0.9), "a", 0.1)  # a plausible leader is followed
    assert b.current_leader(0.2) == "a" and b.fence_floor == 8
    # a node that heard no leader for a while may have missed many elections: it catches up
    later = 0.1 + 10.0
    assert b.fence(jump, later) and b.fence_floor == jump


def test_forged_requests_and_replies_cannot_raise_tokens() -> None:
    v = voter()
    def refused_only(effects: list[object]) -> bool:  # nothing sent or persisted, only the refusal
        return len(effects) == 1 and isinstance(effects[0], TokenRefused)

    effects = v.handle(LeaseRequest(2**32, 1.0, config_version=1), "a", 0.0)
    assert refused_only(effects) and v.highest == 0
    assert refused_only(v.handle(LeaseRequest(2**32, 1.0, renew=True, config_version=1), "a", 0.0))
    assert refused_only(v.handle(LeasePreVote(token=2**40, ttl=1.0, config_version=1), "a", 0.0))
    v.handle(LeaseGrant(token=1, granted=False, highest=2**40), "a", 0.0)
    v.handle(LeasePreVoteReply(token=1, granted=False, highest=2**40), "a", 0.0)
    assert v.proposed == 0 and v.stats.tokens_refused == 5
    v.handle(ConfigCommit(token=2**33, voters=["evil"], version=9), "a", 0.0)
    assert v.config == VOTERS and v.fence_floor == 0


def test_a_persisted_token_beyond_the_bound_is_a_startup_error() -> None:
    from dakera_actors.lease.store import LeaseStateCorrupt, decode, encode
    from dakera_actors.wal.statefile import StorageError

    poisoned = LeaseState(highest_token=2**32 + 2, leader_token=2**32, proposed_token=2**32 + 2, config=VOTERS)
    with pytest.raises(LeaseStateCorrupt, match="highest_token") as info:
        decode(encode(poisoned))
    assert isinstance(info.value, StorageError)  # __main__ prints it and exits 1, no traceback
    with pytest.raises(ValueError):
        LeaseCore(CFG, self_id="b", state=poisoned, now=0.0, rng=random.Random(1))
    assert decode(encode(LeaseState(highest_token=2**31 - 1, config=VOTERS))).highest_token == 2**31 - 1
