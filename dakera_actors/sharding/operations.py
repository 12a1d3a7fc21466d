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
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..api.errors import ApiError
from ..endpoint import MessageStream, RemoteError
from ..errors import ServiceError
from ..runtime import ActorStopped, ActorTimeout
from ..transport import TransportError
from ..wal.actor import disk_call
from ..wire import Envelope, message
from ..wirebounds import REASON, SHARD_LIST, STATUS, Blob, Int, Optional, bound
from .maintenance import MaintenanceOptions, MaintenanceState, MaintenanceStore

if TYPE_CHECKING:
    from ..node import Node


@message("ops.maintenance")
@attrs.frozen
class MaintenanceCommand:
    enable: bool | None = None  # None: only report
    reject_requests: bool = False
    duration_minutes: int | None = attrs.field(default=None, metadata=bound(Optional(Int(0, 100 * 366 * 24 * 60))))
    reason: str = attrs.field(default="", metadata=bound(REASON))


@message("ops.rebalance")
@attrs.frozen
class RebalanceCommand:
    dry_run: bool = False
    shard_ids: list[int] | None = attrs.field(default=None, metadata=bound(Optional(SHARD_LIST)))


@message("ops.reply")
@attrs.frozen
class OperationReply:
    status: int = attrs.field(metadata=bound(STATUS))
    body: bytes = attrs.field(metadata=bound(Blob()))


