"""The fault schedule of a chaos run, drawn from a seed before the run starts (pure: no I/O).

A run is a sequence of steps. Each step holds at most one network fault and at most one process
fault at once (so "all at once" means a partition while a node is paused, delay while a node
restarts, ...), lasts a few seconds, and ends with everything healed before a short calm. Two
limits keep a run inside the fault model the README promises (RF=3, quorum writes: one copy may
be lost at a time): a restart on an empty disk is always a step of its own, and a process fault
touches one node. Which node a fault names that depends on the run (the leader) is resolved when
the step starts and written into the timeline.
"""

from __future__ import annotations

import random

import attrs

NETWORK = ("partition", "oneway", "isolate-minority", "isolate-leader", "ring", "netem")
PROCESS = ("pause", "kill", "wipe", "clock-jump", "drain", "join")
KINDS = NETWORK + PROCESS
#: faults after which a read may miss acknowledged writes (README, "Known gap": no read lease)
STALE_READS_EXPECTED = frozenset({"partition", "oneway", "isolate-minority", "isolate-leader", "ring", "pause"})


@attrs.frozen
class Fault:
    kind: str
    #: nodes (1-based) the fault names: the cut-off side, the paused node, ...; empty when resolved
    #: at run time (isolate-leader) or not about nodes
    nodes: tuple[int, ...] = ()
    #: the other side, for one-way cuts (nodes -> other is cut)
    other: tuple[int, ...] = ()
    #: netem: ((src, dst, loss, duplicate, delay, jitter), ...); clock-jump: (seconds,)
    params: tuple = ()

    def describe(self) -> str:
        parts = [self.kind]
        if self.nodes:
            parts.append("nodes=" + ",".join(f"n{i}" for i in self.nodes))
        if self.other:
            parts.append("->" + ",".join(f"n{i}" for i in self.other))
        if self.params:
            parts.append(f"params={self.params}")
        return " ".join(parts)


@attrs.frozen
class Step:
    at: float  # seconds from the start of the fault phase
    length: float
    faults: tuple[Fault, ...]


def schedule(seed: int, duration: float, n: int, kinds: tuple[str, ...] | list[str], *,
             clock_nodes: tuple[int, ...] = (), spare: int | None = None) -> list[Step]:
    """Steps filling ``duration`` seconds for ``n`` nodes. ``clock_nodes``: the nodes whose clock the
    runner can jump; ``spare``: the node kept out at the start, for ``join`` (started once)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    network = [k for k in NETWORK if k in kinds]
    process = [k for k in PROCESS if k in kinds and not (k == "clock-jump" and not clock_nodes)]
    members = [i for i in range(1, n + 1) if i != spare]
    joined = spare is None
    steps: list[Step] = []
    t = 2.0
    while t < duration:
        length = rng.uniform(4.0, 9.0)
        faults: list[Fault] = []
        kind = rng.choice(process) if process and rng.random() < 0.7 else None
        if kind == "join" and joined:
            kind = rng.choice([k for k in process if k != "join"] or [None])
        if kind == "wipe":
            faults.append(Fault("wipe", (rng.choice(members),)))
            length = rng.uniform(8.0, 12.0)  # the empty node takes whole copies back before the next step
        else:
            if kind is not None:
                faults.append(_process_fault(rng, kind, members, clock_nodes, spare))
                if kind == "join":
                    joined = True
                    members.append(spare)  # type: ignore[arg-type]
            if network and (kind is None or rng.random() < 0.6):
                faults.append(_network_fault(rng, rng.choice(network), members))
        if faults:
            steps.append(Step(round(t, 3), round(length, 3), tuple(faults)))
        t += length + rng.uniform(1.0, 3.0)
    return steps


def _process_fault(rng: random.Random, kind: str, members: list[int], clock_nodes: tuple[int, ...],
                   spare: int | None) -> Fault:
    if kind == "clock-jump":
        return Fault(kind, (rng.choice(clock_nodes),), params=(round(rng.choice([-1, 1]) * rng.uniform(2, 40), 1),))
    if kind == "join":
        return Fault(kind, (spare,))  # type: ignore[arg-type]
    return Fault(kind, (rng.choice(members),))


def _network_fault(rng: random.Random, kind: str, members: list[int]) -> Fault:
    shuffled = rng.sample(members, len(members))
    minority = (len(members) - 1) // 2  # strictly fewer than the rest
    if kind == "partition":
        cut = rng.randint(1, minority)
        return Fault(kind, tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
    if kind == "oneway":
        cut = rng.randint(1, len(members) - 1)
        return Fault(kind, tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
    if kind == "isolate-minority":
        return Fault(kind, tuple(sorted(shuffled[:minority])), tuple(sorted(shuffled[minority:])))
    if kind == "isolate-leader":
        return Fault(kind)
    if kind == "ring":
        return Fault(kind, tuple(shuffled))  # each node hears only its two neighbours in this order
    links = []
    for _ in range(rng.randint(1, len(members))):
        src, dst = rng.sample(members, 2)
        links.append((src, dst, round(rng.choice([0, 0, 0.05, 0.2]), 2), round(rng.choice([0, 0, 0.05, 0.2]), 2),
                      round(rng.choice([0, 0.02, 0.1, 0.3]), 3), round(rng.choice([0, 0.01, 0.05]), 3)))
    return Fault("netem", params=tuple(links))


def ring_cuts(order: tuple[int, ...]) -> set[tuple[int, int]]:
    """Directed links cut so that each node of ``order`` reaches only its neighbours (a majority
    ring: every node sees a majority counting itself when there are five)."""
    n = len(order)
    near = {(order[i], order[(i + d) % n]) for i in range(n) for d in (-1, 1)}
    return {(a, b) for a in order for b in order if a != b and (a, b) not in near}


#: measurement slack, in seconds, when comparing a write's acknowledgement with a window's start
#: (the runner notes a fault after applying it; the client's clock reads the answer a little late)
WINDOW_SLACK = 1.0


def excused(write_acked: float, read_span: tuple[float, float], windows: list[tuple[float, float]]) -> bool:
    """May a read spanning ``read_span`` miss a write acknowledged at ``write_acked``?

    Only what a cut-off or paused primary cannot know: a read that overlaps a window (a
    partition-like fault or a pause, until ``STALE_GRACE`` after it healed) may miss a write
    acknowledged after that window began. A write acknowledged before the fault was on the
    primary that acknowledged it, so missing it is a bug whatever faults overlap the read."""
    invoked, completed = read_span
    return any(invoked <= end and completed >= start and write_acked >= start - WINDOW_SLACK
               for start, end in windows)
