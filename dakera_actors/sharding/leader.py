"""The shard-map leader's scheduling, pure: when to plan a map, push it, poll transfers, give up on one.

Only the lease holder plans maps. It plans again whenever the eligible members (Alive or
Suspect, not in maintenance) or the kept ones (Dead for less than the grace period: their copies
stay, marked down) change, after a short settle so a burst of changes makes one map; at once when
it becomes leader (the map must carry its token); at once when a poll round finds a learner
caught up (flip it) or a transfer stalled (abandon it); and once more when transfers finish
(primaries can then move onto the copies that have the data). It re-sends its map every few
seconds, so a member that missed one catches up.

While the map has learners the leader asks their primaries every ``poll`` seconds how far each
learner is (:func:`~.rebalance.read_round`), watches progress (:class:`~.rebalance.TransferWatch`),
reports a transfer without progress (``transfer_waiting``) and abandons one that made none for
``transfer_timeout`` (``transfer_stalled``): its learner leaves the next map and the step after
starts it again.

:class:`MapLeader` takes events with the time and returns effects; the shard-map actor carries
them out (asks, pushes, gossip, logs) and feeds the answers back in. No I/O, no clock here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ..membership.embedder import mismatched
from ..membership.member import Member, MemberState
from ..replication.rows import ShardStatus
from .rebalance import TransferWatch, moves, read_round, settled, transferring
from .shardmap import ShardMap, next_map, target_of

SETTLE = 0.2  # membership changes this close together produce one map
POLL = 0.5  # while shards transfer, the leader asks their primaries this often whether learners caught up
RESEND = 5.0  # anti-entropy: the leader re-sends its map this often
CONFIRM = 0.5  # a node started on a stored map asks the leader whether it is current this often
WAITING_REPORT = 10.0  # a transfer without progress this long is logged (transfer_waiting), and again as often
CAUGHT_UP_LAG_MS = 500  # a learner this close behind its primary (in time) has caught up: flip it

Pair = tuple[int, str]  # (shard, learner)
Positions = Mapping[Pair, tuple[int, int]]  # (shard, member) -> (epoch, seq) that member reported


class LeaderView(Protocol):
    """Who holds the lease, as this node sees it (``lease.actor.LeaseView`` has this shape)."""

    @property
    def leader(self) -> str | None: ...

    @property
    def token(self) -> int: ...

    @property
    def is_self(self) -> bool: ...


@attrs.frozen
class _NoLease:
    leader: str | None = None
    token: int = 0
    is_self: bool = False


@attrs.frozen
class LeaderTiming:
    """The leader's periods, in seconds. Defaults are read from the module constants when built
    (so a test can patch one, e.g. ``RESEND``, before a cluster starts)."""

    settle: float = attrs.field(factory=lambda: SETTLE)
    poll: float = attrs.field(factory=lambda: POLL)
    resend: float = attrs.field(factory=lambda: RESEND)
    confirm: float = attrs.field(factory=lambda: CONFIRM)
    waiting_report: float = attrs.field(factory=lambda: WAITING_REPORT)
    caught_up_lag_ms: int = attrs.field(factory=lambda: CAUGHT_UP_LAG_MS)


# -- effects -----------------------------------------------------------------------------------

@attrs.frozen
class Recompute:
    """Plan the next map now: ask ``ask`` (member -> shards) where those shards are on them
    (orphaned shards' surviving copies: the most up to date is promoted), then call
    :meth:`MapLeader.propose` with the answers. ``only``: a manual rebalance limited to these."""

    ask: dict[str, list[int]] = attrs.field(factory=dict)
    only: frozenset[int] | None = None


@attrs.frozen
class CatchUp:
    """This node leads but is not sure its map is the cluster's newest (it has none, or only the
    one it stored before a restart, maybe before its disk was wiped): ask every member in ``ask``
    for its map and hand the answers to :meth:`MapLeader.caught_up` before planning anything. A
    leader planning from nothing would publish a fresh placement under its new token, newer than
    the cluster's real map by its key, and route reads to copies that hold nothing."""

    ask: tuple[str, ...]
    only: frozenset[int] | None = None


@attrs.frozen
class Poll:
    """Ask these primaries for their replication status rows; feed the replies to :meth:`MapLeader.on_round`."""

    primaries: tuple[str, ...]


@attrs.frozen
class Broadcast:
    """Push ``map`` to these members."""

    map: ShardMap
    to: tuple[str, ...]


