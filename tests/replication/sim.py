"""A discrete-event simulator for replication and shard-map leadership: N nodes, no Trio.

Everything runs from one seed: a :class:`Schedule` (the fault events and client operations, in
true time) and a :class:`ReplicationSim` that plays it. Each node has its own drifting clock
(``local = offset + rate * true_time``); the network loses, delays and reorders messages and
fails whole (partitions), one way per pair (``cut``) or one way per node (``deaf``: hears
nothing, ``mute``: says nothing). Nodes crash keeping their disk or losing it, restart, join
and drain.

What runs on each node is the replication protocol's decision code, behind a thin adapter
(:class:`SimNode`) that does the I/O the actors do in the real node: it carries messages,
arms timers and keeps the disk.

Leadership of the shard map comes from a **leader oracle** rather than the lease cores: every
``ORACLE_PERIOD`` it renews the leader's lease while the leader talks both ways with a majority,
and elects another node with the next token once the leader could not for ``detect`` seconds.
The deposed leader believes in its lease until its own clock says ``ttl`` has passed since its
last renewal, so two nodes believe they lead at once whenever ``detect < ttl`` (chosen per
schedule): harsher than the real lease (whose own simulator, tests/lease/sim.py, proves it never
overlaps), so the shard map's fencing, not the lease, is what keeps the maps straight. The real
lease cores cost a few ms per simulated second for 5 nodes (their rounds, renewals and pre-votes
are most of the events), which would take most of the 10-20 ms a schedule may cost here.

The checker, after every step, uses the test-honesty rules of tests/sim/history.py (versions per
id, reads during faults, forgets that stay forgotten): a read served by a node that is not the
shard's current primary in the newest map is not judged (it is cut off: the known gap pinned in
tests/sim/test_replication.py), every other read must see the last write acknowledged before it
began or a later one; no two nodes acknowledge writes of one shard in one epoch; after the storm
and a quiet period every shard has its copies on eligible members, all equal to the primary's,
and the final values keep every acknowledged write. For ``primary`` acks the lost writes are
counted and their **loss window** (how long before its primary's failure a lost write was
acknowledged) is measured instead.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dakera_actors.replication.core import (
    Position,
    ShardProgress,
    ShardTail,
    TailEntry,
    decide,
    is_prefix,
    needed,
)
from dakera_actors.sharding.rebalance import read_round, settled, transferring
from dakera_actors.sharding.shardmap import ShardMap, acceptable, next_map
from dakera_actors.store.shard import shard_of

ABSENT = "absent"

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

    @classmethod
    def generate(cls, seed: int, mode: str, *, storm: float = 6.0) -> Schedule:
        rng = random.Random(seed)
        n = rng.randint(3, 5)
        ids = [f"n{i}" for i in range(n)]
        ttl = LEASE_TTL
        events: list[Event] = []
        joined, drained, wiped, down = 0, 0, 0, set()
        # faults: one every second or so during the storm; the first after the cluster formed
        t = rng.uniform(1.0, 2.0)
        while t < storm:
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
                   rng.choice([0.0, 0.0, 0.05, 0.1]), storm, events)

    def without(self, drop: set[int]) -> Schedule:
        return Schedule(self.seed, self.n, self.rf, self.shards, self.mode, self.drift, self.ttl, self.detect,
                        self.latency, self.loss, self.storm, [e for i, e in enumerate(self.events) if i not in drop],
                        self.excuse_down)

    def describe(self) -> str:
        head = (f"seed={self.seed} n={self.n} rf={self.rf} shards={self.shards} mode={self.mode} drift={self.drift} "
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
        ``invoked_before`` (tests/sim/history.py's rule): the value of the last write acknowledged
        before the read began (absent if none), or of any later write not known to have failed
        that was invoked before the read ended."""
        writes = [op for op in self.by_mid.get(mid, []) if op.outcome != "failed"]
        last = max((i for i, op in enumerate(writes) if op.outcome == "ok" and op.end < acked_before), default=None)
        allowed: set[Any] = {ABSENT} if last is None else {writes[last].value}
        later = writes if last is None else writes[last + 1:]
        return allowed | {op.value for op in later if op.start < invoked_before}

    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind != "read"]

    def share_acknowledged(self) -> float:
        writes = self.writes()
        return sum(op.outcome == "ok" for op in writes) / len(writes) if writes else 0.0


