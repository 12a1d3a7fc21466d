"""Operator actions on the cluster: maintenance (drain a node, bring it back) and manual rebalance.

Maintenance is a flag in the node's own gossip metadata: a node in maintenance is not eligible,
so the leader's next target moves its copies away (learners first, then the flip) while it keeps
serving and forwarding. ``shards_remaining`` counts the shards the map still places on it plus
the primaries it is still handing over (the new primary has not yet confirmed it holds
everything this node wrote); at 0 the node is ``drained`` and can be stopped. Turning maintenance
off makes it eligible again and the leader rebalances shards back onto it.

The flag is persisted (``maintenance.msgpack`` beside the WAL) before it is announced, so a node
restarted in maintenance (the rolling upgrade's step 3) comes back still in maintenance and takes
no shards until the operator disables it (step 5). The SDK's options: ``reject_requests`` makes
the node answer client requests with 503 (and ``/health/ready`` with 503, so load balancers move
on) while it keeps serving what other nodes forward to it; ``duration_minutes`` ends maintenance
by itself after that long (wall-clock, across restarts).

A rebalance is planned by the leader: any node forwards the request to it over the transport.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ..endpoint import Endpoint, MessageStream
from ..errors import NotFound, ServiceError, Unavailable
from ..log import EventLogger
from ..peers import Peers, PeerUnavailable
from ..routing.messages import Reply
from ..runtime import ActorStopped, ActorTimeout
from ..runtime.published import Published
from ..wal.actor import disk_call
from ..wire import Envelope
from .maintenance import MaintenanceOptions, MaintenanceState, MaintenanceStatus, MaintenanceStore
from .messages import MaintenanceCommand, RebalanceCommand

if TYPE_CHECKING:
    from ..lease.actor import LeaseView
    from ..membership.actor import MembershipView
    from ..sharding.shardmap import ShardMap


class Flags(Protocol):
    """The node's readiness flag this service sets: client requests rejected in maintenance."""

    rejecting: bool


class MembershipSource(Protocol):
    """What operations need of membership: the view, and announcing this node's maintenance flag."""

    @property
    def view(self) -> Published[MembershipView]: ...

    async def update_meta(self, **changes: Any) -> None: ...


class ShardMapSource(Protocol):
    """The shard map this node follows, and the leader's rebalance (planned where the lease is)."""

    @property
    def view(self) -> Published[ShardMap | None]: ...

    async def rebalance(self, dry_run: bool, only: set[int] | None) -> dict[str, Any]: ...


