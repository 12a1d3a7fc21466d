"""Which archived objects rebuild a shard, and which ones may go (pure: no I/O, no clock).

The rules, over the objects of one shard as listed (see :mod:`.format` for the names):

- **Restore** takes the newest chain (highest epoch) that has a snapshot, its newest snapshot
  not known to be damaged, and then every chunk that continues it without a hole. Records a
  chain holds past a hole are unreachable (an upload that failed and will be retried, or was
  never made): the restore stops before the hole. A newer chain whose base is not up yet is
  skipped; an older chain is never mixed into a newer one.
- **Retention** (after a primary uploaded a snapshot at seq ``S`` in its chain ``E``): in ``E``,
  the newest two snapshots are kept, and every chunk after the older of them (if the newest
  turns out damaged, the older one plus those chunks still reach the end); older snapshots and
  chunks go. Every chain below ``E`` goes whole: ``E`` has its own base, so no restore reads
  them again. Chains above ``E`` are never touched (a newer primary's: this node is the stale one).
- **With a history window** ``W`` (point-in-time restores reach back ``W`` seconds): the floor
  is the newest snapshot of ``E`` taken before ``now - W``; it is kept with every chunk after it,
  so any second of the window is a snapshot plus records away. Snapshots between the floor and
  the newest two go (replays start from the floor). While ``E`` has no snapshot that old, its
  base is kept and the chains below ``E`` stay: they hold the start of the window.
- **A point in time** ``T`` is rebuilt from the newest chain with a snapshot taken at or before
  ``T`` (a snapshot at seq 0 in the oldest chain, the shard before its first record, counts as
  taken at any earlier time): that snapshot, then its chain's records up to the last one committed at or before ``T``
  (the reader stops at the first newer record). A chain's records end where the next primary
  took over, so a point inside the second between a takeover and the new primary's first
  snapshot is restored as the old primary last had it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import attrs

from .format import ArchivedObject

KEEP_SNAPSHOTS = 2


@attrs.frozen
class RestorePlan:
    """A snapshot and the chunks after it, in order; ``seq`` is the last record they reach."""

    shard: int
    chain: int
    snapshot: ArchivedObject
    chunks: tuple[ArchivedObject, ...]

    @property
    def seq(self) -> int:
        return self.chunks[-1].last if self.chunks else self.snapshot.last

    @property
    def keys(self) -> list[str]:
        return [self.snapshot.key, *(c.key for c in self.chunks)]


def _chains(objects: Iterable[ArchivedObject]) -> dict[int, list[ArchivedObject]]:
    by_chain: dict[int, list[ArchivedObject]] = {}
    for obj in objects:
        by_chain.setdefault(obj.chain, []).append(obj)
    return by_chain


def continuation(chunks: Iterable[ArchivedObject], after: int) -> list[ArchivedObject]:
    """The chunks that continue a history ending at seq ``after`` without a hole, in order. Where
    chunks overlap (a re-upload after a restart cut them differently), the longest reach wins."""
    by_first: dict[int, ArchivedObject] = {}
    for c in chunks:
        if not c.snapshot and (c.first not in by_first or c.last > by_first[c.first].last):
            by_first[c.first] = c
    out: list[ArchivedObject] = []
    at = after
    while True:
        # a chunk starting at or before at+1 that reaches past at (overlaps are fine: seqs repeat identically)
        nxt = max((c for first, c in by_first.items() if first <= at + 1 and c.last > at),
                  key=lambda c: c.last, default=None)
        if nxt is None:
            return out
        out.append(nxt)
        at = nxt.last


def plan_restore(objects: Iterable[ArchivedObject], *, exclude: Collection[str] = ()) -> RestorePlan | None:
    """How to rebuild the shard from ``objects`` (all of one shard), or None when no chain has a
    usable base. ``exclude``: keys found damaged, never planned again."""
    objs = [o for o in objects if o.key not in exclude]
    if not objs:
        return None
    shards = {o.shard for o in objs}
    if len(shards) != 1:
        raise ValueError(f"objects of several shards: {sorted(shards)}")
    for chain, members in sorted(_chains(objs).items(), reverse=True):
        snapshots = sorted((o for o in members if o.snapshot), key=lambda o: o.last, reverse=True)
        if snapshots:
            base = snapshots[0]
            return RestorePlan(base.shard, chain, base, tuple(continuation(members, base.last)))
    return None


def plan_retention(objects: Iterable[ArchivedObject], chain: int, *, now: float = 0.0,
                   window: float = 0.0) -> list[ArchivedObject]:
    """The objects a primary writing chain ``chain`` may delete at wall time ``now``, keeping
    ``window`` seconds of point-in-time history (see the module docstring)."""
    objs = list(objects)
    mine = [o for o in objs if o.chain == chain]
    snapshots = sorted({o.last for o in mine if o.snapshot}, reverse=True)
    if not snapshots:
        return []  # without a base of our own, every older chain may still be the restore's
    kept = set(snapshots[:KEEP_SNAPSHOTS])
    floor = min(kept)
    older_chains_go = True
    if window > 0:
        cutoff = now - window
        # a name without a time is from before times were named: as old as can be
        before = [o.last for o in mine if o.snapshot and (o.at is None or o.at < cutoff)]
        if before:
            floor = min(floor, max(before))
        else:
            floor = min(snapshots)  # our base: the window reaches back past it, into older chains
            older_chains_go = False
        kept.add(floor)
    doomed = [o for o in mine if (o.snapshot and o.last not in kept) or (not o.snapshot and o.last <= floor)]
    if older_chains_go:
        doomed += [o for o in objs if o.chain < chain]
    return sorted(doomed)


def plan_point_in_time(objects: Iterable[ArchivedObject], at: float) -> RestorePlan | None:
    """How to rebuild the shard as it was at wall time ``at`` (see the module docstring): a
    snapshot taken at or before it and the chunks continuing it (the reader drops records
    committed after ``at``); None when no snapshot is that old."""
    chains = _chains(objects)
    oldest = min(chains, default=0)
    for chain, members in sorted(chains.items(), reverse=True):
        bases = [o for o in members if o.snapshot and (o.at is not None and o.at <= at or _origin(o, oldest))]
        if bases:
            base = max(bases, key=lambda o: (o.last, o.at or 0.0))
            return RestorePlan(base.shard, chain, base, tuple(continuation(members, base.last)))
    return None


def _origin(obj: ArchivedObject, oldest_chain: int) -> bool:
    """A snapshot at seq 0 in the shard's oldest chain: the shard before its first record ever,
    so it holds for any earlier time too (back to when the archive began)."""
    return obj.snapshot and obj.last == 0 and obj.chain == oldest_chain


def earliest_point(objects: Iterable[ArchivedObject]) -> float | None:
    """The oldest time a point-in-time restore can reach: the oldest snapshot with a time, or
    any time (0.0) when the shard's origin is archived."""
    objs = list(objects)
    oldest = min((o.chain for o in objs), default=0)
    if any(_origin(o, oldest) for o in objs):
        return 0.0
    times = [o.at for o in objs if o.snapshot and o.at is not None]
    return min(times) if times else None
