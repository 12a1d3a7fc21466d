"""A discrete-event simulator for replication and shard-map leadership: N nodes, no Trio.

Everything runs from one seed: a :class:`Schedule` (the fault events and client operations, in
true time) and a :class:`ReplicationSim` that plays it. Each node has its own drifting clock
(``local = offset + rate * true_time``); the network delays messages and fails whole
(partitions), one way per pair (``cut``) or one way per node (``deaf``: hears nothing, ``mute``:
says nothing); random loss hits gossip packets, while requests and answers ride streams that
lose nothing but break with their link (as the memory transport does). Nodes crash keeping their
disk or losing it, restart, join and drain. ``faults="one"`` keeps one node failed at a time,
each recovered a while before the next (what the README promises ``quorum``/``all`` survive);
``faults="any"`` lets failures pile up.

On each node run the real cores, :class:`ReplicationCore` and :class:`MapLeader`, behind a thin
adapter (:class:`SimNode`) that does what the Replicator and the ShardMapActor do around them:
carry messages, arm timers, keep the disk (the shard data, its position, the WAL's tail, the
map, the highest token seen), apply fetched records in order, fence fetches with position
queries, await a takeover's asks and confirmations.

Leadership of the shard map comes from a **leader oracle**, not the lease cores: every
``ORACLE_PERIOD`` it renews the leader's lease while the leader talks both ways with a majority,
and once the leader could not for ``detect`` seconds it elects another node with the next token
(announced by gossip, so a cut-off node learns it late). A deposed leader believes in its lease
until its own clock says ``ttl`` has passed since its last renewal, so two nodes believe they
lead at once whenever ``detect < ttl`` (chosen per schedule): harsher than the real lease (whose
own simulator, tests/lease/sim.py, checks it never overlaps), so the shard map's fencing, not the
lease, keeps the maps straight. Why not the lease cores: 3-5 of them cost about 45 ms per 9
simulated seconds (their renewals, pre-votes and votes are most of the events), four times what
a whole schedule costs here.

The checker uses the test-honesty rules of tests/sim/history.py (versions per id, reads during
faults, forgets that stay forgotten, a minimum acknowledged share). As it happens: a write
acknowledged by ``quorum``/``all`` is on as many copies as the mode asks for; no two nodes
acknowledge writes of one shard in one epoch; a read served by the shard's current primary (in
the newest map) sees the last write acknowledged before it began or a later one (a read from a
cut-off node is not judged: the README's known gap). After the storm and a quiet period every
shard has its copies on eligible members, all equal to the primary's, and the final values keep
every acknowledged write; a write whose every copy lost its disk, or was marked down by a newer
map, was promised nothing more (the README: one failure at a time) and is counted, not judged.
For ``primary`` acks the lost writes are counted and the **loss window** (how long an
acknowledged write waits for a second copy: a primary failing within it loses the write) is
measured instead.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dakera_actors.membership.member import Member, MemberState
from dakera_actors.replication.core import (
    DropCopy,
    ReplicationConfig,
    ReplicationCore,
    Retake,
    StartFetching,
    StartTakeover,
    TakeoverPlan,
    takeover_refusal,
)
from dakera_actors.replication.messages import Positions
from dakera_actors.replication.progress import needed
from dakera_actors.replication.tail import replaces
from dakera_actors.sharding.leader import (
    AnnounceHeader,
    Broadcast,
    CatchUp,
    LeaderTiming,
    Log,
    MapLeader,
    Poll,
    Recompute,
)
from dakera_actors.sharding.shardmap import ShardMap, acceptable
from dakera_actors.store.shard import shard_of
from dakera_actors.store.tail import Position, ShardTail, feed
from dakera_actors.wal.record import WalRecord

from .. import histrule
from ..linkfaults import LinkFaults

ABSENT = histrule.ABSENT

# -- protocol constants (seconds, local time): the actors', scaled to short schedules ---------
LONG_POLL = 0.5
RETRY = 0.2
REQUEST_TIMEOUT = 1.0
DROP_DELAY = 5.0  # 10 s in the actor, 5 request timeouts: the same ratio
SILENT_REPLICA = 5.0
LEADER_TICK = 0.25
POLL = 0.5
RESEND = 1.0
CAUGHT_UP_LAG_MS = 500
ORACLE_PERIOD = 0.25
DETECT = 1.0  # a member unheard this long is down in a node's view (SWIM's suspicion, shortened)
# a leader's lease, by its own clock, from its last renewal: shorter than DETECT, as the defaults
# have it (lease 1 s; a SWIM dead verdict takes a probe interval of 0.5 s times a suspicion
# multiplier of 4 or more): a leader cut off from the majority stops leading before it can see
# the majority dead (with a longer lease it publishes a map marking them down, and acknowledges
# quorum writes alone: see test_sim.py's lease-outlives-the-dead-verdict case)
LEASE_TTL = 0.9
GRACE = 3.0  # a down member's copies stay in the map (marked down) this long
CLIENT_TIMEOUT = 2.0
TAIL_LIMIT = 6  # small, so replicas that fall behind need whole copies
TRANSFER_TIMEOUT = 5.0
PACKETS = ("header", "announce")  # what random loss hits (see ReplicationSim.deliver)
REPLICATION = ReplicationConfig(drop_delay=DROP_DELAY, silent_replica=SILENT_REPLICA, handover_wait=10.0)
TIMING = LeaderTiming(settle=0.2, poll=POLL, resend=RESEND, waiting_report=10.0, caught_up_lag_ms=CAUGHT_UP_LAG_MS)


class Violation(AssertionError):
    pass


# -- the schedule: what happens, when, from one seed ----------------------------------------
@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # crash, restart, partition, cut, deaf, mute, heal, join, drain, loss, op
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"t={self.at:.2f} {self.kind} {' '.join(map(str, self.args))}"


@dataclass
class Schedule:
    seed: int
    n: int
    rf: int
    shards: int
    mode: str
    drift: float
    ttl: float
    detect: float
    latency: tuple[float, float]
    loss: float
    storm: float
    events: list[Event]
    excuse_down: bool = True
    faults: str = "one"
    stream_loss: bool = False

    @classmethod
    def generate(cls, seed: int, mode: str, *, faults: str = "one", storm: float = 6.0) -> Schedule:
        """``faults="one"``: one failed node at a time (crashed, cut off by a partition, one way
        or both, deaf or mute), each recovered (restarted, healed) a while before the next: what
        the README promises ``quorum`` and ``all`` survive. ``"any"``: faults pile up at random.
        Loss, delay, drift, joins and drains come on top in both."""
        rng = random.Random(seed)
        n = rng.randint(3, 5)
        ids = [f"n{i}" for i in range(n)]
        ttl = LEASE_TTL
        events: list[Event] = []
        joined, drained, wiped, down = 0, 0, 0, set()
        # faults: one every second or so during the storm; the first after the cluster formed
        t = rng.uniform(1.0, 2.0)
        if faults == "one":
            failed: str | None = None
            while t < storm:
                roll = rng.random()
                if failed is not None:
                    events.append(Event(t, "restart" if failed in down else "heal", (failed,)))
                    down.discard(failed)
                    failed = None
                    t += rng.uniform(1.0, 2.0)  # recovered (caught up) before the next failure
                    continue
                if roll < 0.55:
                    victim = rng.choice(ids)
                    kind = rng.choice(["crash", "isolate", "cut", "cut", "deaf", "mute"])
                    if kind == "crash":
                        keep = wiped > 0 or rng.random() < 0.7
                        wiped += not keep
                        events.append(Event(t, "crash", (victim, keep)))
                        down.add(victim)
                    elif kind == "isolate":
                        rest = tuple(sorted(set(ids) - {victim}))
                        events.append(Event(t, "partition", ((victim,), rest)))
                    elif kind == "cut":
                        other = rng.choice([m for m in ids if m != victim])
                        events.append(Event(t, "cut", (victim, other) if rng.random() < 0.5 else (other, victim)))
                    else:
                        events.append(Event(t, kind, (victim,)))
                    failed = victim
                    t += rng.uniform(0.5, 2.5)
                    continue
                if roll < 0.7 and joined < 1:
                    new = f"n{n + joined}"
                    joined += 1
                    ids.append(new)
                    events.append(Event(t, "join", (new,)))
                elif roll < 0.8 and drained < 1:
                    drained += 1
                    events.append(Event(t, "drain", (rng.choice(ids),)))
                else:
                    events.append(Event(t, "loss", (rng.choice([0.0, 0.05, 0.2, 0.5]),)))
                t += rng.uniform(0.3, 1.5)
        while faults == "any" and t < storm:
            roll = rng.random()
            if roll < 0.25:
                victim = rng.choice(ids)
                if victim in down:
                    events.append(Event(t, "restart", (victim,)))
                    down.discard(victim)
                else:
                    # at most one crash takes its disk: a quorum of copies tolerates one lost copy,
                    # not two (a write on two copies that both lose their disks is gone by design)
                    keep = wiped > 0 or rng.random() < 0.7
                    wiped += not keep
                    events.append(Event(t, "crash", (victim, keep)))
                    down.add(victim)
            elif roll < 0.45:
                shuffled = rng.sample(ids, len(ids))
                cut = rng.randint(1, len(ids) - 1)
                events.append(Event(t, "partition", (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))))
            elif roll < 0.55:
                a, b = rng.sample(ids, 2)
                events.append(Event(t, "cut", (a, b)))
            elif roll < 0.62:
                events.append(Event(t, rng.choice(["deaf", "mute"]), (rng.choice(ids),)))
            elif roll < 0.7 and joined < 1:
                new = f"n{n + joined}"
                joined += 1
                ids.append(new)
                events.append(Event(t, "join", (new,)))
            elif roll < 0.75 and drained < 1:
                drained += 1
                events.append(Event(t, "drain", (rng.choice(ids),)))
            elif roll < 0.8:
                events.append(Event(t, "loss", (rng.choice([0.0, 0.05, 0.2, 0.5]),)))
            else:
                events.append(Event(t, "heal"))
            t += rng.uniform(0.3, 1.5)
        # the workload: three clients, an operation every ~0.15 s each, during the storm
        for client in range(3):
            t = rng.uniform(0.5, 1.0)
            while t < storm:
                events.append(Event(t, "op", (f"c{client}", rng.random(), rng.random(), rng.random())))
                t += rng.expovariate(1 / 0.15)
        events.sort(key=lambda e: e.at)
        return cls(seed, n, min(3, n), 4, mode, rng.choice([0.0, 0.01, 0.02]), ttl,
                   rng.choice([0.5 * ttl, ttl, 1.5 * ttl]),
                   rng.choice([(0.001, 0.005), (0.001, 0.05), (0.01, 0.2)]),
                   rng.choice([0.0, 0.0, 0.05, 0.1]), storm, events, faults=faults)

    def without(self, drop: set[int]) -> Schedule:
        return Schedule(self.seed, self.n, self.rf, self.shards, self.mode, self.drift, self.ttl, self.detect,
                        self.latency, self.loss, self.storm, [e for i, e in enumerate(self.events) if i not in drop],
                        self.excuse_down, self.faults, self.stream_loss)

    def describe(self) -> str:
        head = (f"seed={self.seed} faults={self.faults} n={self.n} rf={self.rf} shards={self.shards} mode={self.mode} drift={self.drift} "
                f"detect={self.detect} latency={self.latency} loss={self.loss}")
        return "\n".join([head, *map(str, self.events)])


# -- the client history (the rules of tests/sim/history.py, without Trio) -----------------
@dataclass
class Op:
    kind: str  # store, update, forget, read
    mid: str
    agent: str
    client: str
    start: float
    end: float = float("inf")
    outcome: str = "pending"  # ok, failed, unknown, stale (a read from a cut-off node: not judged)
    value: Any = None
    by: str = ""  # the node that acknowledged (a write) or answered (a read)
    seq: tuple[int, int, int] | None = None  # (shard, epoch, seq) of an acknowledged write
    holders: frozenset[str] = frozenset()  # the copies it was durable on when acknowledged
    outvoted: bool = False  # a later map marked every one of those copies down
    isolated: bool = False  # acknowledged by a primary cut off from the majority (or by a deposed one)

    def __str__(self) -> str:
        return f"{self.kind} {self.mid}={self.value} by {self.by or '-'} [{self.start:.3f}, {self.end:.3f}] {self.outcome}"


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    by_mid: dict[str, list[Op]] = field(default_factory=dict)

    def add(self, op: Op) -> None:
        self.ops.append(op)
        if op.kind != "read":
            self.by_mid.setdefault(op.mid, []).append(op)

    def allowed(self, mid: str, *, acked_before: float, invoked_before: float) -> set[Any]:
        """What ``mid`` may hold for a read that began at ``acked_before`` and ended at
        ``invoked_before`` (see :func:`tests.histrule.allowed`)."""
        return histrule.allowed(self.by_mid.get(mid, []), acked_before=acked_before, invoked_before=invoked_before)

    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind != "read"]

    def share_acknowledged(self) -> float:
        return histrule.share_acknowledged(self.writes())


# -- per-node state ------------------------------------------------------------------------
@dataclass
class ShardData:
    """One shard's copy on a node's disk: the memories (id -> version) and its position."""

    data: dict[str, int] = field(default_factory=dict)
    pos: Position = (0, 0)
    #: the newest records (a WAL's tail, for replay) and the position before them
    log: ShardTail = field(default_factory=lambda: ShardTail(TAIL_LIMIT))


@dataclass
class Disk:
    shards: dict[int, ShardData] = field(default_factory=dict)
    map: ShardMap | None = None
    highest: int = 0  # the highest lease token this node has seen (the fence)


@dataclass
class Takeover:
    """One round of the replicator's takeover loop (the I/O between the core's calls)."""

    plan: TakeoverPlan
    tid: int
    waiting: set[str]
    answers: dict[str, Positions] = field(default_factory=dict)
    catching: dict[int, tuple[Position, str, float]] = field(default_factory=dict)  # shard -> (target, peer, until)
    failed: set[int] = field(default_factory=set)  # a catch-up fetch went unanswered: not this round
    ready: list[int] = field(default_factory=list)
    phase: int = 0  # 0: asking, 1: catching up, 2: confirming to the previous primaries
    done: list[int] = field(default_factory=list)
    confirming: set[int] = field(default_factory=set)  # fetch ids of the confirmations in flight


@dataclass(frozen=True)
class LeaseView:
    leader: str | None
    token: int
    is_self: bool


class SimNode:
    """A node: its disk (survives a crash unless the crash takes the disk), and the two cores
    under test, :class:`ReplicationCore` and :class:`MapLeader`, with the thin I/O around them
    that the Replicator and the ShardMapActor do in a real node: messages, timers, the disk."""

    def __init__(self, sim: ReplicationSim, node_id: str, rate: float, offset: float) -> None:
        self.sim, self.id, self.rate, self.offset = sim, node_id, rate, offset
        self.disk = Disk()
        self.up = False
        self.incarnation = 0
        self.maintenance = False

    def local(self, t: float | None = None) -> float:
        return self.offset + self.rate * (self.sim.now if t is None else t)

    # -- lifecycle -----------------------------------------------------------------------
    def boot(self) -> None:
        self.up = True
        self.incarnation += 1
        sim = self.sim
        self.tails: dict[int, ShardTail] = {}
        for shard in range(sim.shards):
            tail = self.tails[shard] = ShardTail(TAIL_LIMIT)
            held = self.disk.shards.get(shard)
            if held is not None:
                tail.reset(held.log.base)
                for record in held.log.entries:  # the WAL replay feeds the tail
                    feed(self.tails, record, self.local())
        self.core = ReplicationCore(self.id, self.tails, REPLICATION)
        self.leader = MapLeader(self.id, shards=sim.shards, rf=sim.rf, grace=GRACE, timing=TIMING,
                                transfer_timeout=TRANSFER_TIMEOUT)
        self.fetching: dict[str, int] = {}  # primary peer -> id of the loop's fetch in flight
        self.asked: dict[int, frozenset[int]] = {}  # takeover fetch id -> its shards
        self.fence: dict[int, int] = {}  # shard -> position queries answered (a fetch sent before is void)
        self.held: dict[tuple[str, int], tuple[list[list[int]], float]] = {}  # long polls we hold
        self.takeover: Takeover | None = None
        self.pending: list[tuple[Op, int, int, str]] = []  # writes waiting for acks: (op, shard, seq, via)
        self.lease_token = 0
        self.lease_until = -1.0
        self.view = LeaseView(None, 0, False)
        self.members_key: tuple[Any, ...] = ()
        self.recompute: tuple[int, Recompute, dict[tuple[int, str], Position]] | None = None
        self.catching_up: tuple[int, CatchUp, dict[str, ShardMap | None]] | None = None
        self.round: tuple[int, dict[str, Any], set[str]] | None = None
        stored = self.disk.map
        if stored is not None:
            self.carry_out(self.core.on_map(stored, self.local(), held=self.held_shards(), from_cluster=False))
            self.carry_out(self.leader.installed(stored, self.local()))
        self.timer(0.0, "tick")

    def crash(self, keep_disk: bool) -> None:
        self.up = False
        self.incarnation += 1
        if not keep_disk:
            self.disk = Disk()

    def timer(self, delay_local: float, name: str, arg: Any = None) -> None:
        self.sim.push(self.sim.now + delay_local / self.rate, "timer", (self.id, self.incarnation, name, arg))

    def send(self, dst: str, msg: tuple[Any, ...]) -> None:
        self.sim.deliver(self.id, dst, msg)

    # -- what the sim reads ----------------------------------------------------------------
    @property
    def map(self) -> ShardMap | None:
        return self.core.map

    @property
    def live(self) -> set[int]:
        return self.core.live

    @property
    def syncing(self) -> set[int]:
        return self.core.syncing

    def shard(self, shard: int) -> ShardData:
        held = self.disk.shards.get(shard)
        if held is None:
            held = self.disk.shards[shard] = ShardData()
        return held

    def held_shards(self) -> set[int]:
        return {s for s, d in self.disk.shards.items() if d.pos[1] or d.data}

    def is_leader(self) -> bool:
        return self.lease_token > 0 and self.local() < self.lease_until

    def reachable(self, other: str) -> bool:
        return self.sim.sees(self.id, other)

    def member_states(self) -> dict[str, MemberState]:
        """This node's membership view, as the cores take it (everyone it has heard of)."""
        return {m: MemberState.ALIVE if self.sim.sees(self.id, m) else MemberState.DEAD for m in self.sim.nodes}

    # -- storage (the shard owner and the WAL) -----------------------------------------------
    def apply(self, record: WalRecord) -> None:
        """Log and apply one record (fsynced before anything is acknowledged: the WAL's rule)."""
        shard = record.shard
        held = self.shard(shard)
        mid, version = record.body
        if record.op == "forget":
            held.data.pop(mid, None)
        else:
            held.data[mid] = version
        held.pos = (record.epoch, record.seq)
        if self.sim.exposed:
            acked = self.sim.exposed.pop((shard, record.epoch, record.seq), None)
            if acked is not None:
                self.sim.windows.append(self.sim.now - acked)
        held.log.append(record, self.sim.now)
        feed(self.tails, record, self.local())  # the owner keeps the tails in step

    def install(self, shard: int, data: dict[str, int], pos: Position) -> None:
        held = self.shard(shard)
        held.data, held.pos = dict(data), pos
        held.log.reset(pos)
        self.tails[shard].reset(pos)

    # -- effects -----------------------------------------------------------------------------
    def carry_out(self, effects: list[Any] | tuple[Any, ...]) -> None:
        for effect in effects:
            if isinstance(effect, StartFetching):
                if effect.peer not in self.fetching:
                    self.fetch(effect.peer)
            elif isinstance(effect, (StartTakeover, Retake)):
                if self.takeover is None:
                    self.timer(0.0, "takeover")
            elif isinstance(effect, DropCopy):
                self.install(effect.shard, {}, (0, 0))
            elif isinstance(effect, Recompute):
                self.start_recompute(effect)
            elif isinstance(effect, CatchUp):
                self.start_catch_up(effect)
            elif isinstance(effect, Poll):
                self.start_round(effect)
            elif isinstance(effect, Broadcast):
                for member in effect.to:
                    self.send(member, ("map", effect.map))
                # the others (draining, just joined) see the map header in the leader's gossip
                # all along, and pull: as often as the resend, here
                for member in self.sim.nodes:
                    if member != self.id and member not in effect.to:
                        self.send(member, ("header", effect.map.key))
            elif isinstance(effect, AnnounceHeader):
                # the header goes out in gossip; a member that is behind pulls the body
                for member in self.sim.nodes:
                    if member != self.id:
                        self.send(member, ("header", (effect.token, effect.version)))
            elif isinstance(effect, Log) and effect.level == "error":
                self.sim.note(f"{self.id} {effect.event} {effect.fields}")

    # -- the map -----------------------------------------------------------------------------
    def offer(self, smap: ShardMap) -> str:
        """Install ``smap`` if it is newer and fenced (the shard-map actor's checks)."""
        problems = acceptable(self.map, smap, shards=self.sim.shards)
        if problems:
            return "; ".join(problems)
        if smap.token < self.disk.highest:
            return f"stale token {smap.token}"
        self.disk.highest = smap.token
        self.disk.map = smap
        now = self.local()
        self.carry_out(self.core.on_map(smap, now, held=self.held_shards(), from_cluster=True))
        self.carry_out(self.leader.installed(smap, now))
        # a new map ends the long polls at once (the replicas look at it before fetching again)
        for (sender, fid), (positions, fences) in list(self.held.items()):
            del self.held[(sender, fid)]
            self.answer_fetch(sender, fid, "loop", positions, fences, force=True)  # type: ignore[arg-type]
        self.changed()
        return ""

    # -- replica side ----------------------------------------------------------------------
    def fetch(self, peer: str, shards: list[int] | None = None, *, wait: float = LONG_POLL,
              purpose: str = "loop") -> None:
        shards = self.core.replicated_from(peer) if shards is None else shards
        if not shards:
            self.fetching.pop(peer, None)
            return
        fid = self.sim.next_id()
        if purpose == "loop":
            self.fetching[peer] = fid
            if not self.reachable(peer):
                self.timer(RETRY, "refetch", (peer, fid))
                return
            self.timer(wait + REQUEST_TIMEOUT, "refetch", (peer, fid))  # the request's timeout
        else:
            self.asked[fid] = frozenset(shards)
            if purpose == "takeover":
                self.timer(wait + REQUEST_TIMEOUT, "takeover_fetch_timeout", (self.takeover_id(), fid))
            elif self.takeover is not None:
                self.takeover.confirming.add(fid)
        positions = [[s, *self.shard(s).pos] for s in shards]
        fences = {s: self.fence.get(s, 0) for s in shards}
        self.send(peer, ("fetch", fid, purpose, positions, wait, fences))

    def on_fetched(self, peer: str, fid: int, purpose: str, records: list[WalRecord],
                   snapshots: dict[int, tuple[Position, dict[str, int]]], fences: dict[int, int]) -> None:
        if purpose == "loop" and self.fetching.get(peer) != fid:
            return  # an answer to a fetch we gave up on
        for record in records:
            # a position query answered since this fetch was sent fenced it off (the real actor
            # waits for the fetch in flight before it answers: same effect)
            if fences.get(record.shard) != self.fence.get(record.shard, 0):
                continue
            if purpose == "takeover" and (self.takeover is None or record.shard not in self.takeover.catching):
                continue
            if purpose == "confirm" and record.shard not in self.asked.get(fid, ()):
                continue
            if record.seq == self.shard(record.shard).pos[1] + 1:
                self.apply(record)
        for shard, (pos, data) in snapshots.items():
            if fences.get(shard) != self.fence.get(shard, 0):
                continue
            if replaces(pos, self.shard(shard).pos):
                self.install(shard, data, pos)
        if purpose == "loop":
            self.fetch(peer, wait=LONG_POLL)
        elif purpose == "confirm":
            self.asked.pop(fid, None)
            tk = self.takeover
            if tk is not None and fid in tk.confirming:
                tk.confirming.discard(fid)
                if not tk.confirming:
                    self.complete_takeover()
        else:
            self.takeover_progress(fetched=frozenset(r.shard for r in records) | frozenset(snapshots)
                                   | self.asked.pop(fid, frozenset()))

    # -- primary side ------------------------------------------------------------------------
    def on_fetch(self, sender: str, fid: int, purpose: str, positions: list[list[int]], wait: float,
                 fences: dict[int, int]) -> None:
        if not self.answer_fetch(sender, fid, purpose, positions, fences, force=wait == 0):
            self.held[(sender, fid)] = (positions, fences)  # type: ignore[assignment]
            self.timer(wait, "poll_timeout", (sender, fid))

    def answer_fetch(self, sender: str, fid: int, purpose: str, positions: list[list[int]],
                     fences: dict[int, int], *, force: bool) -> bool:
        answer = self.core.on_fetch(sender, positions, self.local())
        self.carry_out(answer.effects)
        if answer.acked and self.pending:
            self.sim.settle_writes(self)
        if answer.records or answer.snapshot or force:
            snapshots = {s: (self.shard(s).pos, dict(self.shard(s).data)) for s in answer.snapshot}
            self.send(sender, ("fetched", fid, purpose, answer.records, snapshots, fences))
            return True
        return False

    def changed(self) -> None:
        """Something was committed or remapped: answer the long polls, count acks."""
        for (sender, fid), (positions, fences) in list(self.held.items()):
            if self.answer_fetch(sender, fid, "loop", positions, fences, force=False):  # type: ignore[arg-type]
                del self.held[(sender, fid)]
        if self.pending:
            self.sim.settle_writes(self)

    # -- taking over (the Replicator's takeover loop) ----------------------------------------
    def start_takeover(self) -> None:
        if self.takeover is not None:
            return
        plan = self.core.plan_takeover(self.member_states())
        if plan is None:
            return
        tk = self.takeover = Takeover(plan, self.sim.next_id(), set(plan.asks))
        for member, shards in sorted(plan.asks.items()):
            self.send(member, ("posq", tk.tid, shards, plan.map))
        self.timer(REQUEST_TIMEOUT, "takeover_deadline", (tk.tid, 0))
        if not tk.waiting:
            self.takeover_progress()

    def takeover_id(self) -> int:
        return self.takeover.tid if self.takeover is not None else -1

    def on_positions(self, sender: str, tid: int, positions: Positions) -> None:
        tk = self.takeover
        if tk is None or tid != tk.tid or sender not in tk.waiting:
            return
        tk.waiting.discard(sender)
        tk.answers[sender] = positions
        if not tk.waiting:
            self.takeover_progress()

    def takeover_progress(self, *, deadline: bool = False, fetched: frozenset[int] = frozenset()) -> None:
        tk = self.takeover
        if tk is None or (tk.waiting and not deadline):
            return
        tk.waiting.clear()
        now = self.local()
        if tk.phase == 0:
            own = {s: self.shard(s).pos for s in tk.plan.shards}
            verdict = self.core.takeover_sources(tk.plan, tk.answers, own, mode=self.sim.mode)
            tk.ready = list(verdict.ready)
            for shard, source in verdict.sources.items():
                tk.catching[shard] = (source.position, source.member, now + 4 * REQUEST_TIMEOUT)
                self.fetch(source.member, [shard], wait=0, purpose="takeover")
            tk.phase = 1
            if tk.catching:
                self.timer(4 * REQUEST_TIMEOUT, "takeover_deadline", (tk.tid, 1))
                return
        else:
            behind = {s for s, (target, _p, until) in tk.catching.items()
                      if self.shard(s).pos < target and now < until and s not in tk.failed}
            if behind and not deadline:
                for shard in behind & fetched:  # not there yet: fetch again after a pause
                    self.timer(RETRY, "takeover_fetch", (tk.tid, shard))
                return
        self.finish_takeover()

    def finish_takeover(self) -> None:
        """The round's shards that caught up: confirm to their previous primaries (one fetch at
        our final position, awaited: what it returns is applied before we go live), then live."""
        tk = self.takeover
        assert tk is not None
        tk.done = tk.ready + [s for s, (target, _p, _u) in tk.catching.items() if self.shard(s).pos >= target]
        tk.phase = 2
        for peer, shards in self.core.confirmations(tk.plan, tk.done).items():
            if self.reachable(peer):
                self.fetch(peer, shards, wait=0, purpose="confirm")
        if tk.confirming:
            self.timer(REQUEST_TIMEOUT, "takeover_deadline", (tk.tid, 2))
        else:
            self.complete_takeover()

    def complete_takeover(self) -> None:
        tk = self.takeover
        assert tk is not None
        self.takeover = None
        went = self.core.finish_takeover(tk.plan, tk.done)
        if went:
            heard = sorted(m for m in tk.plan.asks if m in tk.answers and not tk.answers[m].refused)
            self.sim.note(f"{self.id} live for {went} at {[self.shard(s).pos for s in went]}: asked "
                          f"{sorted(tk.plan.asks)}, heard {heard}")
        self.changed()
        if self.core.syncing:
            self.timer(RETRY, "takeover")

    def on_posq(self, sender: str, tid: int, shards: list[int], smap: ShardMap | None) -> None:
        if smap is not None:
            refusal = takeover_refusal(self.map, smap, self.offer(smap))
            if refusal:
                self.send(sender, ("pos", tid, Positions([], refusal)))
                return
            for shard in shards:  # the fence: nothing more from a fetch sent before this answer
                self.fence[shard] = self.fence.get(shard, 0) + 1
        self.send(sender, ("pos", tid, Positions([[s, *self.shard(s).pos] for s in shards])))

    # -- writes --------------------------------------------------------------------------------
    def write(self, op: Op, shard: int, via: str) -> str | None:
        """Commit ``op`` as the shard's primary; None when not writable here (a 503: not applied)."""
        smap = self.map
        if smap is None or smap.owner(shard) != self.id or not self.core.writable(shard):
            return None
        held = self.shard(shard)
        if op.kind != "store" and op.mid not in held.data:
            return "missing"
        seq, epoch = held.pos[1] + 1, self.core.epoch()
        self.apply(WalRecord(0, shard, op.kind, (op.mid, op.value if op.kind != "forget" else 0), 0.0, seq, epoch))
        op.seq = (shard, epoch, seq)
        op.by = self.id
        self.pending.append((op, shard, seq, via))
        return "committed"

    def holders(self, shard: int, seq: int) -> frozenset[str]:
        progress = self.core.progress.get(shard)
        smap = self.map
        live = smap.live_copies(shard) if smap is not None else []
        return frozenset([self.id, *(m for m, p in (progress.replicas.items() if progress else ())
                                     if m in live and p.acked >= seq)])

    def write_state(self, shard: int, seq: int, mode: str) -> str:
        """ok, wait, or moved (the core's ack_state)."""
        verdict = self.core.ack_state(shard, seq, mode).verdict
        return {"satisfied": "ok", "waiting": "wait"}.get(verdict, "moved")

    # -- the shard-map actor around MapLeader --------------------------------------------------
    def follow_lease_and_members(self) -> None:
        now = self.local()
        leads = self.is_leader()
        view = LeaseView(self.id if leads else None, self.lease_token if leads else self.disk.highest, leads)
        if view != self.view:
            self.view = view
            self.carry_out(self.leader.on_lease(view, now))
        key = self.sim.view_key(self.id)
        if key != self.members_key:
            self.members_key = key
            self.carry_out(self.leader.on_members(self.sim.members_of(self.id), now))
        if now >= self.leader.next_deadline():
            self.carry_out(self.leader.tick(now))

    def start_catch_up(self, effect: CatchUp) -> None:
        """As the actor: ask the members for their maps, then hand the answers to the core."""
        rid = self.sim.next_id()
        self.catching_up = (rid, effect, {})
        for member in effect.ask:
            self.send(member, ("mapq", rid))
        self.timer(REQUEST_TIMEOUT / 2, "catch_up_end", rid)

    def end_catch_up(self, rid: int) -> None:
        if self.catching_up is None or self.catching_up[0] != rid:
            return
        _, effect, maps = self.catching_up
        self.catching_up = None
        self.carry_out(self.leader.caught_up(maps, len(effect.ask), self.local(), effect.only))

    def start_recompute(self, effect: Recompute) -> None:
        rid = self.sim.next_id()
        positions: dict[tuple[int, str], Position] = {}
        self.recompute = (rid, effect, positions)
        for member, shards in sorted(effect.ask.items()):
            if member == self.id:
                positions.update({(s, member): self.shard(s).pos for s in shards})
            else:
                self.send(member, ("posq", rid, shards, None))
        if set(effect.ask) <= {self.id}:
            self.end_recompute(rid)
        else:
            self.timer(REQUEST_TIMEOUT / 2, "recompute_end", rid)

    def end_recompute(self, rid: int) -> None:
        if self.recompute is None or self.recompute[0] != rid:
            return
        _, effect, positions = self.recompute
        self.recompute = None
        proposal = self.leader.propose(positions, self.local(), only=effect.only)
        if proposal is None:
            return
        self.carry_out(proposal.effects)
        reason = self.offer(proposal.map)
        if reason:
            self.carry_out(self.leader.refused(proposal.map, reason))
        else:
            self.sim.published(proposal.map)

    def start_round(self, effect: Poll) -> None:
        rid = self.sim.next_id()
        replies: dict[str, Any] = {}
        self.round = (rid, replies, set(effect.primaries))
        for member in effect.primaries:
            if member == self.id:
                replies[member] = self.core.local_status(self.local())
            else:
                self.send(member, ("status?", rid))
        self.timer(TIMING.poll * 0.9, "round_end", rid)

    def end_round(self, rid: int) -> None:
        if self.round is None or self.round[0] != rid:
            return
        _, replies, asked = self.round
        self.round = None
        for member in asked - set(replies):
            replies[member] = "unreachable"
        self.carry_out(self.leader.on_round(replies, self.local()))

    # -- dispatch --------------------------------------------------------------------------
    def handle(self, src: str, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "fetch":
            self.on_fetch(src, *msg[1:])
        elif kind == "fetched":
            self.on_fetched(src, *msg[1:])
        elif kind == "posq":
            self.on_posq(src, *msg[1:])
        elif kind == "pos":
            _, tid, positions = msg
            if self.recompute is not None and self.recompute[0] == tid:
                if not positions.refused:
                    self.recompute[2].update({(s, src): (e, q) for s, e, q in positions.positions})
            else:
                self.on_positions(src, tid, positions)
        elif kind == "map":
            self.offer(msg[1])
        elif kind == "header":
            if self.map is None or tuple(msg[1]) > self.map.key:
                self.send(src, ("pull",))
        elif kind == "pull":
            if self.map is not None:
                self.send(src, ("map", self.map))
        elif kind == "mapq":
            self.send(src, ("mapa", msg[1], self.map))
        elif kind == "mapa":
            if self.catching_up is not None and self.catching_up[0] == msg[1]:
                self.catching_up[2][src] = msg[2]
                if len(self.catching_up[2]) == len(self.catching_up[1].ask):
                    self.end_catch_up(msg[1])
        elif kind == "announce":
            self.disk.highest = max(self.disk.highest, msg[1])
        elif kind == "status?":
            self.send(src, ("status", msg[1], self.core.local_status(self.local())))
        elif kind == "status":
            if self.round is not None and self.round[0] == msg[1]:
                self.round[1][src] = msg[2]
        elif kind in ("fwd", "fwd_reply"):
            self.sim.on_forward(self, src, msg)

    def on_timer(self, name: str, arg: Any) -> None:
        if name == "tick":
            self.follow_lease_and_members()
            self.carry_out(self.core.tick(self.local(), self.member_states()))
            self.timer(LEADER_TICK, "tick")
        elif name == "refetch":
            peer, fid = arg
            if self.fetching.get(peer) == fid:
                self.fetch(peer)
        elif name == "poll_timeout":
            sender, fid = arg
            held = self.held.pop((sender, fid), None)
            if held is not None:
                self.answer_fetch(sender, fid, "loop", held[0], held[1], force=True)  # type: ignore[arg-type]
        elif name == "takeover":
            self.start_takeover()
        elif name == "takeover_deadline":
            if self.takeover is not None and (self.takeover.tid, self.takeover.phase) == arg:
                if self.takeover.phase == 2:
                    self.complete_takeover()  # a confirmation unanswered: the real loop goes on
                else:
                    self.takeover_progress(deadline=True)
        elif name == "takeover_fetch_timeout":
            tid, fid = arg
            tk = self.takeover
            shards = self.asked.pop(fid, None)
            if tk is not None and tk.tid == tid and shards is not None:
                tk.failed |= shards  # the real loop gives the shard up for this round
                self.takeover_progress()
        elif name == "takeover_fetch":
            tid, shard = arg
            tk = self.takeover
            if tk is not None and tk.tid == tid and shard in tk.catching:
                self.fetch(tk.catching[shard][1], [shard], wait=0, purpose="takeover")
        elif name == "recompute_end":
            self.end_recompute(arg)
        elif name == "catch_up_end":
            self.end_catch_up(arg)
        elif name == "round_end":
            self.end_round(arg)


# -- the simulation ------------------------------------------------------------------------
class ReplicationSim(LinkFaults):
    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        seed = schedule.seed
        self.rng = random.Random(seed * 7919 + 1)  # the network's dice
        self.shards, self.rf, self.mode = schedule.shards, schedule.rf, schedule.mode
        self.latency, self.loss = schedule.latency, schedule.loss
        self.now = 0.0
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self.nodes: dict[str, SimNode] = {}
        clock_rng = random.Random(seed)
        self._clock_rng = clock_rng
        LinkFaults.__init__(self)
        self.lost_at: dict[tuple[str, str], float] = {}  # (a, b): when a stopped hearing b
        self.token = 0
        self.leader: str | None = None
        self.leader_unable_since: float | None = None
        self.history = History()
        self.acks: dict[tuple[int, int], str] = {}  # (shard, epoch) -> the node that acknowledged in it
        self.map_by_key: dict[tuple[int, int], ShardMap] = {}
        self.newest: ShardMap | None = None
        self.faults: list[tuple[float, str]] = []  # (time, node) a node crashed or was cut off
        self.clients: dict[str, Op | None] = {}
        self.mids = itertools.count()
        self.mine: dict[str, dict[str, list[Any]]] = {}  # client -> mid -> [agent, next version]
        self.steps = 0
        self.stale_reads = 0
        self.trace: list[str] = []
        self.lost: list[tuple[str, Any]] = []
        self.verbose = False
        #: primary acks: (shard, epoch, seq) of an acknowledged write -> when, until a second copy has it;
        #: how long that takes is the loss window (a primary failing within it loses the write)
        self.exposed: dict[tuple[int, int, int], float] = {}
        self.windows: list[float] = []
        self.wiped: list[tuple[float, str]] = []  # (time, node) of each crash that took the disk
        self.beyond = 0  # acknowledged writes whose every copy lost its disk (not judged)
        #: the README's promise: quorum/all count the *live* copies, so a write whose every copy
        #: is marked down by a newer map than the one it was written under (a majority of a shard's
        #: copies cut off at once: more than one failure at a time) may be superseded; False
        #: judges those writes too
        self.excuse_down = schedule.excuse_down
        self.stream_loss = schedule.stream_loss
        self.downs: list[tuple[int, frozenset[str]]] = []  # (epoch, down) of each map that marked some down
        for i in range(schedule.n):
            self.add_node(f"n{i}")
        self.push(0.0, "oracle", None)
        for index, event in enumerate(schedule.events):
            self.push(event.at, "event", index)

    # -- engine ----------------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def push(self, at: float, kind: str, data: Any) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, data))

    def add_node(self, node_id: str) -> None:
        drift = self.schedule.drift
        node = SimNode(self, node_id, self._clock_rng.uniform(1 - drift, 1 + drift), self._clock_rng.uniform(0, 100))
        self.nodes[node_id] = node
        node.boot()
        self.refresh_hearing()

    def hears(self, a: str, b: str) -> bool:
        return self.nodes[b].up and self.can_talk(b, a)

    def refresh_hearing(self) -> None:
        for a in self.nodes:
            for b in self.nodes:
                if a == b:
                    continue
                if self.hears(a, b):
                    self.lost_at.pop((a, b), None)
                elif (a, b) not in self.lost_at:
                    self.lost_at[(a, b)] = self.now

    def sees(self, a: str, b: str) -> bool:
        """Whether ``b`` is up in ``a``'s membership view: heard now, or lost too recently to tell."""
        if a == b:
            return True
        lost = self.lost_at.get((a, b))
        return lost is None or self.now - lost < DETECT

    def view_key(self, a: str) -> tuple[Any, ...]:
        """What ``a``'s membership view depends on (cheap: the view is rebuilt when it changes)."""
        return tuple((b, self.sees(a, b), self.lost_at.get((a, b)), node.maintenance) for b, node in self.nodes.items())

    def members_of(self, a: str) -> tuple[Member, ...]:
        """``a``'s membership view as Member records (since: ``a``'s clock when it saw one die)."""
        node_a = self.nodes[a]
        out = []
        for b, node in self.nodes.items():
            meta = {"maintenance": True} if node.maintenance else {}
            if self.sees(a, b):
                out.append(Member(b, "", "", 0, MemberState.ALIVE, meta, 0.0))
            else:
                out.append(Member(b, "", "", 0, MemberState.DEAD, meta, node_a.local(self.lost_at[(a, b)] + DETECT)))
        return tuple(out)

    def view_of(self, a: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(eligible, draining, kept) as the map leader on ``a`` derives them from its view."""
        eligible, draining, keep = [], [], []
        for b, node in self.nodes.items():
            if self.sees(a, b):
                (draining if node.maintenance else eligible).append(b)
            elif self.now - self.lost_at[(a, b)] < DETECT + GRACE:
                keep.append(b)
        return tuple(sorted(eligible)), tuple(sorted(draining)), tuple(sorted(keep))

    def deliver(self, src: str, dst: str, msg: tuple[Any, ...]) -> None:
        """Random loss hits packets (gossip: the map header, the lease announcement); requests and
        their answers ride streams, which lose nothing but break with the link (checked again on
        arrival), as the memory transport does. ``stream_loss`` drops those at random too (a
        reset connection)."""
        if dst not in self.nodes or not self.can_talk(src, dst):
            return
        if self.loss and (self.stream_loss or msg[0] in PACKETS) and self.rng.random() < self.loss:
            return
        self.push(self.now + self.rng.uniform(*self.latency), "msg", (src, dst, self.nodes[dst].incarnation, msg))

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        events = self._events
        while events and events[0][0] <= until:
            at, _, kind, data = heapq.heappop(events)
            self.now = max(self.now, at)
            self.steps += 1
            if kind == "msg":
                src, dst, incarnation, msg = data
                node = self.nodes[dst]
                if node.up and node.incarnation == incarnation and self.can_talk(src, dst):
                    node.handle(src, msg)
            elif kind == "timer":
                node_id, incarnation, name, arg = data
                node = self.nodes[node_id]
                if node.up and node.incarnation == incarnation:
                    node.on_timer(name, arg)
            elif kind == "oracle":
                self.oracle()
            elif kind == "event":
                self.apply_event(self.schedule.events[data])
            elif kind == "client_timeout":
                self.client_done(data, "unknown", None)
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    # -- the leader oracle ---------------------------------------------------------------------
    def majority_of(self, a: str) -> bool:
        talk = sum(1 for b in self.nodes if b == a or (self.hears(a, b) and self.hears(b, a)))
        return self.nodes[a].up and talk >= len(self.nodes) // 2 + 1

    def oracle(self) -> None:
        self.push(self.now + ORACLE_PERIOD, "oracle", None)
        leader = self.leader
        if leader is not None and self.majority_of(leader) and self.nodes[leader].lease_token == self.token:
            node = self.nodes[leader]
            node.lease_until = node.local() + self.schedule.ttl
            self.leader_unable_since = None
            return
        if leader is not None:
            if self.leader_unable_since is None:
                self.leader_unable_since = self.now
            if self.now - self.leader_unable_since < self.schedule.detect:
                return
        able = sorted(a for a in self.nodes if self.majority_of(a))
        if not able:
            return
        new = able[self.rng.randrange(len(able))]
        self.token += 1
        self.leader, self.leader_unable_since = new, None
        node = self.nodes[new]
        node.lease_token, node.lease_until = self.token, node.local() + self.schedule.ttl
        node.disk.highest = max(node.disk.highest, self.token)
        self.note(f"leader {new} token {self.token}")
        for other in self.nodes:
            if other != new:
                self.deliver(new, other, ("announce", self.token))

    # -- faults ----------------------------------------------------------------------------
    def note(self, what: str) -> None:
        self.trace.append(f"t={self.now:.3f} {what}")

    def apply_event(self, event: Event) -> None:
        kind, args = event.kind, event.args
        if kind == "op":
            self.client_op(*args)
            return
        self.note(str(event))
        if kind == "crash":
            node_id, keep_disk = args
            if node_id in self.nodes and self.nodes[node_id].up:
                self.nodes[node_id].crash(keep_disk)
                self.faults.append((self.now, node_id))
                if not keep_disk:
                    self.wiped.append((self.now, node_id))
        elif kind == "restart":
            if args[0] in self.nodes and not self.nodes[args[0]].up:
                self.nodes[args[0]].boot()
        elif kind == "partition":
            self.partition(*args)
            self.faults.extend((self.now, m) for g in args for m in g)
        elif kind == "cut":
            self.cut.add((args[0], args[1]))
            self.faults.append((self.now, args[0]))
        elif kind == "deaf":
            self.deaf.add(args[0])
            self.faults.append((self.now, args[0]))
        elif kind == "mute":
            self.mute.add(args[0])
            self.faults.append((self.now, args[0]))
        elif kind == "heal":
            self.heal()
        elif kind == "join":
            if args[0] not in self.nodes:
                self.add_node(args[0])
        elif kind == "drain":
            if args[0] in self.nodes:
                self.nodes[args[0]].maintenance = True
        elif kind == "loss":
            self.loss = args[0]
        self.refresh_hearing()

    def calm(self) -> None:
        """The storm is over: network whole, no loss, every node up (with what its disk kept)."""
        self.note("calm")
        self.groups, self.cut, self.deaf, self.mute = [], set(), set(), set()
        self.loss, self.latency = 0.0, (0.001, 0.005)
        for node in self.nodes.values():
            if not node.up:
                node.boot()
        self.refresh_hearing()

    def published(self, smap: ShardMap) -> None:
        self.note(f"map {smap.key} width={smap.counted} {smap.placement} down={smap.down} since={smap.since}")
        self.map_by_key[smap.key] = smap
        down = frozenset(smap.down)
        if down and self.excuse_down:
            self.downs.append((smap.epoch, down))
            for op in self.history.ops:
                if op.outcome == "ok" and op.holders and op.seq and op.seq[1] < smap.epoch and op.holders <= down:
                    op.outvoted = True
        if self.newest is None or smap.key > self.newest.key:
            self.newest = smap

    # -- the workload ------------------------------------------------------------------------
    def client_op(self, client: str, roll: float, pick: float, via_pick: float) -> None:
        if self.clients.get(client) is not None:
            return  # still waiting for its last operation
        up = [n for n in sorted(self.nodes) if self.nodes[n].up]
        if not up:
            return
        via = up[int(via_pick * len(up))]
        mine = self.mine.setdefault(client, {})
        if roll < 0.3 or not mine:
            agent = f"agent-{int(pick * 8)}"
            mid = f"{client}-{next(self.mids)}"
            op = Op("store", mid, agent, client, self.now, value=0)
        elif roll < 0.55:
            mid = sorted(mine)[int(pick * len(mine))]
            agent, version = mine[mid]
            mine[mid][1] += 1
            op = Op("update", mid, agent, client, self.now, value=version)
        elif roll < 0.65:
            mid = sorted(mine)[int(pick * len(mine))]
            agent, _ = mine.pop(mid)  # never written again, whatever the outcome
            op = Op("forget", mid, agent, client, self.now, value=ABSENT)
        else:
            stored = [o for o in self.history.ops if o.kind == "store"]
            if not stored:
                return
            target = stored[int(pick * len(stored))]
            op = Op("read", target.mid, target.agent, client, self.now)
        self.history.add(op)
        self.clients[client] = op
        self.push(self.now + CLIENT_TIMEOUT, "client_timeout", op)
        self.route(self.nodes[via], op)

    def route(self, via: SimNode, op: Op) -> None:
        smap = via.map
        shard = shard_of(op.agent, self.shards)
        primary = smap.owner(shard) if smap is not None else None
        if primary is None:
            self.client_done(op, "unknown", None)
        elif primary == via.id:
            self.execute(via, op, via.id)
        else:
            via.send(primary, ("fwd", op, via.id))

    def on_forward(self, node: SimNode, src: str, msg: tuple[Any, ...]) -> None:
        if msg[0] == "fwd":
            self.execute(node, msg[1], src)
        else:
            _, op, outcome, value, by = msg
            self.client_done(op, outcome, value, by)

    def reply(self, node: SimNode, via: str, op: Op, outcome: str, value: Any = None) -> None:
        if via == node.id:
            self.client_done(op, outcome, value, node.id)
        else:
            node.send(via, ("fwd_reply", op, outcome, value, node.id))

    def execute(self, node: SimNode, op: Op, via: str) -> None:
        shard = shard_of(op.agent, self.shards)
        smap = node.map
        if op.kind == "read":
            if smap is None or smap.owner(shard) != node.id or shard not in node.live:
                self.reply(node, via, op, "unknown")  # 503
                return
            self.reply(node, via, op, "ok", node.shard(shard).data.get(op.mid, ABSENT))
            return
        result = node.write(op, shard, via)
        if result is None:
            self.reply(node, via, op, "unknown")  # 503 (not applied, but a client cannot tell)
        elif result == "missing":
            self.reply(node, via, op, "failed")  # 404 (not applied)
        else:
            node.changed()  # wakes the long polls, then counts the acknowledgements

    def settle_writes(self, node: SimNode) -> None:
        still = []
        for op, shard, seq, via in node.pending:
            state = node.write_state(shard, seq, self.mode)
            if state == "wait":
                still.append((op, shard, seq, via))
                continue
            if state == "ok":
                assert op.seq is not None
                key = (op.seq[0], op.seq[1])
                other = self.acks.setdefault(key, node.id)
                if other != node.id:
                    raise Violation(f"shard {key[0]} epoch {key[1]}: writes acknowledged by {other} and {node.id}")
                op.holders = node.holders(shard, seq)
                if self.mode != "primary" and node.map is not None:
                    # the ack's own promise: durable on as many copies as the mode asks for
                    need = needed(self.mode, len(node.map.live_copies(shard)))
                    if len(op.holders) < need:
                        raise Violation(f"{op} acknowledged on {sorted(op.holders)}, {self.mode} needs {need} copies")
                op.isolated = not self.majority_of(node.id)
                op.outvoted = any(epoch > seq_epoch and op.holders <= down for epoch, down in self.downs
                                  for seq_epoch in (op.seq[1],))
                if self.mode == "primary":
                    self.exposed[op.seq] = self.now
                self.reply(node, via, op, "ok")
            else:
                self.reply(node, via, op, "unknown")
        node.pending = still

    def client_done(self, op: Op, outcome: str, value: Any, by: str = "") -> None:
        if op.outcome != "pending":
            return  # timed out already (or answered twice)
        op.end, op.outcome = self.now, outcome
        if by:
            op.by = by
        if self.verbose:
            self.note(f"{op} shard {shard_of(op.agent, self.shards)} {op.seq}")
        if self.clients.get(op.client) is op:
            self.clients[op.client] = None
        if op.kind == "read":
            op.value = value
            if outcome == "ok":
                self.check_read(op)
        elif op.kind == "store" and outcome == "ok":
            self.mine.setdefault(op.client, {})[op.mid] = [op.agent, 1]

    # -- the checker ---------------------------------------------------------------------------
    def beyond_faults(self, mid: str) -> bool:
        """Whether an acknowledged write of ``mid`` was on copies that all lost their disks since
        (more failures than its acknowledgement promised to survive: quorum of the *live* copies
        may be one copy when the others are down)."""
        for op in self.history.by_mid.get(mid, []):
            if op.outcome == "ok" and op.holders and (
                    op.outvoted or op.holders <= {n for t, n in self.wiped if t >= op.end}):
                return True
        return False

    def check_read(self, op: Op) -> None:
        shard = shard_of(op.agent, self.shards)
        newest = self.newest
        node = self.nodes[op.by]
        current = (newest is not None and node.map is not None and newest.owner(shard) == op.by
                   and node.map.primary_since(shard) == newest.primary_since(shard))
        if not current:
            op.outcome = "stale"
            self.stale_reads += 1
            return
        if self.mode == "primary":
            return
        allowed = self.history.allowed(op.mid, acked_before=op.start, invoked_before=op.end)
        if op.value not in allowed and not self.beyond_faults(op.mid):
            raise Violation(f"read {op} allowed {sorted(map(str, allowed))}: "
                            + "; ".join(map(str, self.history.by_mid.get(op.mid, []))))

    def converged(self) -> bool:
        leader = self.leader
        if leader is None or not self.nodes[leader].is_leader():
            return False
        smap = self.nodes[leader].map
        if smap is None or smap.learners_any():
            return False
        eligible = [n for n, node in self.nodes.items() if node.up and not node.maintenance]
        want = min(self.rf, len(eligible))
        for node in self.nodes.values():
            if node.map is None or node.map.key != smap.key:
                return False
        for shard, copies in enumerate(smap.placement):
            if len(copies) != want or not set(copies) <= set(eligible) or smap.down:
                return False
            primary = self.nodes[copies[0]]
            if shard not in primary.live:
                return False
            held = primary.shard(shard)
            for member in copies[1:]:
                other = self.nodes[member].shard(shard)
                if other.pos != held.pos or other.data != held.data:
                    return False
        return True

    def finish(self) -> list[str]:
        """Calm, quiet, then the final reads: problems with acknowledged writes (empty: none)."""
        self.calm()
        end = self.now + 30.0
        while self.now < end and not self.converged():
            self.run_until(self.now + LEADER_TICK)
        if not self.converged():
            raise Violation(f"not converged 30 s after the storm: {self.describe_state()}")
        # settle the writes still waiting (all their copies are back)
        self.run_until(self.now + CLIENT_TIMEOUT)
        leader = self.nodes[self.leader]  # type: ignore[index]
        smap = leader.map
        assert smap is not None
        problems = []
        for mid, writes in sorted(self.history.by_mid.items()):
            shard = shard_of(writes[0].agent, self.shards)
            value = self.nodes[smap.owner(shard)].shard(shard).data.get(mid, ABSENT)  # type: ignore[index]
            allowed = self.history.allowed(mid, acked_before=float("inf"), invoked_before=float("inf"))
            if value not in allowed and self.beyond_faults(mid):
                self.beyond += 1
            elif value not in allowed:
                problems.append(f"{mid}: final {value}, allowed {sorted(map(str, allowed))}: "
                                + "; ".join(map(str, writes)))
                self.lost.append((mid, value))
        return problems

    def describe_state(self) -> str:
        lines = [f"t={self.now:.2f} leader={self.leader} token={self.token}"]
        for node in self.nodes.values():
            smap = node.map
            lines.append(f"  {node.id} up={node.up} maint={node.maintenance} leads={node.is_leader() if node.up else '-'} "
                         f"map={smap.key if smap else None} live={sorted(node.live) if node.up else '-'} "
                         f"syncing={sorted(node.syncing) if node.up else '-'} "
                         f"pos={ {s: d.pos[1] for s, d in sorted(node.disk.shards.items())} }"
                         + (f" takeover={node.takeover}" if node.up and node.takeover else ""))
        if self.newest is not None:
            lines.append(f"  newest map {self.newest.key} width={self.newest.counted} {self.newest.placement} down={self.newest.down}")
        return "\n".join(lines)


# -- one schedule, its verdict, and shrinking -------------------------------------------------
@dataclass
class Outcome:
    schedule: Schedule
    failure: str | None
    steps: int
    acked: int
    writes: int
    lost: list[Op]
    windows: list[float]
    stale_reads: int
    trace: list[str]


def run(schedule: Schedule) -> Outcome:
    sim = ReplicationSim(schedule)
    failure = None
    problems: list[str] = []
    try:
        sim.run_until(schedule.storm)
        problems = sim.finish()
    except Violation as exc:
        failure = str(exc)
    lost_ops: list[Op] = []
    for mid, _value in sim.lost:
        acked = [op for op in sim.history.by_mid[mid] if op.outcome == "ok"]
        if acked:
            lost_ops.append(acked[-1])
    if problems and schedule.mode != "primary" and failure is None:
        failure = "acknowledged writes lost:\n" + "\n".join(problems)
    writes = sim.history.writes()
    return Outcome(schedule, failure, sim.steps, sum(op.outcome == "ok" for op in writes), len(writes),
                   lost_ops, sim.windows, sim.stale_reads, sim.trace)


def shrink(schedule: Schedule, *, budget: int = 300) -> Schedule:
    """Drop fault events and operations while the schedule still fails: first halves, then
    quarters ..., then one event at a time."""
    current = schedule
    tries = 0
    chunk = max(1, len(current.events) // 2)
    while chunk >= 1 and tries < budget:
        i, shrunk = 0, False
        while i < len(current.events) and tries < budget:
            candidate = current.without(set(range(i, min(i + chunk, len(current.events)))))
            tries += 1
            if run(candidate).failure is not None:
                current, shrunk = candidate, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return current


def report_failure(outcome: Outcome) -> str:
    small = shrink(outcome.schedule)
    again = run(small)
    return (f"replication simulation failed: seed={outcome.schedule.seed} mode={outcome.schedule.mode}\n"
            f"{outcome.failure}\n-- shrunk schedule ({len(small.events)} of {len(outcome.schedule.events)} events):\n"
            f"{small.describe()}\n-- its trace:\n" + "\n".join(again.trace[-60:]) + f"\n-- failure: {again.failure}")


# -- many schedules: the figures (`make sim SCHEDULES=N`) ------------------------------------
@dataclass
class Tally:
    """What a batch of schedules found."""

    schedules: int = 0
    steps: int = 0
    acked: int = 0
    writes: int = 0
    lost: int = 0  # acknowledged writes lost (primary acks; any elsewhere is a failure)
    windows: list[float] = field(default_factory=list)
    isolated: int = 0
    failures: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.schedules += 1
        self.steps += outcome.steps
        self.acked += outcome.acked
        self.writes += outcome.writes
        self.lost += len(outcome.lost)
        self.windows.extend(outcome.windows)
        self.isolated += sum(1 for op in outcome.lost if op.isolated)
        if outcome.failure is not None:
            self.failures.append(outcome)

    def share(self) -> float:
        return self.acked / self.writes if self.writes else 0.0

    def loss_window(self) -> str:
        """The lost acknowledged writes and how long before their primary's failure each was
        acknowledged (p50, p99, max, seconds)."""
        head = (f"{self.lost} of {self.acked} acknowledged writes lost ({100 * self.lost / max(1, self.acked):.2f}%), "
                f"{self.isolated} of them acknowledged by a primary cut off from the majority")
        if not self.windows:
            return head
        w = sorted(self.windows)
        pick = lambda q: w[min(len(w) - 1, int(q * len(w)))]  # noqa: E731
        return (f"{head}; an acknowledged write reached a second copy after p50 {pick(0.5) * 1000:.0f} ms, "
                f"p99 {pick(0.99) * 1000:.0f} ms, max {w[-1] * 1000:.0f} ms (the window in which its primary's "
                f"failure loses it; {len(w)} writes measured)")


def batch(mode: str, seeds: range, *, faults: str = "one", skip: frozenset[int] = frozenset()) -> Tally:
    tally = Tally()
    for seed in seeds:
        if seed not in skip:
            tally.add(run(Schedule.generate(seed, mode, faults=faults)))
    return tally


def _batch(args: tuple[str, int, int, str]) -> Tally:
    mode, start, stop, faults = args
    return batch(mode, range(start, stop), faults=faults)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import multiprocessing
    import time

    parser = argparse.ArgumentParser(description="Replication simulator: random fault schedules, checked.")
    parser.add_argument("--schedules", type=int, default=10_000, help="per ack mode")
    parser.add_argument("--modes", default="quorum,all,primary")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--faults", choices=["one", "any"], default="one",
                        help="one failed node at a time (what the README promises), or any pile-up")
    args = parser.parse_args(argv)
    status = 0
    for mode in args.modes.split(","):
        start = time.perf_counter()
        step = 500
        work = [(mode, s, min(s + step, args.first_seed + args.schedules), args.faults)
                for s in range(args.first_seed, args.first_seed + args.schedules, step)]
        total = Tally()
        with multiprocessing.Pool(args.jobs) as pool:
            for part in pool.imap(_batch, work):
                total.schedules += part.schedules
                total.steps += part.steps
                total.acked += part.acked
                total.writes += part.writes
                total.lost += part.lost
                total.windows += part.windows
                total.isolated += part.isolated
                total.failures += part.failures
                print(f"\r{mode}: {total.schedules}/{args.schedules} schedules, {len(total.failures)} failing",
                      end="", flush=True)
        elapsed = time.perf_counter() - start
        print(f"\r{mode}: {total.schedules} schedules in {elapsed:.1f} s ({total.schedules / elapsed:.0f}/s on "
              f"{args.jobs} process(es), {total.steps / max(1, total.schedules):.0f} events each), "
              f"{100 * total.share():.0f}% of {total.writes} writes acknowledged, {len(total.failures)} failing")
        if mode == "primary":
            print(f"primary: loss window: {total.loss_window()}")
        for outcome in total.failures[:3]:
            status = 1
            print(report_failure(outcome))
        if total.failures:
            print(f"{mode}: failing seeds: {[o.schedule.seed for o in total.failures][:50]}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
