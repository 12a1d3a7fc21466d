"""The shard-map actor: carries out the leader's decisions; every node installs fenced, newer maps.

What the lease holder plans and when (recompute, re-send, poll transfers, abandon a stalled one)
is decided by its :class:`~.leader.MapLeader` core; this actor feeds it the lease and membership
views, the maps installed and the answers of the members it asked, and carries out its effects:
asks (through :class:`~dakera_actors.peers.Peers`), pushes, the gossiped map header, logs. Every
node installs a map only when it is newer by (token, version) and the lease's fencing check
accepts its token; the installed map is persisted, so a restarted node serves from the last map
even before a leader speaks to it. A node whose map is older than the header its leader gossips
pulls the body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

import attrs
import msgpack
import trio

from ..endpoint import Endpoint, MessageStream
from ..errors import Unavailable
from ..lease.actor import LeaseView
from ..log import EventLogger
from ..membership.actor import MembershipView
from ..metrics import NodeMetrics
from ..peers import Peers, PeerUnavailable
from ..replication.messages import PositionQuery, Positions, StatusReply, StatusRequest
from ..runtime import Actor, ActorTimeout, Published
from ..wal.actor import disk_call
from ..wal.statefile import StateFile
from ..wire import Envelope, message, structure, unstructure
from ..wirebounds import REASON, SEQ, Seq, bound
from .leader import (
    Abandoned,
    AnnounceHeader,
    Broadcast,
    CatchUp,
    Effect,
    Log,
    MapLeader,
    Poll,
    Pull,
    RebalancePlan,
    Recompute,
)
from .rebalance import transferring
from .shardmap import ShardMap, acceptable

SEND_TIMEOUT = 2.0
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


def raise_not_leader() -> NoReturn:
    raise Unavailable("not the leader (any more); retry", retry_after=1)


@attrs.frozen
class _Round:
    """The answers of a learner poll: member -> its replication status rows, or why none came."""

    replies: dict[str, Any]


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
    """Push, pull, persist and publish the shard map; the leader's decisions come from ``core``.

    ``endpoint``: where the map streams are served; ``peers``: how members are asked;
    ``fence``: the lease's fencing check of a map's token; ``announce``: gossips this node's metadata (the map header)."""

    def __init__(self, core: MapLeader, *, endpoint: Endpoint, peers: Peers,
                 fence: Callable[[int], Awaitable[bool]], store: ShardMapStore, metrics: NodeMetrics, log: EventLogger, nursery: trio.Nursery,
                 announce: Callable[..., Awaitable[None]] | None = None) -> None:
        super().__init__("shard-map")
        self.core = core
        self.self_id, self.shards = core.self_id, core.shards
        self.peers, self.fence, self.store = peers, fence, store
        self.metrics, self.log, self._nursery = metrics, log, nursery
        self._announce = announce
        #: this node's replication status rows (the replicator's), when it is the leader and a primary
        self.replication_status: Any = None
        self.view: Published[ShardMap | None] = Published(None)
        #: whether ``view`` is known to be the cluster's current map (see MapLeader.current):
        #: false while it is the map stored before a restart and the leader has not confirmed it
        self.current: Published[bool] = Published(False)
        self._pulling = False
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            _Offer: self._on_offer, _Rebalance: self._on_rebalance, _Round: self._on_round,
            _Lease: self._on_lease, _Members: self._on_members,
        }
        self._effects: dict[type, Callable[[Any], Awaitable[None]]] = {
            Recompute: self._recompute, CatchUp: self._catch_up, Poll: self._poll, Broadcast: self._push,
            AnnounceHeader: self._announce_header, Log: self._log, Abandoned: self._count_abandoned,
            Pull: self._pull,
        }
        endpoint.on_stream(ShardMap, self._serve_offer)
        endpoint.on_stream(ShardMapPull, self._serve_pull)

    async def on_start(self) -> None:
        stored = await disk_call(self.store.blocking, self.store.load)
        if stored is not None:
            await self._install(stored, "disk")

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

    async def catch_up(self, member: str, version: int, *, timeout: float) -> None:
        """Fetch the map from ``member`` (which has version ``version``) and install it if it is
        newer and fenced; returns when done or after ``timeout``."""
        current = self.view.value
        if current is None or current.version < version:
            await self._fetch(member, timeout)

    async def _fetch(self, member: str, timeout: float) -> None:
        """Ask ``member`` for its map and offer it for install (checks and fencing as for any map);
        gives up quietly after ``timeout`` (the next re-send or pull tries again)."""
        with trio.move_on_after(timeout):
            try:
                reply = await self.peers.request(member, ShardMapPull(), timeout=timeout)
            except PeerUnavailable:
                return
            if isinstance(reply, ShardMap):
                await self.offer(reply, member)

    async def _serve_pull(self, envelope: Envelope, stream: MessageStream) -> None:
        current = self.view.value
        await stream.send(current if current is not None else ShardMapAck(accepted=False, reason="no map yet"))

    async def _serve_offer(self, envelope: Envelope, stream: MessageStream) -> None:
        reason: str = await self.ask(_Offer(envelope.message, envelope.sender))
        await stream.send(ShardMapAck(accepted=not reason, reason=reason))

    # -- the actor's side --------------------------------------------------------------
    def next_timer(self) -> float:
        return self.core.next_deadline()

    async def on_timer(self, now: float) -> None:
        await self._carry_out(self.core.tick(now))

    async def handle(self, msg: Any) -> Any:
        return await self._handlers[type(msg)](msg)

    async def _on_offer(self, msg: _Offer) -> str:
        return await self._consider(msg.map, msg.sender)

    async def _on_rebalance(self, msg: _Rebalance) -> dict[str, Any]:
        answer: RebalancePlan | None = self.core.rebalance(msg.dry_run, msg.only, trio.current_time())
        if answer is None:
            raise_not_leader()
        await self._carry_out(answer.effects)
        current = self.view.value
        return {"moved": len(answer.plan), "dry_run": msg.dry_run,
                "shard_map_version": current.version if current else 0, "plan": answer.plan}

    async def _on_round(self, msg: _Round) -> None:
        await self._carry_out(self.core.on_round(msg.replies, trio.current_time()))

    async def _on_lease(self, msg: _Lease) -> None:
        await self._carry_out(self.core.on_lease(msg.view, trio.current_time()))

    async def _on_members(self, msg: _Members) -> None:
        await self._carry_out(self.core.on_members(msg.view.members.values(), trio.current_time()))

    async def _carry_out(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            await self._effects[type(effect)](effect)

    # -- effects -----------------------------------------------------------------------
    async def _pull(self, effect: Pull) -> None:
        if self._pulling:
            return  # one pull at a time; the next membership change asks again if still behind

        async def pull() -> None:
            try:
                await self._fetch(effect.leader, SEND_TIMEOUT)
            finally:
                self._pulling = False

        self._pulling = True
        self._nursery.start_soon(pull)

    async def _catch_up(self, effect: CatchUp) -> None:
        replies = await self.peers.gather(effect.ask, ShardMapPull(), timeout=SEND_TIMEOUT / 2)
        maps: dict[str, ShardMap | None] = {}
        for member, reply in replies.items():
            if isinstance(reply, ShardMap):
                if not acceptable(None, reply, shards=self.shards):  # a well-formed map of this cluster
                    maps[member] = reply
            elif isinstance(reply, ShardMapAck):
                maps[member] = None  # it answered: it has no map
        await self._carry_out(self.core.caught_up(maps, len(effect.ask), trio.current_time(), effect.only))

    async def _recompute(self, effect: Recompute) -> None:
        positions: dict[tuple[int, str], tuple[int, int]] = {}
        if effect.ask:
            replies = await self.peers.gather(effect.ask, lambda m: PositionQuery(effect.ask[m]),
                                              timeout=SEND_TIMEOUT / 2)
            for member, reply in replies.items():
                if isinstance(reply, Positions):
                    for shard, epoch, seq in reply.positions:
                        positions[(shard, member)] = (epoch, seq)
        proposal = self.core.propose(positions, trio.current_time(), only=effect.only)
        if proposal is None:
            return
        await self._carry_out(proposal.effects)
        reason = await self._consider(proposal.map, self.self_id)
        if reason:
            await self._carry_out(self.core.refused(proposal.map, reason))

    async def _poll(self, effect: Poll) -> None:
        self._nursery.start_soon(self._poll_learners, effect.primaries)

    async def _poll_learners(self, primaries: tuple[str, ...]) -> None:
        """Ask the primaries of transferring shards for their replication status rows."""
        replies: dict[str, Any] = {}
        if self.self_id in primaries:
            replies[self.self_id] = self.replication_status() if self.replication_status else []
        asked = await self.peers.gather([m for m in primaries if m != self.self_id], StatusRequest(),
                                        timeout=SEND_TIMEOUT)
        for member, reply in asked.items():
            if isinstance(reply, PeerUnavailable):
                replies[member] = str(reply)
            elif isinstance(reply, StatusReply):
                replies[member] = reply.shards
        await self.tell(_Round(replies))

    async def _push(self, effect: Broadcast) -> None:
        for member in effect.to:
            self._nursery.start_soon(self._push_map, member, effect.map)

    async def _push_map(self, member: str, shard_map: ShardMap) -> None:
        try:
            await self.peers.request(member, shard_map, timeout=SEND_TIMEOUT)
        except PeerUnavailable:
            pass  # the next re-send, or the member's own restart, catches it up

    async def _announce_header(self, effect: AnnounceHeader) -> None:
        if self._announce is not None:
            try:
                await self._announce(map=[effect.token, effect.version])
            except ActorTimeout:  # membership busy: the header rides on the next map's announce
                self.log.warning("shard_map_announce_timed_out", token=effect.token, version=effect.version)

    async def _log(self, effect: Log) -> None:
        getattr(self.log, effect.level)(effect.event, **effect.fields)

    async def _count_abandoned(self, effect: Abandoned) -> None:
        self.metrics.transfers_abandoned.inc(len(effect.transfers))

    # -- install -----------------------------------------------------------------------
    async def _consider(self, offered: ShardMap, sender: str) -> str:
        problems = acceptable(self.view.value, offered, shards=self.shards)
        if problems:
            self.core.heard(offered, sender)  # the leader's map, the same as ours: ours is current
            self.current.set(self.core.current)
            return "; ".join(problems)
        try:
            fenced = await self.fence(offered.token)
        except ActorTimeout:
            # the lease actor is busy past the ask's timeout (its fsync stuck behind a saturated
            # disk, seen in a chaos run): refuse this offer; the leader re-sends and pulls repeat
            self.log.warning("shard_map_fence_timed_out", token=offered.token, version=offered.version, sender=sender)
            return f"fencing check of token {offered.token} timed out; retry"
        if not fenced:
            return f"stale token {offered.token}"
        await disk_call(self.store.blocking, self.store.save, offered)
        await self._install(offered, sender)
        return ""

    async def _install(self, shard_map: ShardMap, source: str) -> None:
        effects = self.core.installed(shard_map, trio.current_time(), from_disk=source == "disk")
        self.current.set(self.core.current)
        self.view.set(shard_map)
        self.metrics.shards_moving.set(len(transferring(shard_map.placement, shard_map.counted)))
        self.metrics.shard_balance.set(shard_map.balance())
        self.log.info("shard_map_installed", token=shard_map.token, version=shard_map.version, source=source,
                      members=len(shard_map.members()), current=self.core.current)
        await self._carry_out(effects)
