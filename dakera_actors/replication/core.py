"""The replication protocol's pure core: who this node is for each shard, and every decision about it.

:class:`ReplicationCore` owns the per-shard roles of one node and makes the protocol's decisions;
the :class:`~dakera_actors.replication.actor.Replicator` around it carries them out (fetch loops,
serving streams, whole-shard copies, applying through the shard owner). Nothing here does I/O
or reads a clock: events come in with ``now`` (and the member states where they matter), effects
and verdicts come out, the way :mod:`dakera_actors.lease.core` works.

The rules, each in the method that applies it:

- **Roles follow the map** (:meth:`~ReplicationCore.on_map`): a shard this node is primary of is
  *syncing* (taking over) until a takeover finishes, then *live* (writable, readable); a role
  that changed hands in maps this node may not have seen makes it take the shard over again. A
  live shard the map moves away is *handing over* until the new primary confirms it holds every
  record (or ``handover_wait`` passes): drains wait for that. Replicas fetch from each primary
  they replicate from.
- **A fetch is an acknowledgement** (:meth:`~ReplicationCore.on_fetch`): a replica position on our
  history raises its acknowledged seq; the tail decides records, a whole copy, or nothing
  (:func:`~.tail.decide`); a replica holding a newer history than a live shard of ours makes us
  take the shard over again from it (*retake*); the new primary fetching at our final position
  confirms a handover.
- **A takeover asks first** (:meth:`~ReplicationCore.plan_takeover`,
  :meth:`~ReplicationCore.takeover_sources`, :meth:`~ReplicationCore.confirmations`,
  :meth:`~ReplicationCore.finish_takeover`): every copy, the previous primary and every other
  reachable member are asked where the shards are (each installs the map first and stops taking
  their records from anyone else); the newest history wins; a copy nobody knows of yet, or a
  refusal (a newer map), blocks the shard until the next round. A shard goes live only if its
  role has not changed hands since the round began.
- **A copy lost with its disk vouches for nothing** (:meth:`~ReplicationCore.forgetful`,
  :meth:`~ReplicationCore.recovered`): a node that starts with every copy empty (a replaced
  disk) may be named in the map as a copy of shards whose writes it acknowledged in its previous
  life. Until it has caught up with a live primary (or taken the shard over), or for
  ``amnesia`` seconds after start, its copy counts toward no takeover quorum (its own or
  another's: it answers which shards it lost), unless every counted copy answered: two empty
  copies must not outvote the one that holds the data.
- **Acknowledgements** (:meth:`~ReplicationCore.ack_state`): ``quorum``/``all`` count the copies the
  map counts (not learners, not copies marked down); a primary the map moved away, or marked down,
  never counts itself: the write is refused as "moved" (it may or may not be kept).
- **Old copies are deleted late** (:meth:`~ReplicationCore.tick`): a copy the map no longer names
  is dropped ``drop_delay`` after, and only while every copy the map names is Alive (a successor
  may still need what it holds); never before a map has come from the cluster since start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Literal

import attrs

from ..membership.member import MemberState
from ..sharding.shardmap import ShardMap
from ..store.tail import Position, ShardTail
from ..wal.record import WalRecord
from .messages import Positions
from .progress import ShardProgress, needed
from .rows import ReplicaStatus, ShardStatus
from .status import wanted_replicas
from .tail import decide, is_prefix


@attrs.frozen
class ReplicationConfig:
    handover_wait: float = 30.0  # an old primary waits this long for the new one to confirm
    # a copy the map no longer names is deleted this long after (a takeover may still read it)
    drop_delay: float = 10.0
    lag_alert_ms: int = 1000  # the seed's alert: a replica further behind is not healthy
    silent_replica: float = 5.0  # a replica that has not fetched for this long is not healthy
    max_fetch_records: int = 512


# -- effects: what the actor carries out -------------------------------------------------------
@attrs.frozen
class StartFetching:
    """Fetch from primary ``peer`` (start a fetch loop unless one runs)."""

    peer: str


@attrs.frozen
class StartTakeover:
    """``shards`` started taking over (start the takeover loop unless it runs)."""

    shards: tuple[int, ...]


@attrs.frozen
class Retake:
    """``copy`` holds a newer history of live ``shard`` than ours: it is syncing again."""

    shard: int
    copy: str
    position: Position


@attrs.frozen
class HandoverConfirmed:
    """The new primary of ``shard`` holds every record we wrote."""

    shard: int


@attrs.frozen
class DropCopy:
    """Delete this node's copy of ``shard`` (the map no longer names it, every copy is Alive)."""

    shard: int
    map_version: int


