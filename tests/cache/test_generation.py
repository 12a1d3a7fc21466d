"""The generation rule's pieces, one bound at a time (pure)."""

from __future__ import annotations

import pytest

from dakera_actors.cache import generation as g
from dakera_actors.cache.generation import GenerationConfig, PrimaryGeneration

C = GenerationConfig(lease=1.0, timeout=0.05, renew_every=0.3, authority=2.0, drift=0.01, margin=0.005)
OFFSET = 1000.0  # Redis's clock minus ours


def ready(now: float = 0.0) -> PrimaryGeneration:
    """A primary that measured Redis's clock and advanced once (answers 2 ms after sending)."""
    p = PrimaryGeneration(4, 7, C, now)
    call = p.next_call(now, authorized=True)
    assert isinstance(call, g.TimeCall)
    p.answered(g.Clock(now + 0.001 + OFFSET), now + 0.002)
    call = p.next_call(now + 0.002, authorized=True)
    assert isinstance(call, g.AdvanceCall) and call.last_gen == 0 and call.term == 7
    p.answered(g.Advanced(99, 1, now + 0.003 + OFFSET), now + 0.004)
    return p


def test_the_scripts_refuse_late_calls_lower_terms_and_moved_generations() -> None:
    state, res = g.advance(None, now=10.0, term=2, last_gen=5, lease=1.0, not_after=11.0, new_inc=42)
    assert state == g.GenState(42, 6, 2, 11.0) and res == g.Advanced(42, 6, 10.0)
    assert g.advance(state, now=12.0, term=2, last_gen=0, lease=1.0, not_after=11.5, new_inc=1)[1] == g.Refused("late")
    assert g.advance(state, now=10.5, term=1, last_gen=0, lease=1.0, not_after=11.0, new_inc=1)[1] == \
        g.Refused("fenced", 2)
    # a restart from an old snapshot: the primary knows gen 9, Redis says 6: the next is 10, never 7..9 again
    again, res = g.advance(state, now=10.5, term=2, last_gen=9, lease=1.0, not_after=11.0, new_inc=1)
    assert again is not None and (again.inc, again.gen, again.until) == (42, 10, 11.5)
    assert g.renew(again, now=10.6, term=2, inc=42, gen=9, lease=1.0, not_after=11.0)[1] == g.Refused("moved")
    assert g.renew(None, now=10.6, term=2, inc=42, gen=10, lease=1.0, not_after=11.0)[1] == g.Refused("moved")
    renewed, res = g.renew(again, now=10.9, term=2, inc=42, gen=10, lease=1.0, not_after=11.0)
    assert renewed is not None and renewed.until == 11.9 and res == g.Renewed(10.9)


def test_reads_trust_a_generation_only_until_its_deadline_and_fills_only_land_on_it() -> None:
    state = g.GenState(42, 6, 2, 11.0)
    entries: dict[str, g.Entry] = {}
    assert g.read(state, entries, now=10.0, digest="q") == ("miss", None)
    assert not g.fill(state, entries, now=10.0, term=2, inc=42, gen=5, digest="q", value=b"old", not_after=10.1)
    assert not g.fill(state, entries, now=10.0, term=1, inc=42, gen=6, digest="q", value=b"p1", not_after=10.1)
    assert not g.fill(state, entries, now=10.2, term=2, inc=42, gen=6, digest="q", value=b"late", not_after=10.1)
    assert not g.fill(state, entries, now=11.5, term=2, inc=42, gen=6, digest="q", value=b"untrusted", not_after=12)
    assert entries == {}
    assert g.fill(state, entries, now=10.0, term=2, inc=42, gen=6, digest="q", value=b"v", not_after=10.1)
    assert g.read(state, entries, now=10.9, digest="q") == ("hit", b"v")
    assert g.read(state, entries, now=10.9, digest="other") == ("miss", None)
    # an entry that is there but not trusted is stale, not a miss:
    assert g.read(state, entries, now=11.01, digest="q") == ("stale", None)  # past the deadline
    assert g.read(g.GenState(43, 6, 2, 11.0), entries, now=10.5, digest="q") == ("stale", None)  # a new incarnation
    assert g.read(g.GenState(42, 7, 2, 11.0), entries, now=10.5, digest="q") == ("stale", None)  # advanced since
    assert g.read(None, entries, now=10.5, digest="q") == ("stale", None)  # its generation key evicted


def test_a_new_primary_waits_its_predecessors_authority_and_a_lease_unless_it_advances() -> None:
    p = PrimaryGeneration(4, 7, C, 0.0)
    v = p.applied_write()
    assert not p.may_ack(v, 2.9) and p.may_ack(v, 3.02)  # authority 2 s + a lease (with drift and margin)
    p = ready()
    v = p.applied_write()
    assert not p.may_ack(v, 0.01)
    call = p.next_call(0.01, authorized=True)
    assert isinstance(call, g.AdvanceCall) and call.version == v and call.last_gen == 1
    # its not_after is Redis's clock at sending plus the timeout (and the offset's error)
    assert OFFSET + 0.01 + C.timeout < call.not_after < OFFSET + 0.01 + C.timeout + 0.02
    p.answered(g.Advanced(99, 2, OFFSET + 0.011), 0.012)
    assert p.may_ack(v, 0.012)


