"""Rebalancing, pure: how the published placement walks toward the planned one without losing a copy.

The leader plans a *target* placement (:func:`~.placement.plan`) from the settled copies of the
current map. Each step, :func:`step` moves every shard one stage toward it:

- a shard whose target only drops copies or swaps roles goes there at once (no data moves; a
  promoted primary takes the shard over from the others before it serves);
- a shard whose target has copies on members that do not hold it gets them as **learners**:
  extra copies after the first ``width`` (the map's copies per shard) that replicate like any
  replica but are not counted by write acknowledgements; at most ``concurrency`` shards are
  transferring at once;
- once every learner a target wants has caught up with its primary (``caught_up``), the shard
  **flips** to its target in one map: learners become copies, dropped copies go. Writes pause
  only for the takeover that a role change implies.

A transfer interrupted by a failure leaves the old copies serving: the learner is dropped or
kept by the next target, and the step is simply taken again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Placement = list[list[str]]


def settled(placement: Sequence[Sequence[str]], width: int) -> Placement:
    """The copies that count: each shard's first ``width`` (what follows are learners)."""
    return [list(c[:width]) for c in placement]


def step(current: Sequence[Sequence[str]], width: int, target: Sequence[Sequence[str]],
         caught_up: Callable[[int, str], bool], *, concurrency: int,
         only: set[int] | None = None) -> Placement:
    """The next placement on the way from ``current`` (``width`` counted copies per shard) to
    ``target``. ``only``: shards allowed to move (the rest keep their copies and learners)."""
    out: Placement = []
    moving = sum(1 for c in current if len(c) > width)
    for shard, (cur, tgt) in enumerate(zip(current, target, strict=True)):
        cur, tgt = list(cur), list(tgt)
        if (only is not None and shard not in only) or cur == tgt:
            out.append(cur)
            continue
        learners = cur[width:]
        new = [m for m in tgt if m not in cur]
        if not new:
            waiting = [m for m in tgt if m in learners and not caught_up(shard, m)]
            out.append(cur if waiting else tgt)
            continue
        if learners:
            # a transfer toward an older target: keep the learners still wanted, add the rest
            kept = cur[:width] + [m for m in learners if m in tgt]
            out.append(kept + [m for m in new if m not in kept])
            continue
        if moving < concurrency:
            moving += 1
            out.append(cur + new)
            continue
        out.append(cur)
    return out


def moves(current: Sequence[Sequence[str]], target: Sequence[Sequence[str]]) -> list[dict[str, object]]:
    """What the admin API reports: every shard whose copies change, from and to."""
    return [{"shard": s, "from": list(a), "to": list(b)}
            for s, (a, b) in enumerate(zip(current, target, strict=True)) if list(a) != list(b)]


def transferring(placement: Sequence[Sequence[str]], width: int) -> dict[int, list[str]]:
    """Shards with learners, and the learners."""
    return {s: list(c[width:]) for s, c in enumerate(placement) if len(c) > width}
