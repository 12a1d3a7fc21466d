"""Placement, pure: RF distinct members per shard, minimal movement, even load, deterministic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.sharding.placement import balance, check, moved, plan

member_sets = st.sets(st.sampled_from([f"node-{i}" for i in range(1, 17)]), min_size=1, max_size=12)
shard_counts = st.sampled_from([1, 7, 16, 64])
rfs = st.integers(1, 3)


def loads(p: list[tuple[str, ...]], members: set[str]) -> dict[str, int]:
    out = dict.fromkeys(members, 0)
    for copies in p:
        for m in copies:
            out[m] += 1
    return out


@given(member_sets, shard_counts, rfs)
def test_every_shard_gets_rf_distinct_members_and_loads_are_within_one(members: set[str], shards: int, rf: int) -> None:
    p = plan(None, members, shards, rf)
    assert check(p, members, shards, rf) == []
    counts = loads(p, members).values()
    assert max(counts) - min(counts) <= 1


@given(member_sets, shard_counts, rfs)
def test_deterministic_and_stable(members: set[str], shards: int, rf: int) -> None:
    p = plan(None, members, shards, rf)
    assert plan(None, sorted(members, reverse=True), shards, rf) == p  # order of members is irrelevant
    assert plan(p, members, shards, rf) == p  # nothing changes when nothing changed


@given(member_sets, shard_counts, rfs, st.data())
def test_removing_a_member_moves_only_its_copies(members: set[str], shards: int, rf: int, data: st.DataObject) -> None:
    p = plan(None, members, shards, rf)
    gone = data.draw(st.sampled_from(sorted(members)))
    rest = members - {gone}
    after = plan(p, rest, shards, rf)
    held = sum(gone in copies for copies in p)
    if rest and min(rf, len(rest)) == min(rf, len(members)):
        # the departed member's copies, plus rarely one or two balancing moves when the
        # survivors that could take a copy are exactly the ones already above the mean
        assert held <= moved(p, after) <= held + 2
    if rest:
        for before_copies, after_copies in zip(p, after, strict=True):
            kept = {m for m in before_copies if m != gone}
            assert len(kept - set(after_copies)) <= 1  # survivors keep their copies


@given(member_sets, shard_counts, rfs)
def test_adding_a_member_moves_only_onto_it_about_one_in_n_plus_one(members: set[str], shards: int, rf: int) -> None:
    p = plan(None, members, shards, rf)
    new = "node-99"
    after = plan(p, members | {new}, shards, rf)
    created = [set(a) - set(b) for b, a in zip(p, after, strict=True)]
    assert all(c <= {new} for c in created)  # every new copy is on the new member
    total = shards * min(rf, len(members) + 1)
    assert moved(p, after) <= -(-total // (len(members) + 1))  # at most its fair share


def test_balance_stays_under_a_tenth_at_64_shards_with_replication() -> None:
    for rf in (2, 3):
        for n in range(1, 13):
            members = {f"node-{i}" for i in range(n)}
            assert balance(plan(None, members, 64, rf), members) < 0.1, (rf, n)


def test_a_lost_primary_is_replaced_by_its_first_replica() -> None:
    members = {"a", "b", "c"}
    p = plan(None, members, 64, 2)
    after = plan(p, members - {"a"}, 64, 2)
    for before, now in zip(p, after, strict=True):
        if before[0] == "a":
            assert now[0] == before[1]  # promotion, not a fresh copy


@given(member_sets, shard_counts, st.integers(2, 3), st.data())
def test_a_down_member_keeps_its_copies_but_never_leads(members: set[str], shards: int, rf: int,
                                                       data: st.DataObject) -> None:
    p = plan(None, members, shards, rf)
    down = data.draw(st.sampled_from(sorted(members)))
    rest = members - {down}
    if not rest:
        return
    q = plan(p, rest, shards, rf, keep=[down])
    for before, after in zip(p, q, strict=True):
        assert after and (after[0] != down or set(after) == {down})  # never primary while a copy lives
        assert after[0] in before or down not in before or len(rest) < rf  # a surviving copy took over
        if down in before and len(rest) >= 1 and any(m in rest for m in before):
            assert down in after  # its copy stays for its return
    # once the grace is over, its copies go and every shard is back to full strength
    r = plan(q, rest, shards, rf)
    assert check(r, rest, shards, rf) == []
    assert all(down not in copies for copies in r)


@given(member_sets, shard_counts, st.integers(2, 3))
def test_a_primary_role_only_moves_to_a_copy_that_held_the_shard(members: set[str], shards: int, rf: int) -> None:
    """A join never hands a primary role to the copy it just created (that one is empty); only
    RF=1 has no replica to hand the role to."""
    p = plan(None, members, shards, rf)
    grown = members | {"node-99"}
    q = plan(p, grown, shards, rf)
    for before, after in zip(p, q, strict=True):
        assert after[0] in before  # the new primary held the data already


def test_a_shard_with_every_copy_down_waits_for_one_rather_than_starting_empty() -> None:
    p = [("a", "b"), ("a", "c")]
    q = plan(p, ["c", "d"], 2, 2, keep=["a", "b"])
    assert q[0] == ("a", "b")  # unavailable until a or b returns (or their grace ends)
    assert q[1][0] == "c" and "a" in q[1]
    assert check(q, {"a", "b", "c", "d"}, 2, 2, down=["a", "b"]) == []
    r = plan(q, ["c", "d"], 2, 2)  # the grace is over: copies are made anew, empty
    assert set(r[0]) == {"c", "d"}


@given(member_sets, shard_counts, st.integers(2, 3), st.data())
def test_a_shard_keeps_its_last_live_copy_when_a_member_dies_as_another_joins(
        members: set[str], shards: int, rf: int, data: st.DataObject) -> None:
    """A death and a join in one plan (a rebalance onto a new node when a primary dies): evening
    out the load must not move a shard's only live copy to the empty newcomer, which would leave
    the data on down members alone."""
    p = plan(None, members, shards, rf)
    down = data.draw(st.sampled_from(sorted(members)))
    alive = (members - {down}) | {"node-new"}
    q = plan(p, alive, shards, rf, keep=[down])
    for before, after in zip(p, q, strict=True):
        live_before = [m for m in before if m != down]
        if live_before:
            assert after[0] in live_before, (before, after)  # an old live copy leads


def test_evening_out_never_takes_the_only_live_copy() -> None:
    # "a" is heavy and is the only live copy of shard 0 ("d" is down): the move goes elsewhere
    current = [("a", "d"), ("a", "b"), ("a", "c"), ("b", "c")]
    q = plan(current, ["a", "b", "c", "n"], 4, 2, keep=["d"])
    assert q[0][0] == "a" and "d" in q[0]


def test_a_draining_copy_stays_where_no_eligible_member_can_replace_it() -> None:
    # three nodes, RF=2: "b" drains while "c" is down (kept): shards on a+b cannot move their b
    # copy anywhere (c cannot take a new copy), so it stays, after a; where c holds a copy, b goes
    current = [("a", "b"), ("b", "a"), ("b", "c"), ("a", "c")]
    q = plan(current, ["a"], 4, 2, keep=["c"], draining=["b"])
    assert q[0] == ("a", "b") and q[1] == ("a", "b")  # a leads, b stays as the second copy
    assert q[2] == ("a", "c")  # a new copy on a (made from b, which serves until it has caught up)
    assert q[3] == ("a", "c")
    assert check(q, {"a", "b", "c"}, 4, 2, down=["c"]) == []
    # once c is back (eligible), b's copies go
    r = plan(q, ["a", "c"], 4, 2, draining=["b"])
    assert all("b" not in copies for copies in r)