Effect = StartFetching | StartTakeover | Retake | HandoverConfirmed | DropCopy


# -- results -----------------------------------------------------------------------------------
@attrs.frozen
class FetchAnswer:
    """What a fetch gets: records that follow, shards to copy whole; ``acked``: an acknowledgement
    was news (wake the writes waiting for it); ``heads``: ``[shard, epoch, seq]`` of the asked
    shards this node serves live, as of this answer (a copy that reaches one holds every write
    acknowledged so far: see :meth:`ReplicationCore.recovered`)."""

    records: list[WalRecord]
    snapshot: list[int]
    acked: bool
    effects: list[Effect]
    heads: list[list[int]] = attrs.field(factory=list)


@attrs.frozen
class TakeoverPlan:
    """One takeover round: under ``map``, ask each member of ``asks`` where those shards are;
    ``blocked`` shards wait for the next round (a copy this node does not know yet)."""

    map: ShardMap
    shards: list[int]
    asks: dict[str, list[int]]
    blocked: frozenset[int]
    previous: dict[int, str]  # shard -> its primary before this node, to confirm to


@attrs.frozen
class Source:
    position: Position
    member: str


@attrs.frozen
class TakeoverVerdict:
    """From the answers: ``sources`` to catch up from (to that position), ``ready`` shards whose
    newest copy is ours, ``blocked`` shards that wait for the next round."""

    sources: dict[int, Source]
    ready: list[int]
    blocked: frozenset[int]


AckVerdict = Literal["satisfied", "moved", "waiting"]


@attrs.frozen
class AckState:
    verdict: AckVerdict
    have: int
    need: int


@attrs.frozen
class ShardLag:
    lag_ms: float
    lag_records: int
    healthy: int
    replicas: int