def test_a_dirty_primary_never_renews_and_a_lost_renewal_holds_its_writes_until_that_trust_is_surely_over() -> None:
    t = 10.0  # past the new primary's own hold (authority + a lease from its start at 0)
    p = ready()
    renew = p.next_call(t, authorized=True)
    assert isinstance(renew, g.RenewCall) and (renew.inc, renew.gen) == (99, 1)
    p.answered(None, t + C.timeout)  # no answer: it may still run, until its not_after
    v = p.applied_write()
    call = p.next_call(t + 0.06, authorized=True)
    assert isinstance(call, g.AdvanceCall)  # dirty: an advance, never a renewal
    p.answered(None, t + 0.06 + C.timeout)  # Redis does not answer: the write waits out every trust
    # the renewal may have run as late as its not_after (our clock: sent + timeout + the offset's
    # error, which grew with the drift since the clock was measured at 0) and trusted a lease from then
    latest_renewal_run = t + C.timeout
    assert not p.may_ack(v, latest_renewal_run + C.lease)
    assert p.may_ack(v, latest_renewal_run + C.lease * (1 + C.drift) + 0.5)
    # an idle primary renews once renew_every has passed since its trust began
    q = ready()
    assert q.next_call(0.2, authorized=True) is None
    assert isinstance(q.next_call(0.3, authorized=True), g.RenewCall)


def test_no_authority_no_calls_no_fills_and_a_fenced_primary_stops_for_good() -> None:
    p = ready()
    assert p.ticket(authorized=False) is None
    assert p.next_call(0.5, authorized=False) is None
    ticket = p.ticket(authorized=True)
    assert ticket is not None and (ticket.inc, ticket.gen, ticket.term) == (99, 1, 7)
    p.applied_write()
    assert not p.still_valid(ticket)  # a write applied while the answer was computed
    assert p.ticket(authorized=True) is None  # dirty: nothing is filled until the next advance
    call = p.next_call(0.5, authorized=True)
    assert isinstance(call, g.AdvanceCall)
    p.answered(g.Refused("fenced", 8), 0.502)
    assert p.fenced and p.next_call(0.6, authorized=True) is None and p.ticket(authorized=True) is None


@pytest.mark.parametrize("why", ["moved"])
def test_a_moved_generation_is_advanced_again(why: str) -> None:
    p = ready()
    renew = p.next_call(0.31, authorized=True)
    assert isinstance(renew, g.RenewCall)
    p.answered(g.Refused(why), 0.312)  # evicted, flushed or restored under us
    assert p.ticket(authorized=True) is None
    call = p.next_call(0.32, authorized=True)
    assert isinstance(call, g.AdvanceCall) and call.last_gen == 1


def test_a_term_no_map_of_the_cluster_can_have_is_taken_over_not_obeyed() -> None:
    """``foreign_from``: the lowest term the caller's cluster cannot have yet (a wiped
    predecessor's): a stored term at or above it does not fence; the key gets a new incarnation
    and a generation past the old one. Below it, a higher term fences as ever."""
    old = g.GenState(42, 9, (50 << 32) | 3, 20.0)
    mine = (2 << 32) | 1
    kept, res = g.advance(old, now=10.0, term=mine, last_gen=0, lease=1.0, not_after=11.0, new_inc=7)
    assert res == g.Refused("fenced", old.term) and kept == old  # no bound: fenced
    kept, res = g.advance(old, now=21.5, term=mine, last_gen=0, lease=1.0, not_after=22.0, new_inc=7,
                          foreign_from=3 << 32, quiet=2.0)
    assert res == g.Refused("fenced", old.term) and kept == old  # its trust not over for `quiet` yet
    new, res = g.advance(old, now=22.5, term=mine, last_gen=0, lease=1.0, not_after=23.0, new_inc=7,
                         foreign_from=3 << 32, quiet=2.0)
    assert res == g.Advanced(7, 10, 22.5) and new == g.GenState(7, 10, mine, 23.5)
    same_cluster = g.GenState(42, 9, (2 << 32) | 5, 20.0)  # a newer map of the same leader: fences
    kept, res = g.advance(same_cluster, now=10.0, term=mine, last_gen=0, lease=1.0, not_after=11.0, new_inc=7,
                          foreign_from=3 << 32)
    assert res == g.Refused("fenced", same_cluster.term) and kept == same_cluster
    kept, res = g.advance(old, now=12.0, term=mine, last_gen=0, lease=1.0, not_after=11.0, new_inc=7,
                          foreign_from=3 << 32)
    assert res == g.Refused("late") and kept == old
    entries = {"q": (42, 9, b"old answer")}
    assert g.read(new, entries, now=23.0, digest="q") == ("stale", None)


def test_the_foreign_term_bound_is_the_next_leader_s_first_map_epoch() -> None:
    from dakera_actors.wirebounds import TOKEN_MAX, epoch_of

    assert g.foreign_from(7) == epoch_of(8, 0) == 8 << 32
    assert g.foreign_from(7) > epoch_of(7, 2**32 - 1)  # above every map of the leader of token 7
    assert g.foreign_from(TOKEN_MAX) == 0  # no later token: no bound known, nothing taken over