class Operations:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = MaintenanceStore(node.data_dir, node.disk)
        #: loaded by the node before membership starts (the flag goes out in the first gossip)
        self.state: MaintenanceState = node.maintenance_state
        self._expiry: trio.CancelScope | None = None
        node.readiness.rejecting = self.state.enabled and self.state.reject_requests
        self._schedule_expiry()
        if node.endpoint is not None:
            node.endpoint.on_stream(MaintenanceCommand, self._serve_maintenance)
            node.endpoint.on_stream(RebalanceCommand, self._serve_rebalance)

    # -- maintenance -------------------------------------------------------------------
    def _in_maintenance(self) -> bool:
        membership = self.node.membership
        me = membership.view.value.members.get(self.node.node_id) if membership else None
        return bool(me is not None and me.maintenance)

    def maintenance_status(self) -> dict[str, Any]:
        smap = self.node.shard_map.view.value if self.node.shard_map else None
        me = self.node.node_id
        held = sum(1 for copies in smap.placement if me in copies) if smap else 0
        handing = len(self.node.replicator.handing_over) if self.node.replicator else 0
        remaining = held + handing
        active = self._in_maintenance()
        until = self.state.until if active else None
        return {"status": "drained" if active and remaining == 0 else "draining" if active else "active",
                "node_id": me, "maintenance": active, "shards_remaining": remaining,
                "primary_shards": smap.primaries_of(me) if smap else [],
                "replica_shards": smap.replicas_of(me) if smap else [],
                "reason": self.state.reason if active else "",
                "reject_requests": active and self.state.reject_requests,
                "ends_in_seconds": max(0, round(until - self.node.wall_clock())) if until is not None else None}

    async def set_maintenance(self, enable: bool, options: MaintenanceOptions | None = None) -> dict[str, Any]:
        membership = self.node.membership
        if membership is None:
            raise ApiError(409, "maintenance needs cluster mode: a single node has nowhere to move its shards")
        options = options or MaintenanceOptions()
        until = (self.node.wall_clock() + options.duration_minutes * 60
                 if enable and options.duration_minutes is not None else None)
        state = (MaintenanceState(True, options.reject_requests, options.reason, until) if enable
                 else MaintenanceState())
        # persisted before it is announced: a restart right after this answer keeps it
        await disk_call(self.store.blocking, self.store.save, state)
        self.state = state
        if enable:
            self.node.readiness.rejecting = state.reject_requests  # turned away before it is announced
        self._schedule_expiry()
        me = membership.view.value.members.get(self.node.node_id)
        changed = me is None or me.maintenance != enable
        # always said (the view may lag a change of a moment ago); a no-op when already so
        await membership.update_meta(maintenance=enable)
        if changed and enable:
            self.node.log.info("maintenance_enabled", reason=options.reason or "-",
                               reject_requests=options.reject_requests,
                               duration_minutes=options.duration_minutes or "-")
        elif changed:
            self.node.log.info("maintenance_disabled")
        me_id = self.node.node_id
        with trio.move_on_after(2.0):  # the published view follows the core a moment later
            await membership.view.wait_for(
                lambda v: me_id in v.members and v.members[me_id].maintenance == enable)
        if not enable:
            self.node.readiness.rejecting = False  # clients back once the flag is off
        return self.maintenance_status()

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        until = self.state.until if self.state.enabled else None
        if until is None or self.node.nursery is None:
            return
        scope = self._expiry = trio.CancelScope()
        deadline = trio.current_time() + max(0.0, until - self.node.wall_clock())

        async def expire() -> None:
            with scope:
                await trio.sleep_until(deadline)
                while True:
                    self.node.log.info("maintenance_expired", reason=self.state.reason or "-")
                    try:
                        self._expiry = None
                        await self.set_maintenance(False)
                        return
                    except ActorStopped:
                        return  # the node is stopping; the stored flag has its end time and expires at start
                    except (ActorTimeout, OSError) as exc:
                        # a busy membership actor or a disk error: never a reason to fail the node
                        self.node.log.warning("maintenance_expiry_retry", error=repr(exc))
                        self._expiry = scope
                        await trio.sleep(5.0)

        self.node.nursery.start_soon(expire)

    async def maintenance(self, enable: bool | None, node_ids: list[str] | None,
                          options: MaintenanceOptions | None = None) -> Any:
        """Enable/disable (None: report) on this node, or on the named members."""
        options = options or MaintenanceOptions()
        if not node_ids:
            return self.maintenance_status() if enable is None else await self.set_maintenance(enable, options)
        answers = []
        for node_id in node_ids:
            if node_id == self.node.node_id:
                answers.append(self.maintenance_status() if enable is None
                               else await self.set_maintenance(enable, options))
                continue
            answers.append(await self._ask(node_id, MaintenanceCommand(
                enable, options.reject_requests, options.duration_minutes, options.reason)))
        return answers[0] if len(answers) == 1 else {"nodes": answers}

    async def _ask(self, node_id: str, command: object) -> Any:
        members = self.node.membership.view.value.members if self.node.membership else {}
        member = members.get(node_id)
        if member is None:
            raise ApiError(404, f"no member {node_id!r} in this cluster", code="NOT_FOUND")
        if not member.reachable:
            raise ApiError(503, f"member {node_id} is {member.state.label}", retry_after=1)
        try:
            reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                member.address, command, timeout=self.node.config.request_timeout)
        except (TransportError, RemoteError) as exc:
            raise ApiError(503, f"member {node_id} did not answer: {exc}", retry_after=1) from None
        answer: OperationReply = reply.message
        body = json.loads(answer.body)
        if answer.status != 200:
            raise ApiError(answer.status, body.get("error", "failed"), code=body.get("code"))
        return body

    async def _serve_maintenance(self, envelope: Envelope, stream: MessageStream) -> None:
        command: MaintenanceCommand = envelope.message
        options = MaintenanceOptions(command.reject_requests, command.duration_minutes, command.reason)
        await self._reply(stream, self.maintenance(command.enable, None, options))

    # -- rebalance ---------------------------------------------------------------------
    async def rebalance(self, dry_run: bool, shard_ids: list[int] | None) -> Any:
        shard_map = self.node.shard_map
        lease = self.node.lease.view.value if self.node.lease else None
        if shard_map is None or lease is None:
            raise ApiError(409, "rebalancing needs cluster mode")
        if lease.is_self:
            return await shard_map.rebalance(dry_run, set(shard_ids) if shard_ids is not None else None)
        if lease.leader is None:
            raise ApiError(503, "no leader: shards cannot be reassigned until one is elected", retry_after=1)
        return await self._ask(lease.leader, RebalanceCommand(dry_run, shard_ids))

    async def _serve_rebalance(self, envelope: Envelope, stream: MessageStream) -> None:
        command: RebalanceCommand = envelope.message
        lease = self.node.lease.view.value if self.node.lease else None
        if lease is None or not lease.is_self:
            await stream.send(OperationReply(503, json.dumps(
                {"error": "not the leader (any more); retry", "code": "SERVICE_UNAVAILABLE"}).encode()))
            return
        await self._reply(stream, self.rebalance(command.dry_run, command.shard_ids))

    @staticmethod
    async def _reply(stream: MessageStream, work: Any) -> None:
        try:
            body, status = await work, 200
        except ServiceError as err:
            body, status = err.body(), err.status
        await stream.send(OperationReply(status, json.dumps(body).encode()))
