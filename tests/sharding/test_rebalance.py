"""Rebalance steps, pure: learners first, flips only once caught up, bounded concurrency."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.sharding.placement import plan
from dakera_actors.sharding.rebalance import moves, settled, step, transferring


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
        assert len(transferring(nxt, width)) <= concurrency
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