class ReplicationCore:
    """One node's replication roles and decisions (see the module docstring)."""

    def __init__(self, me: str, tails: dict[int, ShardTail], config: ReplicationConfig | None = None, *,
                 lost: Set[int] = frozenset(), lost_until: float = 0.0) -> None:
        self.me = me
        self.tails = tails
        self.cfg = config or ReplicationConfig()
        self.map: ShardMap | None = None
        self.live: set[int] = set()  # shards this node is primary of and has taken over
        self.syncing: set[int] = set()  # shards this node is primary of, still taking over
        self.live_since: dict[int, int] = {}  # shard -> the map's primary epoch it went live under
        self.previous: dict[int, str] = {}  # shard -> its primary in the map before, for the takeover
        #: shard -> its counted copies in the map before the one that made this node its primary:
        #: the writes acknowledged before the takeover are on enough of them (see takeover_sources)
        self.prior: dict[int, tuple[str, ...]] = {}
        self.drop_at: dict[int, float] = {}  # shard -> when to delete this node's copy
        #: shards this node was primary of until a map moved the role while it lived, until the
        #: new primary confirms it holds everything (or handover_wait passes): drains wait for it
        self.handing_over: dict[int, float] = {}
        self.networked = False  # a map has come from the cluster since start (not just the disk)
        self.progress: dict[int, ShardProgress] = {}
        #: shards whose copy here was lost with the disk (the node started with every copy empty):
        #: they vouch for nothing in a takeover until recovered, or until ``lost_until``
        self.lost: set[int] = set(lost)
        self.lost_until = lost_until

    # -- queries -----------------------------------------------------------------------
    def epoch(self) -> int:
        return self.map.epoch if self.map is not None else 0

    def writable(self, shard: int) -> bool:
        """May this node write ``shard`` as its primary now? (Always, without a map: a single node.)"""
        return self.map is None or shard in self.live

    def behind(self, routed: ShardMap | None) -> bool:
        """Is ``routed`` (the map requests are routed by, published before this core hears of it)
        newer than ours? A shard it makes this node primary of is not marked as being taken over
        until the core has it, so nothing may be served as primary meanwhile."""
        return routed is not None and (self.map is None or routed.key > self.map.key)

    def taking_over(self, shard: int) -> bool:
        return self.map is not None and shard in self.syncing

    def replicated_from(self, peer: str) -> list[int]:
        """The shards this node replicates from primary ``peer``."""
        smap = self.map
        if smap is None:
            return []
        return [s for s, c in enumerate(smap.placement) if c and c[0] == peer and self.me in c[1:]]

    @staticmethod
    def lost_at_start(tails: Mapping[int, ShardTail]) -> set[int]:
        """The shards a node starting on ``tails`` must treat as lost: all of them when every copy
        is empty (the disk was replaced, or the node is new), else none (an intact disk's empty
        copies are the truth)."""
        return set(tails) if all(tail.last == (0, 0) for tail in tails.values()) else set()

    def forgetful(self, shard: int, now: float) -> bool:
        """Does our copy of ``shard`` still count for nothing in a takeover (lost with the disk)?"""
        return shard in self.lost and now < self.lost_until

    def lost_of(self, shards: Iterable[int], now: float) -> list[int]:
        """Which of ``shards`` a position answer must say we lost (see :meth:`forgetful`)."""
        return [s for s in shards if self.forgetful(s, now)]

    def recovered(self, heads: Iterable[Sequence[int]]) -> list[int]:
        """A live primary's ``heads`` after its records (or a whole copy) were applied here: a lost
        copy that reached its shard's head holds every write acknowledged before the answer, so it
        vouches again. Returns the shards that recovered."""
        back = [s for s, epoch, seq in heads if s in self.lost and s in self.tails and self.tails[s].last >= (epoch, seq)]
        self.lost.difference_update(back)
        return back

    def next_deadline(self) -> float:
        return min(min(self.drop_at.values(), default=math.inf), min(self.handing_over.values(), default=math.inf))

    # -- the map -----------------------------------------------------------------------
    def on_map(self, smap: ShardMap, now: float, *, held: Set[int], from_cluster: bool) -> list[Effect]:
        """Follow a newer map: roles, fetch loops, takeovers, drop timers. ``held``: shards with data
        on this node; ``from_cluster``: the map came from the cluster (not the disk at start)."""
        if self.map is not None and smap.key <= self.map.key:
            return []
        if from_cluster and self.map is not None:
            self.networked = True
        before = self.map
        self.map = smap
        taking: list[int] = []
        for shard, copies in enumerate(smap.placement):
            if copies and copies[0] == self.me:
                self.progress.setdefault(shard, ShardProgress()).assign(copies[1:], now)
                if shard in self.live and self.live_since.get(shard) != smap.primary_since(shard):
                    self.live.discard(shard)  # the role changed hands in maps we may not have seen
                if shard not in self.live and shard not in self.syncing:
                    self.syncing.add(shard)
                    taking.append(shard)
                    old = before.placement[shard][:1] if before is not None else []
                    if old and old[0] != self.me:
                        self.previous[shard] = old[0]  # it may hold writes no copy has yet
                    if before is not None:
                        self.prior[shard] = tuple(before.placement[shard][:before.counted])
            else:
                if shard in self.live:
                    self.handing_over[shard] = now + self.cfg.handover_wait
                self.live.discard(shard)
                self.syncing.discard(shard)
                self.progress.pop(shard, None)
                self.prior.pop(shard, None)
        for shard, copies in enumerate(smap.placement):
            if self.me in copies:
                self.drop_at.pop(shard, None)
            elif self.networked and shard in held and shard not in self.drop_at:
                self.drop_at[shard] = now + self.cfg.drop_delay
        effects: list[Effect] = [StartFetching(peer) for peer in sorted(
            {c[0] for c in smap.placement if c and c[0] != self.me and self.me in c[1:]})]
        if taking:
            effects.append(StartTakeover(tuple(taking)))
        return effects

    # -- serving a fetch ---------------------------------------------------------------
    def on_fetch(self, member: str, positions: Sequence[Sequence[int]], now: float, *,
                 budget: float = math.inf, size: Callable[[WalRecord], int] = lambda _r: 0) -> FetchAnswer:
        """A fetch from ``member`` at ``positions`` ([shard, epoch, seq] each): count its
        acknowledgements and decide what it gets. Records stop at ``max_fetch_records`` and at
        ``budget`` bytes (``size`` measures one; the first record goes whatever its size)."""
        records: list[WalRecord] = []
        used = 0.0  # encoded bytes of records: a reply must fit one frame whatever the memories
        snapshot: list[int] = []
        acked = False
        effects: list[Effect] = []
        cap = self.cfg.max_fetch_records
        for shard, epoch, seq in positions:
            tail = self.tails.get(shard)
            if tail is None:
                continue  # not a shard of this cluster
            position = (epoch, seq)
            progress = self.progress.get(shard)
            if progress is not None and is_prefix(tail, position) and progress.ack(member, seq, tail.last[1], now):
                acked = True
            verdict = decide(tail, position)
            if verdict == "current" and shard in self.handing_over and self._owner(shard) == member:
                del self.handing_over[shard]  # the new primary has every record we wrote
                effects.append(HandoverConfirmed(shard))
            if verdict == "wait" and shard in self.live:
                # a replica holds a newer history than ours (we took over while it was unreachable
                # and have written nothing since): take the shard over again, from it
                self.live.discard(shard)
                self.syncing.add(shard)
                effects.append(Retake(shard, member, tail.last))
            if verdict == "records" and len(records) < cap and used < budget:
                for record in tail.after(seq, max_records=cap - len(records)):
                    n = size(record)
                    if records and used + n > budget:
                        used = budget  # full: the rest goes in the next fetch
                        break
                    records.append(record)
                    used += n
            elif verdict == "snapshot":
                snapshot.append(shard)
        heads = [[shard, *self.tails[shard].last] for shard, _e, _s in positions
                 if shard in self.live and shard in self.tails]
        return FetchAnswer(records, snapshot, acked, effects, heads)

    def _owner(self, shard: int) -> str | None:
        return self.map.owner(shard) if self.map is not None else None

    # -- taking over -------------------------------------------------------------------
    def plan_takeover(self, members: Mapping[str, MemberState]) -> TakeoverPlan | None:
        """Whom to ask where the syncing shards are: every copy (the ones marked down too: a member
        the leader saw die may be back), the previous primary even if the map dropped its copy (it
        was handed over alive), and every other reachable member (a copy a recent map dropped keeps
        its data for ``drop_delay``, and may be the only other holder of writes the dead primary
        acknowledged with it). A copy not in ``members`` at all (we just started) blocks its shard;
        one known down is not asked (the leader already chose over it)."""
        smap = self.map
        if smap is None or not self.syncing:
            return None
        shards = sorted(self.syncing)
        asks: dict[str, list[int]] = {}
        blocked: set[int] = set()
        for shard in shards:
            copies = set(smap.placement[shard][1:])
            if shard in self.previous:
                copies.add(self.previous[shard])
            for member in sorted(copies - {self.me}):
                state = members.get(member)
                if state is None:
                    blocked.add(shard)
                elif _reachable(state):
                    asks.setdefault(member, []).append(shard)
        for member, state in sorted(members.items()):
            if member != self.me and _reachable(state):
                mine = asks.setdefault(member, [])
                mine.extend(s for s in shards if s not in mine)
                mine.sort()
        return TakeoverPlan(smap, shards, {m: s for m, s in asks.items() if s}, frozenset(blocked),
                            {s: self.previous[s] for s in shards if s in self.previous})

    def takeover_sources(self, plan: TakeoverPlan, answers: Mapping[str, object],
                         own: Mapping[int, Position], *, mode: str = "primary", now: float = 0.0) -> TakeoverVerdict:
        """Read the answers (member -> :class:`Positions`, or anything else for no answer): the
        newest history of each shard wins; a refusal (the member has a newer map: ours is about to
        be replaced) blocks the shards asked of it. ``own``: this node's position in each shard.

        A shard is also blocked until enough copies answered (this node included) that every write
        ``mode`` acknowledged is among them (:func:`takeover_quorum`), both of its counted copies
        in this map and of those in the map before (the ones the previous primary counted acks
        over, when this node saw that map): a new primary that heard from too few could go live
        behind a write a quorum acknowledged, and its newer epoch would discard that write when
        the histories meet. A mute new primary, or one cut off from the copies, waits instead.

        A copy lost with its disk (ours, :meth:`forgetful`, or one whose answer says so) counts
        toward no quorum: it may have acknowledged writes it no longer holds. A group every copy
        of which answered is heard whatever they lost (the newest among them is all there is: a
        new cluster's empty shards, or a cluster restarting from its bucket)."""
        best: dict[int, Source] = {}
        blocked = set(plan.blocked)
        heard: dict[int, set[str]] = {shard: set() if self.forgetful(shard, now) else {self.me}
                                      for shard in plan.shards}
        answered: dict[int, set[str]] = {shard: {self.me} for shard in plan.shards}
        for member, answer in sorted(answers.items()):
            asked = plan.asks.get(member, [])
            if not isinstance(answer, Positions):
                continue  # no answer: it counts toward no shard's quorum
            if answer.refused:
                blocked.update(asked)
                continue
            lost = set(answer.lost)
            for shard, epoch, seq in answer.positions:
                if shard in asked:
                    answered[shard].add(member)
                    if shard not in lost:
                        heard[shard].add(member)
                    if shard not in best or (epoch, seq) > best[shard].position:
                        best[shard] = Source((epoch, seq), member)
        sources: dict[int, Source] = {}
        ready: list[int] = []
        for shard in plan.shards:
            groups = [set(plan.map.placement[shard][:plan.map.counted]), set(self.prior.get(shard, ()))]
            if any(group and not group <= answered[shard]
                   and len(heard[shard] & group) < takeover_quorum(mode, len(group)) for group in groups):
                blocked.add(shard)
            if shard in blocked:
                continue
            target = best.get(shard)
            if target is not None and target.position > own.get(shard, (0, 0)):
                sources[shard] = target
            else:
                ready.append(shard)
        return TakeoverVerdict(sources, ready, frozenset(blocked))

    def confirmations(self, plan: TakeoverPlan, done: Iterable[int]) -> dict[str, list[int]]:
        """The previous primary, alive, waits to hear that we hold everything it wrote (a drain
        counts it as remaining until then): one fetch at our final position tells it."""
        confirm: dict[str, list[int]] = {}
        for shard in sorted(done):
            previous = plan.previous.get(shard)
            if previous is not None:
                confirm.setdefault(previous, []).append(shard)
        return confirm

    def finish_takeover(self, plan: TakeoverPlan, done: Iterable[int]) -> list[int]:
        """Make the caught-up shards live. Maps change often while shards move: a takeover still
        counts if the role has not changed hands meanwhile (nobody else can have written the shard
        since); returns the shards that went live."""
        smap = self.map
        went: list[int] = []
        if smap is None:
            return went
        for shard in sorted(done):
            if (shard in self.syncing and smap.owner(shard) == self.me
                    and smap.primary_since(shard) == plan.map.primary_since(shard)):
                self.syncing.discard(shard)
                self.previous.pop(shard, None)
                self.prior.pop(shard, None)
                self.live.add(shard)
                self.live_since[shard] = plan.map.primary_since(shard)
                self.lost.discard(shard)  # taken over from a quorum: it holds every acknowledged write
                went.append(shard)
        return went

    # -- acknowledgements --------------------------------------------------------------
    def ack_state(self, shard: int, seq: int, mode: str) -> AckState:
        """Is ``seq`` of ``shard`` on as many copies as ``mode`` asks for? "moved": never will be here."""
        smap = self.map
        if mode == "primary" or smap is None:
            return AckState("satisfied", 1, 1)
        live = smap.live_copies(shard)
        need = needed(mode, len(live))
        if shard not in self.live or self.me not in live:
            # the map moved the shard (or marked us down) after the commit: our copy no longer
            # counts, and whether the new primary took this record over is not ours to say
            return AckState("moved", 0, need)
        progress = self.progress.get(shard)
        have = progress.count(seq, live) if progress is not None else 1
        return AckState("satisfied" if have >= need else "waiting", have, need)

    # -- lag and status ----------------------------------------------------------------
    def shard_lag(self, shard: int, now: float) -> ShardLag:
        """The worst lag of the counted replicas of a shard this node is primary of, and how many
        are healthy (within ``lag_alert_ms`` and fetching)."""
        smap = self.map
        progress = self.progress.get(shard)
        if smap is None or progress is None:
            return ShardLag(0.0, 0, 0, 0)
        live = smap.live_copies(shard)
        worst_ms, worst_records, healthy = 0.0, 0, 0
        for member in progress.replicas:
            records, seconds = progress.lag(member, self.tails[shard], now)
            if member in live:
                worst_ms, worst_records = max(worst_ms, seconds * 1000), max(worst_records, records)
                if seconds * 1000 <= self.cfg.lag_alert_ms and self._fresh(progress.replicas[member].seen_at, now):
                    healthy += 1
        return ShardLag(worst_ms, worst_records, healthy, len(smap.placement[shard]) - 1)

    def _fresh(self, seen_at: float, now: float) -> bool:
        return seen_at > 0 and now - seen_at <= self.cfg.silent_replica

    def local_status(self, now: float) -> list[ShardStatus]:
        """A row per shard this node is primary of; per-replica rows only once it is live."""
        out = []
        for shard in sorted(self.live | self.syncing):
            lag = self.shard_lag(shard, now)
            progress = self.progress.get(shard)
            tail = self.tails[shard]
            each = [] if progress is None or shard not in self.live else [
                ReplicaStatus(m, max(0, tail.last[1] - p.acked), self._fresh(p.seen_at, now), p.acked,
                              int(progress.lag(m, tail, now)[1] * 1000))
                for m, p in sorted(progress.replicas.items())]
            out.append(ShardStatus(shard, int(lag.lag_ms), lag.lag_records, lag.healthy, lag.replicas, each))
        return out

    def under_replicated(self, now: float) -> int:
        """Shards this node is primary of with fewer healthy replicas than wanted."""
        smap = self.map
        if smap is None:
            return 0
        want = wanted_replicas(smap)
        return sum(1 for s in self.live | self.syncing if self.shard_lag(s, now).healthy < want)

    # -- timers ------------------------------------------------------------------------
    def tick(self, now: float, members: Mapping[str, MemberState]) -> list[Effect]:
        """Expire handovers nobody came for (not holding a drain forever) and drop old copies that
        are due, while every copy the map names is Alive (else wait ``drop_delay`` more: if the
        unwell copy was the primary, its successor may still need what this copy holds)."""
        for shard, until in list(self.handing_over.items()):
            if until <= now:
                del self.handing_over[shard]
        effects: list[Effect] = []
        for shard, at in sorted(self.drop_at.items()):
            if at > now:
                continue
            del self.drop_at[shard]
            smap = self.map
            if smap is None or self.me in smap.placement[shard]:
                continue
            if any(members.get(m) != MemberState.ALIVE for m in smap.placement[shard]):
                self.drop_at[shard] = now + self.cfg.drop_delay
                continue
            effects.append(DropCopy(shard, smap.version))
        return effects


def takeover_quorum(mode: str, copies: int) -> int:
    """Counted copies (the new primary's own included) a takeover must hear from before the
    shard goes live: enough to meet every set of copies a ``mode`` write was acknowledged by
    (``copies`` - needed + 1). ``primary`` promises nothing on failover: the new primary's own
    copy will do, so a shard stays available whatever else is down."""
    if mode == "primary":
        return 1
    return copies - needed(mode, copies) + 1


def takeover_refusal(installed: ShardMap | None, asked: ShardMap, offer_reason: str) -> str:
    """Why a position query carrying the map ``asked`` is refused here ("" when it is answered):
    it is answered only once that very map is installed (``installed``, after offering it; the
    offer's refusal ``offer_reason`` says why not, else a newer map is installed here)."""
    if installed is not None and installed.key == asked.key:
        return ""
    return offer_reason or "a newer map is installed here"


def _reachable(state: MemberState) -> bool:
    return state in (MemberState.ALIVE, MemberState.SUSPECT)