@attrs.frozen
class AnnounceHeader:
    """Gossip ``(token, version)`` of the leader's map in its member metadata (a member that is
    behind pulls the body)."""

    token: int
    version: int


@attrs.frozen
class Log:
    """One structured log line an operator wants to see (``level``: info, warning or error)."""

    level: str
    event: str
    fields: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Abandoned:
    """Stalled transfers the next map drops (counted in ``dakera_transfers_abandoned``)."""

    transfers: tuple[Pair, ...]


@attrs.frozen
class Pull:
    """This node's map is older than the ``(token, version)`` the leader gossips in its member
    metadata: fetch the map from the leader now instead of waiting for the next re-send."""

    leader: str


Effect = Recompute | CatchUp | Poll | Broadcast | AnnounceHeader | Log | Abandoned | Pull


@attrs.frozen
class Proposal:
    """The leader's next map, to install (checks and fencing as for any map) before it is sent;
    ``abandoned``: the stalled learners it drops; ``effects``: to carry out first (logs)."""

    map: ShardMap
    abandoned: frozenset[Pair] = frozenset()
    effects: tuple[Effect, ...] = ()


@attrs.frozen
class RebalancePlan:
    """An operator's rebalance: the moves from the counted copies to the target, and (unless a
    dry run, or nothing to move) the step toward them to take now."""

    plan: list[dict[str, Any]]
    effects: tuple[Effect, ...] = ()


# -- promotion order, pure ---------------------------------------------------------------------

def orphaned(placement: Sequence[Sequence[str]], eligible: Iterable[str]) -> dict[int, list[str]]:
    """Shards whose primary is not eligible, with their eligible copies."""
    able = set(eligible)
    return {s: [m for m in c if m in able] for s, c in enumerate(placement) if c and c[0] not in able}


def position_asks(placement: Sequence[Sequence[str]], eligible: Iterable[str]) -> dict[str, list[int]]:
    """Member -> the orphaned shards to ask it about: only where there is a choice of successor."""
    asks: dict[str, list[int]] = {}
    for shard, survivors in orphaned(placement, eligible).items():
        if len(survivors) > 1:
            for member in survivors:
                asks.setdefault(member, []).append(shard)
    return asks


def promotion_order(placement: Sequence[Sequence[str]], eligible: Iterable[str],
                    positions: Positions) -> list[list[str]]:
    """The counted copies with each orphaned shard's surviving copies ordered by position, newest
    history first (one not heard from last): the leader promotes the replica that has the most."""
    able = set(eligible)
    order = [list(c) for c in placement]
    for shard, survivors in orphaned(placement, able).items():
        ranked = sorted(survivors, key=lambda m: positions.get((shard, m), (-1, -1)), reverse=True)
        order[shard] = ranked + [m for m in placement[shard] if m not in able]
    return order


# -- the core ----------------------------------------------------------------------------------