class Operations:
    """Maintenance and rebalance, here or on the member an operator names.

    Built by the node with what it uses: the maintenance flag's store and the state loaded before
    membership started (the flag goes out in the first gossip), the membership actor (to announce
    the flag), the lease and shard-map views, ``handing_over`` (how many primaries this node is
    still handing over) and the peers to ask the others.
    """

    def __init__(self, *, node_id: str, store: MaintenanceStore, state: MaintenanceState, flags: Flags,
                 membership: MembershipSource, lease: Published[LeaseView], shard_map: ShardMapSource,
                 handing_over: Callable[[], int], peers: Peers, endpoint: Endpoint,
                 wall_clock: Callable[[], float], log: EventLogger, nursery: trio.Nursery) -> None:
        self.node_id = node_id
        self.store = store
        self.state = state
        self.flags = flags
        self.membership = membership
        self.lease = lease
        self.shard_map = shard_map
        self.handing_over = handing_over
        self.peers = peers
        self.wall_clock = wall_clock
        self.log = log
        self.nursery = nursery
        self._expiry: trio.CancelScope | None = None
        flags.rejecting = self.state.enabled and self.state.reject_requests
        self._schedule_expiry()
        endpoint.on_stream(MaintenanceCommand, self._serve_maintenance)
        endpoint.on_stream(RebalanceCommand, self._serve_rebalance)

    # -- maintenance -------------------------------------------------------------------
    def _in_maintenance(self) -> bool:
        me = self.membership.view.value.members.get(self.node_id)
        return bool(me is not None and me.maintenance)

    def maintenance_status(self) -> MaintenanceStatus:
        smap = self.shard_map.view.value
        me = self.node_id
        held = sum(1 for copies in smap.placement if me in copies) if smap else 0
        active = self._in_maintenance()
        until = self.state.until if active else None
        return MaintenanceStatus(
            node_id=me, maintenance=active, shards_remaining=held + self.handing_over(),
            primary_shards=smap.primaries_of(me) if smap else [],
            replica_shards=smap.replicas_of(me) if smap else [],
            reason=self.state.reason if active else "", reject_requests=active and self.state.reject_requests,
            ends_in_seconds=max(0, round(until - self.wall_clock())) if until is not None else None,
            since=self.state.since if active else None, until=until)

    async def set_maintenance(self, enable: bool, options: MaintenanceOptions | None = None) -> MaintenanceStatus:
        membership = self.membership
        options = options or MaintenanceOptions()
        until = (self.wall_clock() + options.duration_minutes * 60
                 if enable and options.duration_minutes is not None else None)
        # enabling again (new options) keeps when it began
        since = self.state.since if self.state.enabled and self.state.since is not None else self.wall_clock()
        state = (MaintenanceState(True, options.reject_requests, options.reason, until, since) if enable
                 else MaintenanceState())
        # persisted before it is announced: a restart right after this answer keeps it
        await disk_call(self.store.blocking, self.store.save, state)
        self.state = state
        if enable:
            self.flags.rejecting = state.reject_requests  # turned away before it is announced
        self._schedule_expiry()
        me = membership.view.value.members.get(self.node_id)
        changed = me is None or me.maintenance != enable
        # always said (the view may lag a change of a moment ago); a no-op when already so
        await membership.update_meta(maintenance=enable)
        if changed and enable:
            self.log.info("maintenance_enabled", reason=options.reason or "-",
                          reject_requests=options.reject_requests,
                          duration_minutes=options.duration_minutes or "-")
        elif changed:
            self.log.info("maintenance_disabled")
        me_id = self.node_id
        with trio.move_on_after(2.0):  # the published view follows the core a moment later
            await membership.view.wait_for(
                lambda v: me_id in v.members and v.members[me_id].maintenance == enable)
        if not enable:
            self.flags.rejecting = False  # clients back once the flag is off
        return self.maintenance_status()

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        until = self.state.until if self.state.enabled else None
        if until is None:
            return
        scope = self._expiry = trio.CancelScope()
        deadline = trio.current_time() + max(0.0, until - self.wall_clock())

        async def expire() -> None:
            with scope:
                await trio.sleep_until(deadline)
                while True:
                    self.log.info("maintenance_expired", reason=self.state.reason or "-")
                    try:
                        self._expiry = None
                        await self.set_maintenance(False)
                        return
                    except ActorStopped:
                        return  # the node is stopping; the stored flag has its end time and expires at start
                    except (ActorTimeout, OSError) as exc:
                        # a busy membership actor or a disk error: never a reason to fail the node
                        self.log.warning("maintenance_expiry_retry", error=repr(exc))
                        self._expiry = scope
                        await trio.sleep(5.0)

        self.nursery.start_soon(expire)

    async def maintenance(self, enable: bool | None, node_ids: list[str] | None,
                          options: MaintenanceOptions | None = None) -> list[MaintenanceStatus]:
        """Enable/disable (None: report) on this node, or on the named members (asked at once;
        a name no member has is refused before anything changes): each one's status."""
        options = options or MaintenanceOptions()
        if not node_ids:
            return [self.maintenance_status() if enable is None else await self.set_maintenance(enable, options)]
        others = [n for n in dict.fromkeys(node_ids) if n != self.node_id]
        for node_id in others:
            if self.peers.member(node_id) is None:
                raise NotFound(f"no member {node_id!r} in this cluster", code="NOT_FOUND")
        mine = None
        if self.node_id in node_ids:
            mine = self.maintenance_status() if enable is None else await self.set_maintenance(enable, options)
        replies = await self.peers.gather(others, MaintenanceCommand(
            enable, options.reject_requests, options.duration_minutes, options.reason))
        statuses = {n: MaintenanceStatus.of_json(self._answer(replies[n])) for n in others}
        if mine is not None:
            statuses[self.node_id] = mine
        return [statuses[n] for n in node_ids]

    async def _ask(self, node_id: str, command: object) -> Any:
        try:
            reply = await self.peers.request(node_id, command)
        except PeerUnavailable as exc:
            reply = exc
        return self._answer(reply)

    @staticmethod
    def _answer(reply: Reply | PeerUnavailable) -> Any:
        """A member's answer to a command, or the refusal it stands for."""
        if isinstance(reply, PeerUnavailable):
            if reply.unknown:
                raise NotFound(f"no member {reply.member_id!r} in this cluster", code="NOT_FOUND")
            raise Unavailable(str(reply))
        if reply.status != 200:
            raise reply.error()
        return json.loads(reply.body)

    async def _local_maintenance(self, enable: bool | None, options: MaintenanceOptions) -> dict[str, Any]:
        status = self.maintenance_status() if enable is None else await self.set_maintenance(enable, options)
        return attrs.asdict(status)

    async def _serve_maintenance(self, envelope: Envelope, stream: MessageStream) -> None:
        command: MaintenanceCommand = envelope.message
        options = MaintenanceOptions(command.reject_requests, command.duration_minutes, command.reason)
        await self._reply(stream, self._local_maintenance(command.enable, options))

    # -- rebalance ---------------------------------------------------------------------
    async def rebalance(self, dry_run: bool, shard_ids: list[int] | None) -> Any:
        lease = self.lease.value
        if lease.is_self:
            return await self.shard_map.rebalance(dry_run, set(shard_ids) if shard_ids is not None else None)
        if lease.leader is None:
            raise Unavailable("no leader: shards cannot be reassigned until one is elected")
        return await self._ask(lease.leader, RebalanceCommand(dry_run, shard_ids))

    async def _serve_rebalance(self, envelope: Envelope, stream: MessageStream) -> None:
        command: RebalanceCommand = envelope.message
        if not self.lease.value.is_self:
            await stream.send(Reply.of_error(Unavailable("not the leader (any more); retry")))
            return
        await self._reply(stream, self.rebalance(command.dry_run, command.shard_ids))

    @staticmethod
    async def _reply(stream: MessageStream, work: Any) -> None:
        try:
            reply = Reply(200, json.dumps(await work).encode())
        except ServiceError as err:
            reply = Reply.of_error(err)
        await stream.send(reply)
