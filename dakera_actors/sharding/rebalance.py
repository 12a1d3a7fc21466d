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
kept by the next target, and the step is simply taken again. A transfer that makes no progress
for a while (:class:`TransferWatch`) is **abandoned**: its learner leaves the map (``abandon``)
and the next step starts it again, with the primary's bookkeeping for it begun afresh; a learner
re-added before its copy is deleted keeps what it had.

When the map's width itself grows (a cluster coming back toward RF: one copy per shard becomes
two), the new copies stay learners until every shard has one caught up, and one map then makes
them all count (a map with some shards at the new width and some at the old is not valid); shards
done and waiting for that do not take transfer slots. A primary that may not lead (dead) is
replaced by its best counted copy in the very next step, whatever else its shard waits for.

The leader learns who has caught up by asking the primaries (:func:`read_round`), and steps on
every round that finds one, not only on news: a flip the last step could not take (its target had
moved meanwhile) is taken as soon as it can be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from ..replication.status import ShardStatus

Placement = list[list[str]]


def settled(placement: Sequence[Sequence[str]], width: int) -> Placement:
    """The copies that count: each shard's first ``width`` (what follows are learners)."""
    return [list(c[:width]) for c in placement]


def step(current: Sequence[Sequence[str]], width: int, target: Sequence[Sequence[str]],
         caught_up: Callable[[int, str], bool], *, concurrency: int,
         only: set[int] | None = None, abandon: Callable[[int, str], bool] | None = None,
         down: Iterable[str] = (), ranked: Sequence[Sequence[str]] | None = None) -> Placement:
    """The next placement on the way from ``current`` (``width`` counted copies per shard) to
    ``target``. ``only``: shards allowed to move (the rest keep their copies and learners).
    ``abandon(shard, learner)``: a stalled transfer, dropped from the map this step (the step
    after starts it again if the target still wants it).

    ``down``: members that may not lead (dead or in their grace period). Whatever else a shard
    waits for, a counted copy that may lead replaces a primary that may not, in this step: the
    first in ``ranked`` (the counted copies, newest history first), else in map order. A learner
    never leads: it may be missing what the dead primary acknowledged."""
    out = _step(current, width, target, caught_up, concurrency=concurrency, only=only, abandon=abandon)
    return [_lead(copies, width, set(down), ranked[s] if ranked is not None else ())
            for s, copies in enumerate(out)]


def _lead(copies: list[str], width: int, down: set[str], ranked: Sequence[str]) -> list[str]:
    if not copies or copies[0] not in down:
        return copies
    counted, learners = copies[:width], copies[width:]
    able = [m for m in ranked if m in counted and m not in down] + [m for m in counted if m not in down]
    if not able:
        return copies  # every counted copy is down: the shard waits for one (never an empty leader)
    return [able[0], *[m for m in counted if m != able[0]], *learners]


def _step(current: Sequence[Sequence[str]], width: int, target: Sequence[Sequence[str]],
          caught_up: Callable[[int, str], bool], *, concurrency: int,
          only: set[int] | None, abandon: Callable[[int, str], bool] | None) -> Placement:
    out: Placement = []
    # transferring: shards with learners, except those already at their target with every learner
    # caught up (the cluster growing back toward RF: they wait for the map-wide width to grow)
    moving = sum(1 for s, c in enumerate(current) if len(c) > width and not (
        list(c) == list(target[s]) and all(caught_up(s, m) for m in c[width:])))
    for shard, (cur, tgt) in enumerate(zip(current, target, strict=True)):
        cur, tgt = list(cur), list(tgt)
        learners = cur[width:]
        dropped = [m for m in learners if abandon is not None and abandon(shard, m)]
        if dropped:
            out.append([m for m in cur if m not in dropped])
            continue
        if (only is not None and shard not in only) or cur == tgt:
            out.append(cur)
            continue
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
        if moving < concurrency or len(cur) < width:
            # a shard short of the map's width (its other copies were lost while it was down, and
            # it is back, or their grace is over) makes no valid map as it is: it gets its copies
            # now, whatever else is transferring
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


Pair = tuple[int, str]  # (shard, learner)


@attrs.define
class TransferWatch:
    """The leader's watch over transfers in flight: when each learner last made progress.

    Progress is the learner's acknowledged position rising at its primary. A learner that has
    been in the map for ``timeout`` seconds without progress (a copy that never starts, a fetch
    loop that died, a primary that never reports it) is :meth:`stalled`; a caught-up learner
    that was not flipped counts too, so nothing waits forever on a flip that does not come."""

    last: dict[Pair, tuple[int, float]] = attrs.field(factory=dict)  # pair -> (acked, since)

    def observe(self, pending: Mapping[int, Sequence[str]], acked: Mapping[Pair, int], now: float) -> None:
        """``pending``: shard -> its learners in the map now; ``acked``: what their primaries
        reported this round (a pair missing was not reported)."""
        live = {(s, m) for s, learners in pending.items() for m in learners}
        for gone in set(self.last) - live:
            del self.last[gone]
        for pair in live:
            seen = acked.get(pair, -1)
            before = self.last.get(pair)
            if before is None or seen > before[0]:
                self.last[pair] = (max(seen, before[0] if before else -1), now)

    def stalled(self, now: float, timeout: float) -> set[Pair]:
        return {pair for pair, (_acked, since) in self.last.items() if now - since >= timeout}

    def forget(self, pair: Pair) -> None:
        self.last.pop(pair, None)


@attrs.frozen
class Round:
    """What one round of asking the primaries found about the learners in the map."""

    caught: set[Pair]  # caught up now: the next step flips them
    acked: dict[Pair, int]  # acknowledged seq, for learners fetching
    heard: dict[Pair, object]  # what the primary said of each learner (for the logs)


def read_round(pending: Mapping[int, Sequence[str]], owner: Callable[[int], str | None],
               replies: Mapping[str, Sequence[ShardStatus] | str], *, caught_lag_ms: int) -> Round:
    """Read the primaries' replication status rows (``replies``: member -> its
    :class:`~dakera_actors.replication.status.ShardStatus` rows, or why it did not answer) for the
    learners in ``pending``; only a shard's primary in the map is believed about it.

    A learner has caught up when it fetched recently and lacks nothing, or lacks only records
    written in the last ``caught_lag_ms`` (on a busy shard a learner is seldom at 0 at the moment
    it is asked; Kafka's in-sync rule is time-based for the same reason)."""
    caught: set[Pair] = set()
    acked: dict[Pair, int] = {}
    heard: dict[Pair, object] = {}
    for member, rows in replies.items():
        if isinstance(rows, str):
            heard.update({(s, m): rows for s, learners in pending.items() if owner(s) == member for m in learners})
            continue
        for row in rows:
            shard = row.shard
            if shard not in pending or owner(shard) != member:
                continue
            if not row.replicas:
                heard.update({(shard, m): "primary still taking the shard over" for m in pending[shard]})
            for replica in row.replicas:
                if replica.member not in pending[shard]:
                    continue
                heard[(shard, replica.member)] = replica
                if replica.fresh and (replica.behind == 0 or replica.lag_ms <= caught_lag_ms):
                    caught.add((shard, replica.member))
                if replica.fresh:
                    acked[(shard, replica.member)] = replica.acked
    return Round(caught, acked, heard)
