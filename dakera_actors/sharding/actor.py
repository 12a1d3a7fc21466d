"""The shard-map actor: the leader computes and sends maps; everyone installs fenced, newer ones.

On the lease holder it recomputes the placement whenever the eligible members (Alive, not in
maintenance) change, waits a moment for a burst of changes to settle, and pushes the new map to
every reachable member over a stream; it also re-sends the current map every few seconds, so a
node that missed one (or just started) catches up. Every node installs a map only when it is
newer by (token, version) and the lease's fencing check accepts its token; the installed map is
persisted, so a restarted node serves from the last map even before a leader speaks to it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import msgpack
import trio

from ..endpoint import Endpoint, MessageStream, RemoteError
from ..lease.actor import LeaseActor, LeaseView
from ..log import EventLogger
from ..membership.actor import MembershipView
from ..membership.member import MemberState
from ..metrics import NodeMetrics
from ..runtime import Actor, Published
from ..transport import TransportError
from ..wal.actor import disk_call
from ..wal.statefile import StateFile
from ..wire import Envelope, message, structure, unstructure
from ..wirebounds import REASON, SEQ, Seq, bound
from .rebalance import TransferWatch, moves, read_round, settled, transferring
from .shardmap import ShardMap, acceptable, next_map, target_of

SETTLE = 0.2  # membership changes this close together produce one map
POLL = 0.5  # while shards transfer, the leader asks their primaries this often whether learners caught up
RESEND = 5.0  # anti-entropy: the leader re-sends its map this often
SEND_TIMEOUT = 2.0
CAUGHT_UP_LAG_MS = 500  # a learner this close behind its primary (in time) has caught up: flip it
WAITING_REPORT = 10.0  # a transfer without progress this long is logged (transfer_waiting), and again as often
FILE_NAME = "shardmap.msgpack"


@message("shard.map-ack")
@attrs.frozen
class ShardMapAck:
    accepted: bool
    reason: str = attrs.field(default="", metadata=bound(REASON))


@message("shard.map-pull")
@attrs.frozen
class ShardMapPull:
    """A node whose map is older than the (token, version) the leader gossips asks for the body."""

    have: list[int] = attrs.field(factory=list, metadata=bound(Seq(SEQ, 16)))


@attrs.frozen
class _Offer:
    map: ShardMap
    sender: str


@attrs.frozen
class _Rebalance:
    dry_run: bool
    only: set[int] | None


def raise_not_leader() -> None:
    from ..api.errors import ApiError

    raise ApiError(503, "not the leader (any more); retry", retry_after=1)


@attrs.frozen
class _Recompute:
    """A learner poll ended (``now``: one caught up, plan the next map now), or an operator asked."""

    now: bool = True


@attrs.frozen
class _Lease:
    view: LeaseView


@attrs.frozen
class _Members:
    view: MembershipView


class ShardMapStore:
    """The installed map, persisted (file or SimDisk), so a restart starts from it."""

    def __init__(self, data_dir: Any, disk: Any) -> None:
        self.file = StateFile(FILE_NAME, data_dir, disk)
        self.blocking = self.file.blocking

    def load(self) -> ShardMap | None:
        raw = self.file.read()
        if raw is None:
            return None
        try:
            return structure(msgpack.unpackb(raw, raw=False), ShardMap)
        except Exception:
            return None  # a map is always re-sent by the leader: an unreadable one is just absent

    def save(self, shard_map: ShardMap) -> None:
        self.file.write(msgpack.packb(unstructure(shard_map), use_bin_type=True))


class ShardMapActor(Actor):
    def __init__(self, self_id: str, *, shards: int, rf: int, endpoint: Endpoint, lease: LeaseActor,
                 store: ShardMapStore, metrics: NodeMetrics, log: EventLogger, nursery: trio.Nursery,
                 membership: Any = None, grace: float = 30.0, concurrency: int = 4,
                 transfer_timeout: float = 60.0) -> None:
        super().__init__("shard-map")
        self.self_id, self.shards, self.rf, self.grace = self_id, shards, rf, grace
        self.concurrency, self.transfer_timeout = concurrency, transfer_timeout
        self._caught: set[tuple[int, str]] = set()  # (shard, learner) the primary reports caught up
        self._watch = TransferWatch()  # when each learner last made progress
        self._stalled: set[tuple[int, str]] = set()  # learners to drop from the next map (retried after)
        self._reported: dict[tuple[int, str], float] = {}  # transfer -> when to report it waiting again
        self._poll_at = math.inf
        self._polling = False
        self._only: set[int] | None = None  # a manual rebalance limited to these shards
        self._settling = False
        #: this node's replication status rows (the replicator's), when it is the leader and a primary
        self.replication_status: Any = None
        self._keep: tuple[str, ...] = ()
        self._grace_at = math.inf
        self.endpoint, self.lease, self.store = endpoint, lease, store
        self.metrics, self.log, self._nursery = metrics, log, nursery
        self.view: Published[ShardMap | None] = Published(None)
        self._lease = LeaseView(None, 0, 0.0, False)
        self._eligible: tuple[str, ...] = ()
        self._draining: tuple[str, ...] = ()  # reachable members in maintenance
        self._addresses: dict[str, str] = {}
        self._recompute_at = math.inf
        self._resend_at = math.inf
        self.membership = membership
        self._pulling = False
        self._members: dict[str, Any] = {}
        endpoint.on_stream(ShardMap, self._serve_offer)
        endpoint.on_stream(ShardMapPull, self._serve_pull)

    async def on_start(self) -> None:
        stored = await disk_call(self.store.blocking, self.store.load)
        if stored is not None:
            self._install(stored, "disk")

    async def follow(self, lease: Published[LeaseView], membership: Published[MembershipView]) -> None:
        async with trio.open_nursery() as nursery:
            async def leases() -> None:
                async for view in lease.changes():
                    await self.tell(_Lease(view))

            async def members() -> None:
                async for view in membership.changes():
                    await self.tell(_Members(view))

            nursery.start_soon(leases)
            nursery.start_soon(members)

    async def offer(self, shard_map: ShardMap, sender: str) -> str:
        """Install ``shard_map`` if it is newer and fenced; returns why not (empty: installed)."""
        reason: str = await self.ask(_Offer(shard_map, sender))
        return reason

    async def rebalance(self, dry_run: bool, only: set[int] | None) -> dict[str, Any]:
        """The leader's answer to ``POST /admin/cluster/rebalance``: the moves from the counted
        copies to the target (limited to ``only``) and, unless ``dry_run``, a step toward it now."""
        answer: dict[str, Any] = await self.ask(_Rebalance(dry_run, only))
        return answer

    def _plan_moves(self, only: set[int] | None) -> list[dict[str, Any]]:
        current = self.view.value
        if current is None or not self._eligible:
            return []
        base = settled(current.placement, current.counted)
        target = target_of(current, self._eligible, shards=self.shards, rf=self.rf, keep=self._keep,
                           draining=self._draining)
        return [m for m in moves(base, target) if only is None or m["shard"] in only]

    async def catch_up(self, address: str, version: int, *, timeout: float) -> None:
        """Fetch the map from the member at ``address`` (which has version ``version``) and install
        it if it is newer and fenced; returns when done or after ``timeout``."""
        with trio.move_on_after(timeout):
            current = self.view.value
            if current is not None and current.version >= version:
                return
            try:
                reply = await self.endpoint.request(address, ShardMapPull(), timeout=timeout)
            except (TransportError, RemoteError):
                return
            if isinstance(reply.message, ShardMap):
                await self.offer(reply.message, "forwarder")

    async def _serve_pull(self, envelope: Envelope, stream: MessageStream) -> None:
        current = self.view.value
        await stream.send(current if current is not None else ShardMapAck(accepted=False, reason="no map yet"))

    async def _serve_offer(self, envelope: Envelope, stream: MessageStream) -> None:
        reason: str = await self.ask(_Offer(envelope.message, envelope.sender))
        await stream.send(ShardMapAck(accepted=not reason, reason=reason))

    # -- the actor's side --------------------------------------------------------------
    def next_timer(self) -> float:
        return min(self._recompute_at, self._resend_at, self._grace_at, self._poll_at)

    async def on_timer(self, now: float) -> None:
        if now >= self._poll_at:
            # while shards transfer the leader asks every POLL, whatever the last round found
            current = self.view.value
            learners = current is not None and current.learners_any() and self._lease.is_self
            self._poll_at = now + POLL if learners else math.inf
            if learners and not self._polling:
                self._polling = True
                self._nursery.start_soon(self._poll_learners)
        if now >= self._grace_at:
            self._grace_at = math.inf
            self._update_members(now)
        if now >= self._recompute_at:
            self._recompute_at = math.inf
            await self._recompute()
        if now >= self._resend_at:
            self._resend_at = now + RESEND if self._lease.is_self else math.inf
            self._broadcast()

    async def handle(self, msg: Any) -> Any:
        now = trio.current_time()
        if isinstance(msg, _Rebalance):
            if not self._lease.is_self:
                raise_not_leader()
            planned = self._plan_moves(msg.only)
            if not msg.dry_run and planned:
                self._only = msg.only
                try:
                    await self._recompute()
                finally:
                    self._only = None
            current = self.view.value
            return {"moved": len(planned), "dry_run": msg.dry_run,
                    "shard_map_version": current.version if current else 0, "plan": planned}
        if isinstance(msg, _Recompute):
            current = self.view.value
            if current is not None and current.learners_any() and self._lease.is_self:
                self._poll_at = min(self._poll_at, now + POLL)  # keep asking while shards transfer
            if msg.now:
                self._recompute_at = now
            return None
        if isinstance(msg, _Offer):
            return await self._consider(msg.map, msg.sender)
        if isinstance(msg, _Lease):
            became_leader = msg.view.is_self and not (self._lease.is_self and self._lease.token == msg.view.token)
            self._lease = msg.view
            if became_leader:
                self._recompute_at = now  # a new leader stamps the map with its own token at once
                self._resend_at = now + RESEND
                self._poll_at = now + POLL  # and resumes the transfers the published map has in flight
                self._watch = TransferWatch()
        elif isinstance(msg, _Members):
            self._members = dict(msg.view.members)
            self._addresses = {m.id: m.address for m in self._members.values()}
            self._maybe_pull()
            self._update_members(now)
        return None

    def _update_members(self, now: float) -> None:
        """Eligible: Alive or Suspect (only a Dead verdict moves shards), not in maintenance.
        Kept: Dead for less than the grace period; their copies stay in the map, marked down."""
        members = self._members.values()
        eligible = tuple(sorted(m.id for m in members if m.reachable and not m.maintenance))
        draining = tuple(sorted(m.id for m in members if m.reachable and m.maintenance))
        dead = [m for m in members if m.state == MemberState.DEAD and m.since + self.grace > now]
        keep = tuple(sorted(m.id for m in dead))
        self._grace_at = min((m.since + self.grace for m in dead), default=math.inf)
        if eligible != self._eligible or keep != self._keep or draining != self._draining:
            self._eligible, self._keep, self._draining = eligible, keep, draining
            if self._lease.is_self:
                self._recompute_at = min(self._recompute_at, now + SETTLE)

    def _maybe_pull(self) -> None:
        """The leader gossips its map's (token, version) in its member metadata: a node that is
        behind pulls the body from the leader instead of waiting for the next re-send."""
        leader = self._members.get(self._lease.leader or "")
        header = leader.meta.get("map") if leader is not None else None
        current = self.view.value
        if self._pulling or leader is None or not isinstance(header, list) or leader.id == self.self_id:
            return
        if current is not None and tuple(header) <= current.key:
            return
        self._pulling = True
        self._nursery.start_soon(self._pull, leader.id, leader.address)

    async def _pull(self, leader: str, address: str) -> None:
        try:
            reply = await self.endpoint.request(address, ShardMapPull(), timeout=SEND_TIMEOUT)
            if isinstance(reply.message, ShardMap):
                await self.tell(_Offer(reply.message, leader))
        except (TransportError, RemoteError):
            pass  # the next membership change or re-send tries again
        finally:
            self._pulling = False

    async def _announce_header(self, shard_map: ShardMap) -> None:
        if self.membership is None:
            return
        await self.membership.update_meta(map=[shard_map.token, shard_map.version])

    async def _recompute(self) -> None:
        if not self._lease.is_self or not self._eligible:
            return
        current = self.view.value
        order = (await self._promotion_order(settled(current.placement, current.counted))
                 if current is not None else None)
        stalled = set(self._stalled)
        proposal = next_map(current, self._eligible, token=self._lease.token, shards=self.shards, rf=self.rf,
                            keep=self._keep, order=order, caught_up=lambda s, m: (s, m) in self._caught,
                            concurrency=self.concurrency, only=self._only, abandon=lambda s, m: (s, m) in stalled,
                            draining=self._draining)
        if proposal is None:
            return
        reason = await self._consider(proposal, self.self_id)
        if reason:
            # our own step refused by our own checks is a bug in planning: say so, loudly, rather
            # than leave the transfers where they are without a word
            self.log.error("shard_map_step_refused", version=proposal.version, reason=reason)
            return
        self._stalled -= stalled
        self._broadcast()
        await self._announce_header(proposal)

    async def _promotion_order(self, placement: list[list[str]]) -> list[list[str]]:
        """The counted copies with each orphaned shard's surviving copies ordered by position,
        newest history first: the leader promotes the replica that has the most."""
        from ..replication.messages import PositionQuery, Positions

        eligible = set(self._eligible)
        orphaned = {s: [m for m in c if m in eligible] for s, c in enumerate(placement)
                    if c and c[0] not in eligible}
        asks: dict[str, list[int]] = {}
        for shard, survivors in orphaned.items():
            if len(survivors) > 1:
                for member in survivors:
                    asks.setdefault(member, []).append(shard)
        positions: dict[tuple[int, str], tuple[int, int]] = {}

        async def ask(member: str, shards: list[int]) -> None:
            address = self._addresses.get(member)
            if address is None:
                return
            try:
                reply = await self.endpoint.request(address, PositionQuery(shards), timeout=SEND_TIMEOUT / 2)
            except (TransportError, RemoteError):
                return
            if isinstance(reply.message, Positions):
                for shard, epoch, seq in reply.message.positions:
                    positions[(shard, member)] = (epoch, seq)

        if asks:
            async with trio.open_nursery() as nursery:
                for member, shards in asks.items():
                    nursery.start_soon(ask, member, shards)
        order = [list(c) for c in placement]
        for shard, survivors in orphaned.items():
            ranked = sorted(survivors, key=lambda m: positions.get((shard, m), (-1, -1)), reverse=True)
            order[shard] = ranked + [m for m in placement[shard] if m not in eligible]
        if orphaned:
            self.log.info("shards_promoting", shards=len(orphaned), asked=len(asks))
        return order

    async def _consider(self, offered: ShardMap, sender: str) -> str:
        problems = acceptable(self.view.value, offered, shards=self.shards)
        if problems:
            return "; ".join(problems)
        if not await self.lease.fence(offered.token):
            return f"stale token {offered.token}"
        await disk_call(self.store.blocking, self.store.save, offered)
        self._install(offered, sender)
        return ""

    async def _poll_learners(self) -> None:
        """Ask the primaries of transferring shards how far their learners are; recompute (flip)
        as soon as one has caught up."""
        from ..replication.messages import StatusReply, StatusRequest

        try:
            current = self.view.value
            if current is None or not self._lease.is_self:
                return
            pending = transferring(current.placement, current.counted)
            primaries = {current.placement[s][0] for s in pending}
            replies: dict[str, Any] = {}

            async def ask(member: str) -> None:
                if member == self.self_id:
                    replies[member] = self.replication_status() if self.replication_status else []
                    return
                address = self._addresses.get(member)
                if address is None:
                    replies[member] = "not a member this node knows"
                    return
                try:
                    reply = await self.endpoint.request(address, StatusRequest(), timeout=SEND_TIMEOUT)
                except (TransportError, RemoteError) as exc:
                    replies[member] = f"unreachable: {exc}"
                    return
                if isinstance(reply.message, StatusReply):
                    replies[member] = reply.message.shards

            async with trio.open_nursery() as nursery:
                for member in primaries:
                    nursery.start_soon(ask, member)
            found = read_round(pending, current.owner, replies, caught_lag_ms=CAUGHT_UP_LAG_MS)
            caught, acked, heard = found.caught, found.acked, found.heard
            self._caught = caught  # this round's word only: a learner can fall behind again
            now = trio.current_time()
            self._watch.observe(pending, acked, now)
            for pair, (_acked, since) in sorted(self._watch.last.items()):
                if now - since >= WAITING_REPORT and now >= self._reported.get(pair, 0.0):
                    # a transfer without progress for a while: say what its primary reports, so a
                    # stuck one is diagnosable before (and after) it is abandoned
                    self._reported[pair] = now + WAITING_REPORT
                    self.log.info("transfer_waiting", shard=pair[0], learner=pair[1], primary=current.owner(pair[0]),
                                  idle_seconds=round(now - since, 1), caught_up=pair in self._caught,
                                  primary_says=heard.get(pair, "nothing"), map_version=current.version)
            self._reported = {k: v for k, v in self._reported.items() if k in self._watch.last}
            stalled = self._watch.stalled(now, self.transfer_timeout) - self._stalled
            for shard, learner in sorted(stalled):
                self._watch.forget((shard, learner))
                self.log.warning("transfer_stalled", shard=shard, learner=learner, primary=current.owner(shard),
                                 seconds=self.transfer_timeout, caught_up=(shard, learner) in self._caught,
                                 acked=acked.get((shard, learner), "unreported"), map_version=current.version)
            self._stalled |= stalled
            self.metrics.transfers_abandoned.inc(len(stalled))
            self._stalled = {k for k in self._stalled if k[1] in pending.get(k[0], ())}
            # step whenever a learner is ready, not only when it first is: a flip the last step
            # could not take (its target moved meanwhile) is taken as soon as it can be
            await self.tell(_Recompute(now=bool(self._caught or stalled)))
        finally:
            self._polling = False

    def _install(self, shard_map: ShardMap, source: str) -> None:
        self.view.set(shard_map)
        self.metrics.shards_moving.set(len(transferring(shard_map.placement, shard_map.counted)))
        if shard_map.learners_any():
            self._settling = True
            if self._lease.is_self:
                self._poll_at = min(self._poll_at, trio.current_time() + POLL)
        elif self._lease.is_self and self._settling:
            # transfers just finished: plan once more over the settled copies (primaries can now
            # move onto the copies that have the data)
            self._settling = False
            self._recompute_at = min(self._recompute_at, trio.current_time() + SETTLE)
        self.metrics.shard_balance.set(shard_map.balance())
        self.log.info("shard_map_installed", token=shard_map.token, version=shard_map.version, source=source,
                      members=len(shard_map.members()))

    def _broadcast(self) -> None:
        current = self.view.value
        if current is None or not self._lease.is_self:
            return
        for member in self._eligible:
            address = self._addresses.get(member)
            if member != self.self_id and address is not None:
                self._nursery.start_soon(self._push_map, address, current)

    async def _push_map(self, address: str, shard_map: ShardMap) -> None:
        try:
            await self.endpoint.request(address, shard_map, timeout=SEND_TIMEOUT)
        except (TransportError, RemoteError):
            pass  # the next re-send, or the member's own restart, catches it up
