"""Shard placement: where each shard's copies live, moving as few as possible.

``plan(current, members, shards, rf)`` is a pure function the leader runs whenever the eligible
members change. It keeps every copy that sits on an eligible member, re-creates only what is
missing, and then evens the load with the fewest moves:

1. **Keep**: a shard keeps its copies on eligible members (and on down members still within
   their grace period, never as primary), in order, so the primary stays the primary while it
   lives and the first surviving replica (the leader orders them by position) takes over.
2. **Fill**: a shard short of ``min(rf, members)`` copies gets new ones on the least loaded
   members that do not hold it yet (ties broken by a rendezvous score, ``xxh64(member, shard)``,
   so every node computes the same plan).
3. **Even out copies**: while a member holds more than ``ceil(copies / members)`` or another
   fewer than ``floor(...)``, one copy moves from the most to the least loaded member
   (a replica rather than a primary, where there is a choice).
4. **Even out primaries**: roles are swapped inside a shard (no data moves) until every member
   is primary for ``floor`` or ``ceil`` of ``shards / members`` shards, but only onto a copy that
   held the shard before this plan (a copy made by this plan is still empty: it gets the role
   in a later plan, once it has the data).

So removing a member moves the copies it held (plus, rarely, one or two balancing moves when
the only members able to take a copy are already above the mean); adding one moves at most its
fair share, ``ceil(copies / (N+1))``, all of them onto the new member; and every member's load
is within one copy of the mean. Primaries are evened by role swaps and may end one outside the
floor/ceil band when no swap helps (a known gap, see the issue notes). A node that receives a map checks it with :func:`check`, not by recomputing history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import xxhash

Placement = list[tuple[str, ...]]


def score(shard: int, member: str) -> int:
    """Rendezvous score of a (shard, member) pair: a deterministic, well-spread tie-breaker."""
    return xxhash.xxh64_intdigest(member.encode(), seed=shard)


def _loads(placement: Sequence[Sequence[str]], nodes: Sequence[str]) -> dict[str, int]:
    load = dict.fromkeys(nodes, 0)
    for copies in placement:
        for member in copies:
            if member in load:
                load[member] += 1
    return load


def copies_wanted(members: Iterable[str], rf: int, keep: Iterable[str] = ()) -> int:
    """Copies per shard a plan makes: RF, capped by the members (eligible and kept) there are."""
    return min(rf, len(set(members) | set(keep)))


def plan(current: Sequence[Sequence[str]] | None, members: Iterable[str], shards: int, rf: int,
         keep: Iterable[str] = (), draining: Iterable[str] = ()) -> Placement:
    """The next placement: ``result[shard]`` = its copies, primary first.

    ``keep`` are members that are down but still within their grace period: the copies they
    hold stay (never as primary, never counted for balance), so a member that comes back
    catches up from where it was instead of being copied whole. The first eligible copy of a
    shard becomes its primary, so the caller orders copies by how up to date they are.

    ``draining`` are members in maintenance: alive, but to be emptied. Their copies go, except
    where the eligible members cannot make up the shard's copies (the others are down): there a
    draining copy stays, after the others, until a replacement can be made (the drain waits).
    """
    nodes = sorted(set(members))
    if not nodes:
        return [() for _ in range(shards)]
    eligible = set(nodes)
    kept = set(keep) - eligible
    held = [set(current[s]) if current is not None and s < len(current) else None for s in range(shards)]
    want = min(rf, len(eligible | kept))
    placement = [[m for m in (current[s] if current is not None and s < len(current) else ())
                  if m in eligible or m in kept][:want]
                 for s in range(shards)]
    # a shard whose every copy is down stays on them: unavailable until one returns, rather than
    # served empty by a new primary (the grace period bounds how long); a copy on a draining
    # member is alive, so its shard is no orphan: new copies are made from it
    leaving = set(draining) - eligible - kept
    orphans = {s for s, copies in enumerate(placement) if copies and not any(m in eligible for m in copies)
               and not (held[s] or set()) & leaving}
    load = _loads(placement, nodes)
    # fill: the least loaded members first, rendezvous order among equals
    for shard, copies in enumerate(placement):
        while shard not in orphans and len(copies) < want and any(m not in copies for m in nodes):
            member = min((m for m in nodes if m not in copies), key=lambda m: (load[m], -score(shard, m)))
            copies.append(member)
            load[member] += 1
    # a shard still short (the only members that could take a copy are down) keeps the copies it
    # has on draining members: better a drain that waits than a shard with fewer copies
    for shard, copies in enumerate(placement):
        if len(copies) < want and current is not None and shard < len(current):
            copies.extend([m for m in current[shard] if m in leaving][:want - len(copies)])
    # even out copies, one move at a time from the most to the least loaded member
    total = sum(load.values())
    low, high = total // len(nodes), -(-total // len(nodes))
    while True:
        heavy = max(nodes, key=lambda m: (load[m], m))
        light = min(nodes, key=lambda m: (load[m], m))
        if load[heavy] <= high and load[light] >= low or load[heavy] - load[light] <= 1:
            break
        # never the last live copy of a shard whose other copies are down: its data would rest on
        # down members and an empty new copy (the shard could not be served until one returned)
        movable = [s for s, copies in enumerate(placement) if heavy in copies and light not in copies
                   and s not in orphans and any(m in eligible for m in copies if m != heavy)]
        if not movable:
            break
        # prefer moving a replica (the primary keeps serving), then the best rendezvous fit
        shard = min(movable, key=lambda s: (placement[s][0] == heavy, -score(s, light), s))
        copies = placement[shard]
        if copies[0] == heavy and len(copies) > 1:
            # a primary's copy never moves in one step: a replica (which holds the data) takes
            # over the role and the new, empty copy joins as a replica
            copies.remove(heavy)
            copies.append(light)
        else:
            copies[copies.index(heavy)] = light
        load[heavy] -= 1
        load[light] += 1
    # a down member is never primary: the first eligible copy that held the shard before leads (a
    # copy this plan made is empty), then the other eligible ones, then draining ones (which
    # lead only a shard with no eligible copy), then down ones; stable otherwise
    for shard, copies in enumerate(placement):
        had = held[shard] or set()
        live = [m for m in copies if m in eligible]
        placement[shard] = ([m for m in live if m in had] + [m for m in live if m not in had]
                            + [m for m in copies if m in leaving]
                            + [m for m in copies if m not in eligible and m not in leaving])
    # even out primaries by swapping roles inside a shard: no data moves
    if want > 1:
        p_low, p_high = shards // len(nodes), -(-shards // len(nodes))
        primaries = dict.fromkeys(nodes, 0)
        for copies in placement:
            if copies and copies[0] in primaries:
                primaries[copies[0]] += 1
        progress = True
        while progress:
            progress = False
            for shard, copies in sorted(enumerate(placement), key=lambda sc: -score(sc[0], sc[1][0] if sc[1] else "")):
                # only a copy that held the shard before may take the role: a new one is empty
                before = held[shard]
                candidates = [m for m in copies[1:] if m in eligible and (before is None or m in before)]
                if not candidates or copies[0] not in eligible:
                    continue
                head = copies[0]
                if primaries[head] <= p_high and all(primaries[m] >= p_low for m in candidates):
                    continue
                best = min(candidates, key=lambda m: (primaries[m], m))
                if primaries[best] + 1 < primaries[head]:
                    copies.remove(best)
                    copies.insert(0, best)
                    primaries[head] -= 1
                    primaries[best] += 1
                    progress = True
    return [tuple(c) for c in placement]


def balance(placement: Sequence[Sequence[str]], members: Iterable[str]) -> float:
    """``dakera_shard_balance``: the largest deviation of a member's copy count from the mean,
    over the mean (0 = even). Within one copy of the mean this is at most ``members / copies``."""
    nodes = sorted(set(members))
    if not nodes:
        return 0.0
    load = _loads([[m for m in c if m in set(nodes)] for c in placement], nodes)
    mean = sum(load.values()) / len(nodes)
    return 0.0 if mean == 0 else max(abs(v - mean) for v in load.values()) / mean


def moved(before: Sequence[Sequence[str]], after: Sequence[Sequence[str]]) -> int:
    """Copies that must be created on a member that did not hold them."""
    return sum(len(set(b) - set(a)) for a, b in zip(before, after, strict=True))


def check(placement: Sequence[Sequence[str]], members: Iterable[str], shards: int, rf: int,
          down: Iterable[str] = (), width: int | None = None) -> list[str]:
    """What is wrong with a map a node was sent (empty when it is sound). ``width``: counted
    copies per shard (learners may follow them); by default every copy counts."""
    nodes = set(members)
    offline = set(down)
    want = min(rf, len(nodes)) if width is None else width
    problems = []
    if len(placement) != shards:
        problems.append(f"{len(placement)} shards, expected {shards}")
    for shard, copies in enumerate(placement):
        if len(set(copies)) != len(copies):
            problems.append(f"shard {shard} holds two copies on one member")
        counted = len(copies) if width is None else min(len(copies), want)
        if counted != want and not (copies and set(copies) <= offline):
            problems.append(f"shard {shard} has {len(copies)} copies, expected {want}")
        if width is not None and len(copies) > want + max(rf, 1):
            problems.append(f"shard {shard} has {len(copies) - want} learners, more than {max(rf, 1)}")
        if set(copies) - nodes:
            problems.append(f"shard {shard} is placed on non-members {sorted(set(copies) - nodes)}")
        if copies and copies[0] in offline and set(copies) - offline:
            problems.append(f"shard {shard} has a down primary {copies[0]} and a live copy")
    return problems