# -- per-node state ------------------------------------------------------------------------
@dataclass
class ShardData:
    """One shard's copy on a node's disk: the memories (id -> version) and its position."""

    data: dict[str, int] = field(default_factory=dict)
    pos: Position = (0, 0)
    log: list[TailEntry] = field(default_factory=list)  # the newest records (a WAL's tail, for replay)
    base: Position = (0, 0)  # position before log[0]


@dataclass
class Disk:
    shards: dict[int, ShardData] = field(default_factory=dict)
    map: ShardMap | None = None
    highest: int = 0  # the highest lease token this node has seen (the fence)


@dataclass
class Takeover:
    shards: set[int]
    waiting: set[str]
    deadline: float
    best: dict[int, tuple[Position, str]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    catching: dict[int, tuple[Position, str, float]] = field(default_factory=dict)  # shard -> (target, peer, until)
    failed: set[int] = field(default_factory=set)  # a catch-up fetch went unanswered: not this round
    map_key: tuple[int, int] = (0, 0)
    tid: int = 0
    phase: int = 0


class SimNode:
    """A node: its disk (survives a crash unless the crash takes the disk) and the volatile state
    of its replicator and shard-map actor, with the handlers the sim calls."""

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
        self.map: ShardMap | None = None
        self.tails: dict[int, ShardTail] = {}
        for shard, held in self.disk.shards.items():
            tail = self.tails[shard] = ShardTail(TAIL_LIMIT)
            tail.reset(held.base)
            for entry in held.log:  # the WAL replay feeds the tail
                tail.append(entry)
        self.progress: dict[int, ShardProgress] = {}
        self.live: set[int] = set()
        self.syncing: set[int] = set()
        self.live_since: dict[int, int] = {}
        self.previous: dict[int, str] = {}
        self.drop_at: dict[int, float] = {}
        self.networked = False
        self.fetching: dict[str, int] = {}  # primary peer -> id of the fetch in flight
        self.asked: dict[int, frozenset[int]] = {}  # takeover fetch id -> its shards
        self.held: dict[tuple[str, int], tuple[dict[int, Position], float]] = {}  # long polls we hold
        self.takeover: Takeover | None = None
        self.pending: list[tuple[Op, int, int, str]] = []  # writes waiting for acks: (op, shard, seq, via)
        # the shard-map actor and the lease, as the oracle tells it
        self.lease_token = 0
        self.lease_until = -1.0
        self.leader_state: dict[str, Any] = {}
        stored = self.disk.map
        if stored is not None:
            self.on_map(stored, networked=False)
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

    def shard(self, shard: int) -> ShardData:
        held = self.disk.shards.get(shard)
        if held is None:
            held = self.disk.shards[shard] = ShardData()
            self.tails[shard] = ShardTail(TAIL_LIMIT)
        return held

    def tail(self, shard: int) -> ShardTail:
        self.shard(shard)
        return self.tails[shard]

    def is_leader(self) -> bool:
        return self.lease_token > 0 and self.local() < self.lease_until

    def reachable(self, other: str) -> bool:
        return self.sim.sees(self.id, other)

    # -- storage -------------------------------------------------------------------------
    def apply(self, shard: int, seq: int, epoch: int, op: str, mid: str, version: int) -> None:
        """Log and apply one record (fsynced before anything is acknowledged: the WAL's rule)."""
        held = self.shard(shard)
        if op == "forget":
            held.data.pop(mid, None)
        else:
            held.data[mid] = version
        held.pos = (epoch, seq)
        if self.sim.exposed:
            acked = self.sim.exposed.pop((shard, epoch, seq), None)
            if acked is not None:
                self.sim.windows.append(self.sim.now - acked)
        entry = TailEntry(seq, epoch, op, (mid, version), 0.0, self.local())
        held.log.append(entry)
        if len(held.log) > TAIL_LIMIT:
            dropped = held.log.pop(0)
            held.base = (dropped.epoch, dropped.seq)
        self.tails[shard].append(entry)

    def install(self, shard: int, data: dict[str, int], pos: Position) -> None:
        held = self.shard(shard)
        held.data, held.pos, held.log, held.base = dict(data), pos, [], pos
        self.tails[shard].reset(pos)

    def drop(self, shard: int) -> None:
        self.install(shard, {}, (0, 0))

    # -- the map ---------------------------------------------------------------------------
    def offer(self, smap: ShardMap) -> str:
        """Install ``smap`` if it is newer and fenced (the shard-map actor's _consider)."""
        problems = acceptable(self.map, smap, shards=self.sim.shards)
        if problems:
            return "; ".join(problems)
        if smap.token < self.disk.highest:
            return f"stale token {smap.token}"
        self.disk.highest = smap.token
        self.disk.map = smap
        self.on_map(smap, networked=True)
        return ""

    def on_map(self, smap: ShardMap, *, networked: bool) -> None:
        """The replicator's _on_map: roles, takeovers, drops, fetch loops."""
        if self.map is not None and smap.key <= self.map.key:
            return
        if networked and self.map is not None:
            self.networked = True
        now = self.local()
        before, self.map = self.map, smap
        taking = False
        for shard, copies in enumerate(smap.placement):
            if copies and copies[0] == self.id:
                self.progress.setdefault(shard, ShardProgress()).assign(copies[1:], now)
                if shard in self.live and self.live_since.get(shard) != smap.primary_since(shard):
                    self.live.discard(shard)
                if shard not in self.live and shard not in self.syncing:
                    self.syncing.add(shard)
                    taking = True
                    old = before.placement[shard][:1] if before is not None else []
                    if old and old[0] != self.id:
                        self.previous[shard] = old[0]
            else:
                self.live.discard(shard)
                self.syncing.discard(shard)
                self.progress.pop(shard, None)
        for shard, copies in enumerate(smap.placement):
            held = self.disk.shards.get(shard)
            if self.id in copies:
                self.drop_at.pop(shard, None)
            elif self.networked and held is not None and (held.pos[1] or held.data) and shard not in self.drop_at:
                self.drop_at[shard] = now + DROP_DELAY
                self.timer(DROP_DELAY, "drop", shard)
        if taking and self.takeover is None:
            self.timer(0.0, "takeover")
        self.fetch_all()
        self.changed()

    def replicated_from(self, peer: str) -> list[int]:
        smap = self.map
        if smap is None:
            return []
        return [s for s, c in enumerate(smap.placement) if c and c[0] == peer and self.id in c[1:]]

    # -- replica side ------------------------------------------------------------------------
    def fetch_all(self) -> None:
        smap = self.map
        if smap is None:
            return
        for peer in sorted({c[0] for c in smap.placement if c and c[0] != self.id and self.id in c[1:]}):
            if peer not in self.fetching:
                self.fetch(peer)

    def fetch(self, peer: str, shards: list[int] | None = None, *, wait: float = LONG_POLL, purpose: str = "loop") -> None:
        shards = self.replicated_from(peer) if shards is None else shards
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
            self.timer(wait + REQUEST_TIMEOUT, "takeover_fetch_timeout", (self.takeover_id(), fid))
        positions = {s: self.shard(s).pos for s in shards}
        self.send(peer, ("fetch", fid, purpose, positions, wait))

    def _asked(self, fid: int) -> frozenset[int]:
        return self.asked.pop(fid, frozenset())

    def on_fetched(self, peer: str, fid: int, purpose: str, records: list[tuple[Any, ...]],
                   snapshots: dict[int, tuple[Position, dict[str, int]]]) -> None:
        if purpose == "loop" and self.fetching.get(peer) != fid:
            return  # an answer to a fetch we gave up on
        smap = self.map
        for shard, seq, epoch, op, (mid, version) in records:
            # fenced: a record is taken from the shard's primary in our map only (a takeover
            # fetch: from the copy the takeover chose), never from a deposed one
            if purpose == "loop" and (smap is None or smap.owner(shard) != peer or self.id == peer):
                continue
            if purpose == "takeover" and (self.takeover is None or shard not in self.takeover.catching):
                continue
            held = self.shard(shard)
            if seq == held.pos[1] + 1:
                self.apply(shard, seq, epoch, op, mid, version)
        for shard, (pos, data) in snapshots.items():
            if purpose == "loop" and (smap is None or smap.owner(shard) != peer):
                continue
            if pos > self.shard(shard).pos:
                self.install(shard, data, pos)
        if purpose == "loop":
            self.fetch(peer, wait=LONG_POLL)
        else:
            self.takeover_progress(fetched=frozenset(s for s, *_ in records) | frozenset(snapshots) | self._asked(fid))

    # -- primary side ------------------------------------------------------------------------
    def on_fetch(self, sender: str, fid: int, purpose: str, positions: dict[int, Position], wait: float) -> None:
        now = self.local()
        for shard, pos in positions.items():
            progress = self.progress.get(shard)
            tail = self.tail(shard)
            if progress is not None and is_prefix(tail, pos) and progress.ack(sender, pos[1], tail.last[1], now):
                self.changed()
            if decide(tail, pos) == "wait" and shard in self.live:
                self.retake(shard)
        if not self.answer_fetch(sender, fid, purpose, positions, force=wait == 0):
            self.held[(sender, fid)] = (positions, now + wait)
            self.timer(wait, "poll_timeout", (sender, fid))

    def answer_fetch(self, sender: str, fid: int, purpose: str, positions: dict[int, Position], *, force: bool) -> bool:
        records: list[tuple[Any, ...]] = []
        snapshots: dict[int, tuple[Position, dict[str, int]]] = {}
        for shard, pos in positions.items():
            tail = self.tail(shard)
            verdict = decide(tail, pos)
            if verdict == "records":
                records.extend((shard, e.seq, e.epoch, e.op, e.body) for e in tail.after(pos[1], max_records=64))
            elif verdict == "snapshot":
                held = self.shard(shard)
                snapshots[shard] = (held.pos, dict(held.data))
        if records or snapshots or force:
            self.send(sender, ("fetched", fid, purpose, records, snapshots))
            return True
        return False

    def changed(self) -> None:
        """Something was committed, acknowledged or remapped: answer long polls, count acks."""
        for (sender, fid), (positions, _until) in list(self.held.items()):
            if self.answer_fetch(sender, fid, "loop", positions, force=False):
                del self.held[(sender, fid)]
        if self.pending:
            self.sim.settle_writes(self)

    def retake(self, shard: int) -> None:
        self.live.discard(shard)
        self.syncing.add(shard)
        if self.takeover is None:
            self.timer(0.0, "takeover")

    # -- taking over -------------------------------------------------------------------------
    def start_takeover(self) -> None:
        smap = self.map
        if not self.syncing or smap is None or self.takeover is not None:
            return
        shards = set(self.syncing)
        asks: dict[str, list[int]] = {}
        for shard in shards:
            members = set(smap.placement[shard][1:])
            if shard in self.previous:
                members.add(self.previous[shard])
            for member in sorted(members - {self.id}):
                asks.setdefault(member, []).append(shard)
        # and every other reachable member, for the shards it is not a copy of: a copy a recent
        # map dropped keeps its data for DROP_DELAY and may hold what a dead primary acknowledged
        for member in self.sim.nodes:
            if member != self.id and self.reachable(member):
                asks[member] = sorted(set(asks.get(member, [])) | shards)
        waiting = {m for m in asks if self.reachable(m)}
        self.takeover = Takeover(shards, waiting, self.local() + REQUEST_TIMEOUT, map_key=smap.key,
                                 tid=self.sim.next_id())
        for member in sorted(waiting):
            self.send(member, ("posq", self.takeover_id(), sorted(asks[member]), smap))
        self.timer(REQUEST_TIMEOUT, "takeover_deadline", (self.takeover_id(), 0))
        if not waiting:
            self.takeover_progress()

    def takeover_id(self) -> int:
        return self.takeover.tid if self.takeover is not None else -1

    def on_positions(self, sender: str, tid: int, positions: dict[int, Position] | None) -> None:
        tk = self.takeover
        if tk is None or tid != tk.tid or sender not in tk.waiting:
            return
        tk.waiting.discard(sender)
        if positions is None:
            tk.blocked |= tk.shards
        else:
            for shard, pos in positions.items():
                if shard in tk.shards and pos > tk.best.get(shard, ((-1, -1), ""))[0]:
                    tk.best[shard] = (pos, sender)
        if not tk.waiting:
            self.takeover_progress()

    def takeover_progress(self, *, deadline: bool = False, fetched: frozenset[int] = frozenset()) -> None:
        tk = self.takeover
        if tk is None or (tk.waiting and not deadline):
            return
        tk.waiting.clear()
        now = self.local()
        if not tk.catching:
            for shard in sorted(tk.shards - tk.blocked):
                target = tk.best.get(shard)
                if target is not None and target[0] > self.shard(shard).pos:
                    tk.catching[shard] = (target[0], target[1], now + 4 * REQUEST_TIMEOUT)
            for shard, (_target, peer, _until) in tk.catching.items():
                self.fetch(peer, [shard], wait=0, purpose="takeover")
            if tk.catching:
                tk.phase = 1
                self.timer(4 * REQUEST_TIMEOUT, "takeover_deadline", (self.takeover_id(), 1))
                return
        else:
            behind = {s for s, (target, _p, until) in tk.catching.items()
                      if self.shard(s).pos < target and now < until and s not in tk.failed}
            if behind and not deadline:
                for shard in behind & fetched:  # not there yet: fetch again after a pause
                    self.timer(RETRY, "takeover_fetch", (self.takeover_id(), shard))
                return
        self.finish_takeover()

    def finish_takeover(self) -> None:
        tk = self.takeover
        assert tk is not None
        self.takeover = None
        smap = self.map
        done = {s for s in tk.shards - tk.blocked
                if s not in tk.catching or self.shard(s).pos >= tk.catching[s][0]}
        if smap is not None:
            taken = self.sim.map_by_key.get(tk.map_key, smap)
            for shard in done:
                if (shard in self.syncing and smap.owner(shard) == self.id
                        and smap.primary_since(shard) == taken.primary_since(shard)):
                    self.syncing.discard(shard)
                    self.previous.pop(shard, None)
                    self.live.add(shard)
                    self.live_since[shard] = smap.primary_since(shard)
        self.changed()
        if self.syncing:
            self.timer(RETRY, "takeover")

    def on_posq(self, sender: str, tid: int, shards: list[int], smap: ShardMap | None) -> None:
        if smap is not None:
            self.offer(smap)
            if self.map is None or self.map.key != smap.key:
                self.send(sender, ("pos", tid, None))
                return
            # the fence: nothing more from the shards' old primary (on_fetched checks the map)
        self.send(sender, ("pos", tid, {s: self.shard(s).pos for s in shards}))

    # -- writes --------------------------------------------------------------------------------
    def write(self, op: Op, shard: int, via: str) -> str | None:
        """Commit ``op`` as the shard's primary; None when not primary (a 503: not applied)."""
        smap = self.map
        if smap is None or smap.owner(shard) != self.id or shard not in self.live:
            return None
        held = self.shard(shard)
        if op.kind != "store" and op.mid not in held.data:
            return "missing"
        seq, epoch = held.pos[1] + 1, smap.epoch
        self.apply(shard, seq, epoch, op.kind, op.mid, op.value if op.kind != "forget" else 0)
        op.seq = (shard, epoch, seq)
        op.by = self.id
        self.pending.append((op, shard, seq, via))
        return "committed"

    def holders(self, shard: int, seq: int) -> frozenset[str]:
        progress = self.progress.get(shard)
        smap = self.map
        live = smap.live_copies(shard) if smap is not None else []
        return frozenset([self.id, *(m for m, p in (progress.replicas.items() if progress else ())
                                     if m in live and p.acked >= seq)])

    def write_state(self, shard: int, seq: int, mode: str) -> str:
        """ok, wait, or moved (the replicator's acknowledged())."""
        if mode == "primary":
            return "ok"
        smap = self.map
        assert smap is not None
        live = smap.live_copies(shard)
        if shard not in self.live or self.id not in live:
            return "moved"
        progress = self.progress.get(shard)
        have = 1 + (sum(1 for m, p in progress.replicas.items() if m in live and p.acked >= seq)
                    if progress is not None else 0)
        return "ok" if have >= needed(mode, len(live)) else "wait"

    # -- status (the leader polls learners through it) -----------------------------------
    def status_rows(self) -> list[list[Any]]:
        now = self.local()
        rows = []
        for shard in sorted(self.live | self.syncing):
            progress = self.progress.get(shard)
            tail = self.tail(shard)
            each = [] if progress is None or shard not in self.live else [
                [m, max(0, tail.last[1] - p.acked), p.seen_at > 0 and now - p.seen_at <= SILENT_REPLICA,
                 p.acked, int(progress.lag(m, tail, now)[1] * 1000)]
                for m, p in sorted(progress.replicas.items())]
            rows.append([shard, 0, 0, 0, 0, each])
        return rows

    # -- the shard-map leader ------------------------------------------------------------
    def leader_tick(self) -> None:
        if not self.is_leader():
            self.leader_state = {}
            return
        st = self.leader_state
        now = self.local()
        if st.get("token") != self.lease_token:
            st.clear()
            st.update(token=self.lease_token, view=None, caught=set(), resend=now + RESEND, poll=now + POLL,
                      asking=None, replies={}, force=True)
        view = self.sim.view_of(self.id)
        if view != st["view"]:
            st["view"], st["force"] = view, True
        if st["asking"] is None and st["force"]:
            st["force"] = False
            self.begin_recompute()
        if now >= st["resend"]:
            st["resend"] = now + RESEND
            self.broadcast()
        if now >= st["poll"]:
            st["poll"] = now + POLL
            current = self.map
            if current is not None and current.learners_any():
                pending = transferring(current.placement, current.counted)
                st["pending"] = pending
                st["status"] = {}
                for member in sorted({current.placement[s][0] for s in pending}):
                    if member == self.id:
                        st["status"][member] = self.status_rows()
                    else:
                        self.send(member, ("status?",))
                self.timer(POLL * 0.9, "round_end", self.lease_token)

    def round_end(self) -> None:
        st = self.leader_state
        current = self.map
        if not self.is_leader() or current is None or "pending" not in st:
            return
        found = read_round(st["pending"], current.owner, st["status"], caught_lag_ms=CAUGHT_UP_LAG_MS)
        st["caught"] = found.caught
        if found.caught and st["asking"] is None:
            self.begin_recompute()

    def begin_recompute(self) -> None:
        """Ask the surviving copies of orphaned shards their positions (the promotion order)."""
        st = self.leader_state
        current = self.map
        eligible, _draining, _keep = st["view"]
        if current is None:
            self.recompute(None)
            return
        placement = settled(current.placement, current.counted)
        orphaned = {s: [m for m in c if m in eligible] for s, c in enumerate(placement) if c and c[0] not in eligible}
        asks: dict[str, list[int]] = {}
        for shard, survivors in orphaned.items():
            if len(survivors) > 1:
                for member in survivors:
                    asks.setdefault(member, []).append(shard)
        if not asks:
            self.recompute(placement)
            return
        st["asking"] = (orphaned, placement, {})
        rid = self.sim.next_id()
        st["rid"] = rid
        for member, shards in asks.items():
            if member == self.id:
                st["asking"][2].update({(s, member): self.shard(s).pos for s in shards})
            else:
                self.send(member, ("posq", rid, shards, None))
        self.timer(REQUEST_TIMEOUT / 2, "order_end", rid)

    def order_end(self, rid: int) -> None:
        st = self.leader_state
        if not self.is_leader() or st.get("rid") != rid or st.get("asking") is None:
            return
        orphaned, placement, positions = st["asking"]
        st["asking"] = None
        eligible = set(st["view"][0])
        order = [list(c) for c in placement]
        for shard, survivors in orphaned.items():
            ranked = sorted(survivors, key=lambda m: positions.get((shard, m), (-1, -1)), reverse=True)
            order[shard] = ranked + [m for m in placement[shard] if m not in eligible]
        self.recompute(order)

    def recompute(self, order: list[list[str]] | None) -> None:
        st = self.leader_state
        eligible, draining, keep = st["view"]
        if not eligible:
            return
        caught = st["caught"]
        proposal = next_map(self.map, eligible, token=self.lease_token, shards=self.sim.shards, rf=self.sim.rf,
                            keep=keep, order=order, caught_up=lambda s, m: (s, m) in caught, draining=draining)
        if proposal is None:
            return
        if self.offer(proposal):
            return
        self.sim.published(proposal)
        self.broadcast()

    def broadcast(self) -> None:
        current = self.map
        if current is None or not self.is_leader():
            return
        eligible, draining, _keep = self.leader_state.get("view", ((), (), ()))
        for member in (*eligible, *draining):  # a draining member pulls it through gossip in the real node
            if member != self.id:
                self.send(member, ("map", current))

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
            st = self.leader_state
            if st.get("asking") is not None and st.get("rid") == tid:
                if positions is not None:
                    st["asking"][2].update({(s, src): p for s, p in positions.items()})
            else:
                self.on_positions(src, tid, positions)
        elif kind == "map":
            self.offer(msg[1])
        elif kind == "announce":
            self.disk.highest = max(self.disk.highest, msg[1])
        elif kind == "status?":
            self.send(src, ("status", self.status_rows()))
        elif kind == "status":
            if "status" in self.leader_state:
                self.leader_state["status"][src] = msg[1]
        elif kind in ("fwd", "fwd_reply"):
            self.sim.on_forward(self, src, msg)

    def on_timer(self, name: str, arg: Any) -> None:
        now = self.local()
        if name == "tick":
            self.leader_tick()
            self.timer(LEADER_TICK, "tick")
        elif name == "refetch":
            peer, fid = arg
            if self.fetching.get(peer) == fid:
                self.fetch(peer)
        elif name == "poll_timeout":
            sender, fid = arg
            held = self.held.pop((sender, fid), None)
            if held is not None:
                self.answer_fetch(sender, fid, "loop", held[0], force=True)
        elif name == "takeover":
            self.start_takeover()
        elif name == "takeover_deadline":
            if self.takeover is not None and (self.takeover_id(), self.takeover.phase) == arg:
                self.takeover_progress(deadline=True)
        elif name == "takeover_fetch_timeout":
            tid, fid = arg
            tk = self.takeover
            shards = self.asked.pop(fid, None)
            if tk is not None and self.takeover_id() == tid and shards is not None:
                tk.failed |= shards  # the real loop gives the shard up for this round
                self.takeover_progress()
        elif name == "takeover_fetch":
            tid, shard = arg
            tk = self.takeover
            if tk is not None and self.takeover_id() == tid and shard in tk.catching:
                self.fetch(tk.catching[shard][1], [shard], wait=0, purpose="takeover")
        elif name == "drop":
            shard = arg
            at = self.drop_at.get(shard)
            if at is None or at > now + 1e-9:
                return
            del self.drop_at[shard]
            smap = self.map
            if smap is None or self.id in smap.placement[shard]:
                return
            if any(not self.reachable(m) for m in smap.placement[shard]):
                self.drop_at[shard] = now + DROP_DELAY
                self.timer(DROP_DELAY, "drop", shard)
                return
            self.drop(shard)
        elif name == "round_end":
            if arg == self.lease_token:
                self.round_end()
        elif name == "order_end":
            self.order_end(arg)


# -- the simulation ------------------------------------------------------------------------
class ReplicationSim:
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
        self.groups: list[set[str]] = []
        self.cut: set[tuple[str, str]] = set()
        self.deaf: set[str] = set()
        self.mute: set[str] = set()
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

    def can_talk(self, a: str, b: str) -> bool:
        if (a, b) in self.cut or a in self.mute or b in self.deaf:
            return False
        if not self.groups:
            return True
        ga = next((i for i, g in enumerate(self.groups) if a in g), -1)
        gb = next((i for i, g in enumerate(self.groups) if b in g), -1)
        return ga == gb

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
        if dst not in self.nodes or not self.can_talk(src, dst) or (self.loss and self.rng.random() < self.loss):
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
                if node.up and node.incarnation == incarnation:
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
            self.check()
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
            self.groups = [set(g) for g in args]
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
            self.groups, self.cut, self.deaf, self.mute = [], set(), set(), set()
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
    def check(self) -> None:
        """After every step: what can be judged incrementally (acks per epoch, reads) is judged
        where it happens; here, that no live primary holds a history older than what the newest
        map's primary of the same epoch acknowledged."""

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
        self.run_until(self.now + 30.0, stop=self.converged)
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


def batch(mode: str, seeds: range) -> Tally:
    tally = Tally()
    for seed in seeds:
        tally.add(run(Schedule.generate(seed, mode)))
    return tally


def _batch(args: tuple[str, int, int]) -> Tally:
    mode, start, stop = args
    return batch(mode, range(start, stop))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import multiprocessing
    import time

    parser = argparse.ArgumentParser(description="Replication simulator: random fault schedules, checked.")
    parser.add_argument("--schedules", type=int, default=10_000, help="per ack mode")
    parser.add_argument("--modes", default="quorum,all,primary")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    status = 0
    for mode in args.modes.split(","):
        start = time.perf_counter()
        step = 500
        work = [(mode, s, min(s + step, args.first_seed + args.schedules))
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