class MapLeader:
    """The leader's scheduling for one node (it plans nothing while the node does not lead; as a
    follower it only says when its map is behind the leader's, :class:`Pull`)."""

    def __init__(self, self_id: str, *, shards: int, rf: int, grace: float = 30.0, concurrency: int = 4,
                 transfer_timeout: float = 60.0, timing: LeaderTiming | None = None) -> None:
        self.self_id, self.shards, self.rf, self.grace = self_id, shards, rf, grace
        self.concurrency, self.transfer_timeout = concurrency, transfer_timeout
        self.timing = timing if timing is not None else LeaderTiming()
        self.lease: LeaderView = _NoLease()
        self.map: ShardMap | None = None  # the installed map
        #: whether the installed map is known to be the cluster's current one. A map read back from
        #: disk at start is not: the cluster may have moved this node's shards while it was down,
        #: and serving them from the stored map would answer reads older than acknowledged writes.
        #: It becomes current when a map arrives from the network (a push, a pull, this node's own
        #: proposal as leader) or when the leader shows it holds the same map.
        self.current = False
        self._confirm_at = math.inf  # while not current: when to ask the leader again
        self._members: list[Member] = []
        self.eligible: tuple[str, ...] = ()
        self.draining: tuple[str, ...] = ()  # reachable members in maintenance
        #: reachable members announcing another embedder than the cluster's: never placed on
        self.other_embedder: tuple[str, ...] = ()
        self.keep: tuple[str, ...] = ()  # dead within their grace period: their copies stay, marked down
        self.caught: set[Pair] = set()  # (shard, learner) the primary reports caught up (last round only)
        self.stalled: set[Pair] = set()  # learners to drop from the next map (retried after)
        self._watch = TransferWatch()  # when each learner last made progress
        self._reported: dict[Pair, float] = {}  # transfer -> when to report it waiting again
        self._settling = False  # the map had learners: plan once more when they are gone
        self._round: ShardMap | None = None  # the map the poll round in flight was asked about
        self._proposal: Proposal | None = None  # proposed, not installed yet
        self._recompute_at = math.inf
        self._resend_at = math.inf
        self._grace_at = math.inf
        self._poll_at = math.inf

    @property
    def is_leader(self) -> bool:
        return self.lease.is_self

    def next_deadline(self) -> float:
        return min(self._recompute_at, self._resend_at, self._grace_at, self._poll_at, self._confirm_at)

    # -- inputs --------------------------------------------------------------------------------
    def on_lease(self, view: LeaderView, now: float) -> list[Effect]:
        """A new lease view. A node that becomes leader (or leads under a new token) stamps the
        map with its token at once, and resumes the transfers the published map has in flight."""
        became_leader = view.is_self and not (self.lease.is_self and self.lease.token == view.token)
        self.lease = view
        if not became_leader:
            return self._behind_leader()
        self._resend_at = now + self.timing.resend
        self._poll_at = now + self.timing.poll
        self._watch = TransferWatch()
        return self._recompute_now()

    def on_members(self, members: Iterable[Member], now: float) -> list[Effect]:
        """A new membership view: eligible, draining and kept members; a change is planned for
        after ``settle`` (one map per burst of changes)."""
        self._members = list(members)
        before = self.other_embedder
        self._update_members(now)
        logs: list[Effect] = []
        if self.other_embedder != before and self.other_embedder:
            logs.append(Log("warning", "members_with_another_embedder", {
                "members": list(self.other_embedder), "action": "no shard is placed on them"}))
        return [*logs, *self._behind_leader()]

    def _behind_leader(self) -> list[Effect]:
        """A follower whose map is older than the header its leader gossips pulls the map."""
        leader = next((m for m in self._members if m.id == self.lease.leader), None)
        header = leader.meta.get("map") if leader is not None else None
        if leader is None or leader.id == self.self_id:
            return []
        sure = self.current or self.map is None  # no map: nothing to confirm, only to receive
        if sure and (not isinstance(header, list) or (self.map is not None and tuple(header) <= self.map.key)):
            return []
        return [Pull(leader.id)]  # behind the leader's header, or not yet sure the map is current

    def installed(self, shard_map: ShardMap, now: float, *, from_disk: bool = False) -> list[Effect]:
        """This node installed ``shard_map`` (from disk, a push, a pull or its own proposal)."""
        self.map = shard_map
        if from_disk:
            self.current = False
            self._confirm_at = now  # ask the leader as soon as one is known
        else:
            self._confirmed()
        if shard_map.learners_any():
            self._settling = True
            if self.is_leader:
                self._poll_at = min(self._poll_at, now + self.timing.poll)
        elif self.is_leader and self._settling:
            # transfers just finished: plan once more over the settled copies (primaries can now
            # move onto the copies that have the data)
            self._settling = False
            self._recompute_at = min(self._recompute_at, now + self.timing.settle)
        proposal, self._proposal = self._proposal, None
        if proposal is None or proposal.map != shard_map:
            return []
        self.stalled -= proposal.abandoned
        return [*self._broadcast(), AnnounceHeader(shard_map.token, shard_map.version)]

    def heard(self, shard_map: ShardMap, sender: str) -> None:
        """``sender`` sent (pushed, or answered a pull with) ``shard_map``, not newer than ours: if
        the sender is the leader and its map is ours, ours is current."""
        if (not self.current and self.map is not None and sender == self.lease.leader
                and shard_map.key == self.map.key):
            self._confirmed()

    def _confirmed(self) -> None:
        self.current = True
        self._confirm_at = math.inf

    def refused(self, shard_map: ShardMap, reason: str) -> list[Effect]:
        """This node's own proposal failed its own install checks."""
        self._proposal = None
        # our own step refused by our own checks is a bug in planning: say so, loudly, rather
        # than leave the transfers where they are without a word
        return [Log("error", "shard_map_step_refused", {"version": shard_map.version, "reason": reason})]

    def tick(self, now: float) -> list[Effect]:
        """The timers that are due at ``now``."""
        effects: list[Effect] = []
        if now >= self._poll_at:
            # while shards transfer the leader asks every poll period, whatever the last round found
            learners = self.map is not None and self.map.learners_any() and self.is_leader
            self._poll_at = now + self.timing.poll if learners else math.inf
            if learners and self._round is None and self.map is not None:
                self._round = self.map
                pending = transferring(self.map.placement, self.map.counted)
                effects.append(Poll(tuple(sorted({self.map.placement[s][0] for s in pending}))))
        if now >= self._grace_at:
            self._grace_at = math.inf
            self._update_members(now)
        if now >= self._recompute_at:
            effects.extend(self._recompute_now())
        if now >= self._resend_at:
            self._resend_at = now + self.timing.resend if self.is_leader else math.inf
            effects.extend(self._broadcast())
        if now >= self._confirm_at:
            # not sure the map is current: ask the leader (again) until it says, or sends newer
            self._confirm_at = now + self.timing.confirm if not self.current else math.inf
            effects.extend(self._behind_leader())
        return effects

    def propose(self, positions: Positions, now: float, only: Iterable[int] | None = None) -> Proposal | None:
        """The next map, after a :class:`Recompute` (``positions``: what the members asked
        reported; one missing ranks last). None: not the leader, nobody eligible, or the map
        already fits."""
        current = self.map
        if not self.is_leader or not self.eligible:
            return None
        effects: list[Effect] = []
        order = None
        if current is not None:
            base = settled(current.placement, current.counted)
            order = promotion_order(base, self.eligible, positions)
            promoting = orphaned(base, self.eligible)
            if promoting:
                effects.append(Log("info", "shards_promoting", {
                    "shards": len(promoting), "asked": len(position_asks(base, self.eligible))}))
        abandoned = frozenset(self.stalled)
        caught = set(self.caught)
        proposal = next_map(current, self.eligible, token=self.lease.token, shards=self.shards, rf=self.rf,
                            keep=self.keep, order=order, caught_up=lambda s, m: (s, m) in caught,
                            concurrency=self.concurrency, only=set(only) if only is not None else None,
                            abandon=lambda s, m: (s, m) in abandoned, draining=self.draining)
        if proposal is None:
            self._proposal = None
            return None
        self._proposal = Proposal(proposal, abandoned, tuple(effects))
        return self._proposal

    def on_round(self, replies: Mapping[str, Sequence[ShardStatus] | str], now: float) -> list[Effect]:
        """The replies of a :class:`Poll` round (member -> its status rows, or why none came):
        who caught up, who made progress, what to report, what to give up."""
        current, self._round = self._round, None
        if current is None or not self.is_leader:
            return []
        effects: list[Effect] = []
        pending = transferring(current.placement, current.counted)
        found = read_round(pending, current.owner, replies, caught_lag_ms=self.timing.caught_up_lag_ms)
        self.caught = set(found.caught)  # this round's word only: a learner can fall behind again
        self._watch.observe(pending, found.acked, now)
        for pair, (_acked, since) in sorted(self._watch.last.items()):
            if now - since >= self.timing.waiting_report and now >= self._reported.get(pair, 0.0):
                # a transfer without progress for a while: say what its primary reports, so a
                # stuck one is diagnosable before (and after) it is abandoned
                self._reported[pair] = now + self.timing.waiting_report
                effects.append(Log("info", "transfer_waiting", {
                    "shard": pair[0], "learner": pair[1], "primary": current.owner(pair[0]),
                    "idle_seconds": round(now - since, 1), "caught_up": pair in self.caught,
                    "primary_says": found.heard.get(pair, "nothing"), "map_version": current.version}))
        self._reported = {k: v for k, v in self._reported.items() if k in self._watch.last}
        stalled = self._watch.stalled(now, self.transfer_timeout) - self.stalled
        for shard, learner in sorted(stalled):
            self._watch.forget((shard, learner))
            effects.append(Log("warning", "transfer_stalled", {
                "shard": shard, "learner": learner, "primary": current.owner(shard),
                "seconds": self.transfer_timeout, "caught_up": (shard, learner) in self.caught,
                "acked": found.acked.get((shard, learner), "unreported"), "map_version": current.version}))
        if stalled:
            effects.append(Abandoned(tuple(sorted(stalled))))
        self.stalled |= stalled
        self.stalled = {k for k in self.stalled if k[1] in pending.get(k[0], ())}
        if self.map is not None and self.map.learners_any():
            self._poll_at = min(self._poll_at, now + self.timing.poll)  # keep asking while shards transfer
        if self.caught or stalled:
            # step whenever a learner is ready, not only when it first is: a flip the last step
            # could not take (its target moved meanwhile) is taken as soon as it can be
            effects.extend(self._recompute_now())
        return effects

    def rebalance(self, dry_run: bool, only: Iterable[int] | None, now: float) -> RebalancePlan | None:
        """An operator's rebalance (None: this node does not lead). The plan lists the moves from
        the counted copies to the target, limited to ``only``; unless ``dry_run``, one step toward
        it is taken now (a step limited to those shards)."""
        if not self.is_leader:
            return None
        limit = frozenset(only) if only is not None else None
        planned = self._plan_moves(limit)
        if dry_run or not planned:
            return RebalancePlan(planned)
        # a limited step: a plan already due for everything else stays due
        return RebalancePlan(planned, tuple(self._recompute(limit)))

    # -- inside --------------------------------------------------------------------------------
    def _update_members(self, now: float) -> None:
        """Eligible: Alive or Suspect (only a Dead verdict moves shards), not in maintenance, with the
        cluster's embedder (:mod:`~dakera_actors.membership.embedder`: a member announcing another
        one holds no copy). Kept: Dead for less than the grace period; their copies stay in the
        map, marked down."""
        members = self._members
        odd = mismatched(members, self.lease.leader)
        self.other_embedder = tuple(sorted(m.id for m in members if m.reachable and m.id in odd))
        eligible = tuple(sorted(m.id for m in members if m.reachable and not m.maintenance and m.id not in odd))
        draining = tuple(sorted(m.id for m in members if m.reachable and m.maintenance and m.id not in odd))
        dead = [m for m in members if m.state == MemberState.DEAD and m.since + self.grace > now]
        keep = tuple(sorted(m.id for m in dead))
        self._grace_at = min((m.since + self.grace for m in dead), default=math.inf)
        if (eligible, keep, draining) != (self.eligible, self.keep, self.draining):
            self.eligible, self.keep, self.draining = eligible, keep, draining
            if self.is_leader:
                self._recompute_at = min(self._recompute_at, now + self.timing.settle)

    def _recompute_now(self) -> list[Effect]:
        self._recompute_at = math.inf
        return self._recompute(None)

    def _recompute(self, only: frozenset[int] | None) -> list[Effect]:
        if not self.is_leader or not self.eligible:
            return []
        if not self.current:
            others = tuple(m for m in self.eligible if m != self.self_id)
            if others:
                return [CatchUp(others, only)]
            self._confirmed()  # alone: there is nobody whose map could be newer
        base = settled(self.map.placement, self.map.counted) if self.map is not None else []
        return [Recompute(position_asks(base, self.eligible), only)]

    def caught_up(self, maps: Mapping[str, ShardMap | None], asked: int, now: float,
                  only: frozenset[int] | None = None) -> list[Effect]:
        """The answers to a :class:`CatchUp` (member -> its map, None for "no map yet"; members
        that did not answer are missing). With answers from a majority of the ``asked`` members
        and this node, the newest map among them and this node's own becomes the base of the next
        plan (the leader's proposal supersedes it under the new token) and the map counts as
        current; with fewer, nothing is planned and the leader asks again shortly."""
        if not self.is_leader:
            return []
        if (len(maps) + 1) * 2 <= asked + 1:
            self._recompute_at = min(self._recompute_at, now + self.timing.confirm)
            return [Log("warning", "shard_map_catch_up_short", {"answered": len(maps), "asked": asked})]
        newest = max((m for m in maps.values() if m is not None), key=lambda m: m.key, default=None)
        caught = Log("info", "shard_map_caught_up", {
            "asked": asked, "answered": len(maps), "newest": list(newest.key) if newest is not None else None,
            "own": list(self.map.key) if self.map is not None else None})
        if newest is not None and (self.map is None or newest.key > self.map.key):
            self.map = newest  # planning base only: the proposal built on it is what gets installed
        self._confirmed()
        return [caught, *self._recompute(only)]

    def _broadcast(self) -> list[Effect]:
        if self.map is None or not self.is_leader:
            return []
        to = tuple(m for m in self.eligible if m != self.self_id)
        return [Broadcast(self.map, to)] if to else []

    def _plan_moves(self, only: frozenset[int] | None) -> list[dict[str, Any]]:
        current = self.map
        if current is None or not self.eligible:
            return []
        base = settled(current.placement, current.counted)
        target = target_of(current, self.eligible, shards=self.shards, rf=self.rf, keep=self.keep,
                           draining=self.draining)
        return [m for m in moves(base, target) if only is None or m["shard"] in only]
