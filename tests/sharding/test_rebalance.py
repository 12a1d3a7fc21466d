"""Rebalance steps, pure: learners first, flips only once caught up, bounded concurrency."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.replication.status import ReplicaStatus, ShardStatus
from dakera_actors.sharding.placement import plan
from dakera_actors.sharding.rebalance import TransferWatch, moves, read_round, settled, step, transferring


def never(_shard: int, _member: str) -> bool:
    return False


def always(_shard: int, _member: str) -> bool:
    return True


def test_a_new_copy_is_a_learner_until_it_has_caught_up() -> None:
    current = [["a", "b"]]
    target = [["a", "c"]]
    first = step(current, 2, target, never, concurrency=4)
    assert first == [["a", "b", "c"]]  # b still counts, c fills as a learner
    assert step(first, 2, target, never, concurrency=4) == first  # not caught up: wait
    assert step(first, 2, target, always, concurrency=4) == [["a", "c"]]  # flip


def test_drops_and_role_swaps_need_no_transfer() -> None:
    assert step([["a", "b", "c"]], 3, [["b", "a"]], never, concurrency=1) == [["b", "a"]]
    assert step([["a", "b"]], 2, [["b", "a"]], never, concurrency=0) == [["b", "a"]]


def test_at_most_concurrency_shards_transfer_at_once() -> None:
    current = [["a", "b"]] * 5
    target = [["a", "c"]] * 5
    first = step(current, 2, target, never, concurrency=2)
    assert len(transferring(first, 2)) == 2
    second = step(first, 2, target, lambda s, m: s == 0, concurrency=2)
    assert second[0] == ["a", "c"] and len(transferring(second, 2)) == 1
    third = step(second, 2, target, lambda s, m: s == 0, concurrency=2)
    assert len(transferring(third, 2)) == 2


def test_only_named_shards_move() -> None:
    current = [["a", "b"], ["a", "b"]]
    target = [["a", "c"], ["a", "c"]]
    assert step(current, 2, target, never, concurrency=4, only={1}) == [["a", "b"], ["a", "b", "c"]]


def test_a_changed_target_keeps_wanted_learners_and_drops_the_rest() -> None:
    current = [["a", "b", "c"]]  # c was joining
    assert step(current, 2, [["a", "d"]], never, concurrency=4) == [["a", "b", "d"]]
    assert step(current, 2, [["c", "a"]], never, concurrency=4) == [["a", "b", "c"]]  # c must catch up first
    assert step(current, 2, [["c", "a"]], always, concurrency=4) == [["c", "a"]]


def test_moves_and_settled() -> None:
    assert moves([["a", "b"], ["a", "c"]], [["a", "b"], ["c", "d"]]) == [{"shard": 1, "from": ["a", "c"], "to": ["c", "d"]}]
    assert settled([["a", "b", "c"]], 2) == [["a", "b"]]


@given(st.integers(2, 6), st.integers(1, 3), st.sampled_from([8, 16, 64]), st.integers(1, 8), st.data())
def test_stepping_reaches_the_target_and_every_shard_always_keeps_its_old_copies_until_the_flip(
        nodes: int, rf: int, shards: int, concurrency: int, data: st.DataObject) -> None:
    members = [f"n{i}" for i in range(nodes)]
    current = [list(c) for c in plan(None, members, shards, rf)]
    width = min(rf, nodes)
    grown = [*members, "new"]
    target = [list(c) for c in plan(current, grown, shards, rf)]
    caught: set[tuple[int, str]] = set()
    placement = current
    for _ in range(4 * shards + 4):
        nxt = step(placement, width, target, lambda s, m: (s, m) in caught, concurrency=concurrency)
        for shard, (before, after) in enumerate(zip(placement, nxt, strict=True)):
            if after != target[shard]:
                # until a shard flips, every copy that counted still does
                assert after[:width] == before[:width] or after[:width] == placement[shard][:width]
        # at most `concurrency` transfers in flight (a shard at its target whose learners caught up
        # is done: it waits only for the map-wide width, which this test does not grow)
        active = [sh for sh, ls in transferring(nxt, width).items()
                  if nxt[sh] != target[sh] or not all((sh, m) in caught for m in ls)]
        assert len(active) <= concurrency
        for shard, learners in transferring(nxt, width).items():
            if data.draw(st.booleans()):
                caught.update((shard, m) for m in learners)
        placement = nxt
        if placement == target:
            break
    else:
        # the learners that never got marked caught up keep their shards waiting: mark all and finish
        caught.update((s, m) for s, c in enumerate(placement) for m in c)
        placement = step(placement, width, target, lambda s, m: True, concurrency=len(placement))
        placement = step(placement, width, target, lambda s, m: True, concurrency=len(placement))
    assert placement == target


def test_a_stalled_learner_is_dropped_and_the_next_step_starts_it_again() -> None:
    current = [["a", "b", "c"], ["a", "b", "d"]]
    target = [["a", "c"], ["a", "d"]]
    dropped = step(current, 2, target, never, concurrency=4, abandon=lambda s, m: (s, m) == (0, "c"))
    assert dropped == [["a", "b"], ["a", "b", "d"]]  # the old copies keep serving; shard 1 untouched
    assert step(dropped, 2, target, never, concurrency=4) == [["a", "b", "c"], ["a", "b", "d"]]  # retried


def test_abandon_applies_only_to_learners_and_outside_only() -> None:
    current = [["a", "b", "c"]]
    # a counted copy is never "abandoned"; a learner is, even when a manual step names other shards
    assert step(current, 2, [["a", "c"]], never, concurrency=4, abandon=lambda s, m: m == "b") == current
    assert step(current, 2, [["a", "c"]], never, concurrency=4, only={5}, abandon=lambda s, m: m == "c") == [["a", "b"]]


def test_transfer_watch_counts_time_without_progress() -> None:
    watch = TransferWatch()
    watch.observe({0: ["c"], 1: ["d"]}, {}, 0.0)  # nothing reported yet: the clock starts
    assert watch.stalled(59.0, 60.0) == set()
    watch.observe({0: ["c"], 1: ["d"]}, {(0, "c"): 5}, 30.0)  # c acknowledged something: progress
    watch.observe({0: ["c"], 1: ["d"]}, {(0, "c"): 5, (1, "d"): -1}, 50.0)  # c the same again: none
    assert watch.stalled(60.0, 60.0) == {(1, "d")}
    assert watch.stalled(90.0, 60.0) == {(0, "c"), (1, "d")}
    watch.observe({0: ["c"]}, {(0, "c"): 6}, 91.0)  # d left the map; c moved on
    assert watch.stalled(120.0, 60.0) == set()
    watch.forget((0, "c"))
    watch.observe({0: ["c"]}, {(0, "c"): 6}, 121.0)  # forgotten: a fresh start, whatever it had
    assert watch.stalled(180.0, 60.0) == set() and watch.stalled(181.0, 60.0) == {(0, "c")}


def row(shard: int, healthy: int, count: int, *replicas: ReplicaStatus) -> ShardStatus:
    return ShardStatus(shard, 0, 0, healthy, count, list(replicas))


def test_read_round_believes_only_the_primary_and_applies_the_lag_rule() -> None:
    pending = {1: ["c"], 2: ["d"], 3: ["e"], 4: ["f"]}
    owners = {1: "a", 2: "a", 3: "b", 4: "x"}
    replies: dict[str, list[ShardStatus] | str] = {
        "a": [row(1, 1, 2, ReplicaStatus("b", 0, True, 9, 0), ReplicaStatus("c", 0, True, 9, 0)),  # c: nothing missing
              row(2, 1, 2, ReplicaStatus("d", 3, True, 6, 40)),  # d: 3 records behind, but only 40 ms
              row(3, 1, 2, ReplicaStatus("e", 0, True, 9, 0))],  # shard 3 is b's: a's word does not count
        "b": [row(3, 0, 1)],  # b still taking shard 3 over: no per-replica rows yet
        "x": "unreachable: no route",
    }
    found = read_round(pending, owners.get, replies, caught_lag_ms=500)
    assert found.caught == {(1, "c"), (2, "d")}
    assert found.acked == {(1, "c"): 9, (2, "d"): 6}
    assert found.heard[(3, "e")] == "primary still taking the shard over"
    assert found.heard[(4, "f")] == "unreachable: no route"


def test_read_round_never_counts_a_silent_or_far_behind_learner() -> None:
    pending = {0: ["c", "d", "e"]}
    rows = [row(0, 1, 4, ReplicaStatus("c", 0, False, 5, 0), ReplicaStatus("d", 2, True, 3, 501),
                ReplicaStatus("e", 0, True, 5, 0))]
    found = read_round(pending, lambda s: "a", {"a": rows}, caught_lag_ms=500)
    assert found.caught == {(0, "e")}  # c has not fetched lately; d lags by more than the limit
    assert found.acked == {(0, "d"): 3, (0, "e"): 5}


def test_a_down_primary_is_replaced_even_while_its_shard_waits_for_a_learner() -> None:
    # d died while L was copying from it; the target (as the plan may make it) wants L to lead
    current = [["d", "a", "L"]]
    target = [["L", "d"]]
    assert step(current, 2, target, never, concurrency=4) == [["d", "a", "L"]]  # without knowing d is down
    led = step(current, 2, target, never, concurrency=4, down={"d"})
    assert led == [["a", "d", "L"]]  # a leads now (L never: it may lack what d acknowledged)
    # the ranking (newest history first) picks among the counted copies that may lead
    assert step([["d", "a", "b", "L"]], 3, [["L", "b", "d"]], never, concurrency=4, down={"d"},
                ranked=[["b", "a", "d"]]) == [["b", "d", "a", "L"]]
    # every counted copy down: the shard waits rather than letting an empty learner lead
    assert step([["d", "e", "L"]], 2, [["L", "d"]], never, concurrency=4, down={"d", "e"}) == [["d", "e", "L"]]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_no_step_leaves_a_down_primary_when_a_counted_copy_may_lead(seed: int) -> None:
    import random

    rng = random.Random(seed)
    members = ["a", "b", "c", "d", "e"]
    down = set(rng.sample(members, rng.randint(1, 2)))
    current, target = [], []
    for _ in range(8):
        copies = rng.sample(members, 3)  # two counted, one learner
        current.append(copies)
        target.append(rng.sample(members, 2))
    out = step(current, 2, target, lambda s, m: rng.random() < 0.5, concurrency=2, down=down,
               abandon=lambda s, m: rng.random() < 0.2)
    for copies in out:
        counted = copies[:2] if len(copies) > 2 else copies
        if copies and any(m not in down for m in counted):
            assert copies[0] not in down, (current, target, down, out)


def test_a_cluster_growing_back_toward_rf_raises_the_width_only_when_every_shard_is_ready() -> None:
    """From one eligible member (every shard one copy) back to three with RF=2: new copies are
    learners until every shard has one caught up, then a single map makes them count. Every
    intermediate map passes the checks nodes apply."""
    from dakera_actors.sharding.placement import check
    from dakera_actors.sharding.shardmap import ShardMap, next_map

    shards = 12
    current = ShardMap(token=1, version=1, rf=2, placement=[["a"] for _ in range(shards)],
                       since=[1] * shards, width=1)
    caught: set[tuple[int, str]] = set()
    seen_widths = []

    def ready(shard: int, member: str) -> bool:
        return (shard, member) in caught

    for _ in range(40):
        proposal = next_map(current, ["a", "b", "c"], token=1, shards=shards, rf=2,
                            caught_up=ready, concurrency=3)
        if proposal is None:
            break
        assert check([tuple(c) for c in proposal.placement], proposal.members(), shards, 2, proposal.down,
                     width=proposal.counted) == [], proposal
        active = [sh for sh, ls in transferring(proposal.placement, proposal.counted).items()
                  if not all((sh, m) in caught for m in ls)]
        assert len(active) <= 3  # transfers in flight: the concurrency
        seen_widths.append(proposal.counted)
        # the learners of this map catch up before the next step
        caught |= {(s, m) for s, ls in transferring(proposal.placement, proposal.counted).items() for m in ls}
        current = proposal
    assert current.counted == 2 and all(len(c) == 2 for c in current.placement)
    assert seen_widths[0] == 1 and seen_widths[-1] == 2 and seen_widths.count(2) <= 2
