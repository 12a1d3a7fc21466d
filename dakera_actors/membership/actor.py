"""The membership actor: runs the SWIM core over the node's endpoint and publishes the view.

It only carries things out: packets in go to the core, effects out go to the endpoint, timers
come from ``core.next_deadline()``, and every change of the view is published (latest value)
for the rest of the node: the lease, the shard map and the admin API all read membership here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..endpoint import Endpoint, MessageStream, RemoteError
from ..log import EventLogger
from ..metrics import NodeMetrics
from ..runtime import Actor, Published
from ..transport import TransportError
from ..wire import Envelope
from .core import Send, StartPushPull, SwimCore
from .member import Member, MemberState, Update
from .messages import SwimAck, SwimGossip, SwimNack, SwimPing, SwimPingReq, SwimPushPull

PUSH_PULL_TIMEOUT = 5.0
PUBLISH_DELAY = 0.02  # changes within this window are published together: readers see the latest


@attrs.frozen
class MembershipView:
    """An immutable snapshot of what this node believes about the cluster."""

    self_id: str
    members: dict[str, Member]
    version: int

    def alive(self) -> list[Member]:
        return [m for m in self.members.values() if m.state == MemberState.ALIVE]

    def count(self, state: MemberState) -> int:
        return sum(1 for m in self.members.values() if m.state == state)


@attrs.frozen
class _Inbound:
    message: Any
    source: str


@attrs.frozen
class _PushPullIn:
    members: list[Update]
    join: bool


@attrs.frozen
class _PushPullResult:
    address: str
    join: bool
    members: list[Update] | None


@attrs.frozen
class _SetMeta:
    meta: dict[str, Any]


@attrs.frozen
class _UpdateMeta:
    changes: dict[str, Any]


@attrs.frozen
class _Leave:
    pass


class MembershipActor(Actor):
    def __init__(self, core: SwimCore, endpoint: Endpoint, metrics: NodeMetrics, log: EventLogger,
                 nursery: trio.Nursery) -> None:
        super().__init__("membership")
        self.core = core
        self.endpoint = endpoint
        self.metrics = metrics
        self.log = log
        self._nursery = nursery
        self.view: Published[MembershipView] = Published(self._snapshot())
        self.joined = trio.Event()
        self._publish_at = math.inf
        for kind in (SwimPing, SwimAck, SwimPingReq, SwimNack, SwimGossip):
            endpoint.on_packet(kind, self._on_packet)
        endpoint.on_stream(SwimPushPull, self._serve_push_pull)
        metrics.registry.register(_SwimCollector(self))
        if core.joined:
            self.joined.set()  # no seeds: a cluster of its own from the start

    # -- the outside world's side ------------------------------------------------------
    def _on_packet(self, envelope: Envelope, source: str) -> None:
        self.tell_nowait(_Inbound(envelope.message, source))  # a full mailbox drops, like UDP

    async def _serve_push_pull(self, envelope: Envelope, stream: MessageStream) -> None:
        message: SwimPushPull = envelope.message
        mine: list[Update] = await self.ask(_PushPullIn(message.members, message.join), timeout=PUSH_PULL_TIMEOUT)
        await stream.send(SwimPushPull(mine))

    async def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace this node's metadata (every key)."""
        await self.ask(_SetMeta(meta))

    async def update_meta(self, **changes: Any) -> None:
        """Change some keys of this node's metadata, keeping the others as the core has them now
        (not as the published view, which lags: two callers updating different keys, the
        maintenance flag and the leader's map header, must not undo each other)."""
        await self.ask(_UpdateMeta(changes))

    async def leave(self) -> None:
        """Announce a graceful leave (peers mark this node Left instead of waiting to suspect it)."""
        await self.ask(_Leave())

    # -- the actor's side --------------------------------------------------------------
    def next_timer(self) -> float:
        return min(self.core.next_deadline(), self._publish_at)

    async def on_timer(self, now: float) -> None:
        if now >= self._publish_at:
            self._publish_now()
        if now >= self.core.next_deadline():
            await self._carry_out(self.core.tick(now))

    async def handle(self, message: Any) -> Any:
        now = trio.current_time()
        if isinstance(message, _Inbound):
            await self._carry_out(self.core.handle(message.message, message.source, now))
        elif isinstance(message, _PushPullIn):
            self.core.merge(message.members, now, joining_peer=message.join)
            self._note_joined("a joining peer")
            self._publish()
            return self.core.local_state()
        elif isinstance(message, _PushPullResult):
            ok = message.members is not None
            if message.members is not None:
                self.core.merge(message.members, now)
            self.core.push_pull_done(message.address, ok, message.join)
            self._note_joined(message.address)
        elif isinstance(message, _SetMeta):
            self.core.set_meta(message.meta, now)
        elif isinstance(message, _UpdateMeta):
            merged = {**self.core.me.meta, **message.changes}
            if merged != self.core.me.meta:
                self.core.set_meta(merged, now)
        elif isinstance(message, _Leave):
            await self._carry_out(self.core.leave(now))
        self._publish()
        return None

    def _note_joined(self, via: str) -> None:
        if self.core.joined and not self.joined.is_set():
            self.log.info("cluster_joined", via=via, members=len(self.core.members))
            self.joined.set()

    async def _carry_out(self, effects: list[Send | StartPushPull]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                await self.endpoint.send(effect.address, effect.message)
            else:
                self._nursery.start_soon(self._push_pull, effect.address, effect.join)
        self._publish()

    async def _push_pull(self, address: str, join: bool) -> None:
        members: list[Update] | None = None
        try:
            reply = await self.endpoint.request(address, SwimPushPull(self.core.local_state(), join),
                                                timeout=PUSH_PULL_TIMEOUT)
            if isinstance(reply.message, SwimPushPull):
                members = reply.message.members
        except (TransportError, RemoteError) as exc:
            # unreachable, or up but refusing (a peer still starting answers "unhandled"): the
            # next round tries again; never a reason to fail this node
            self.log.debug("push_pull_failed", peer=address, join=join, error=str(exc))
        self.tell_nowait(_PushPullResult(address, join, members))

    def _snapshot(self) -> MembershipView:
        return MembershipView(self.core.self_id, dict(self.core.members), self.core.version)

    def _publish(self) -> None:
        """Schedule publication of the view if it changed (bursts of changes coalesce)."""
        if self.view.value.version != self.core.version and self._publish_at == math.inf:
            self._publish_at = trio.current_time() + PUBLISH_DELAY

    def _publish_now(self) -> None:
        self._publish_at = math.inf
        if self.view.value.version == self.core.version:
            return
        before = self.view.value
        view = self._snapshot()
        self.view.set(view)
        for state in MemberState:
            self.metrics.gossip_members.labels(state.label.lower()).set(view.count(state))
        for member_id, member in view.members.items():
            old = before.members.get(member_id)
            if old is None or old.state != member.state:
                self.log.info("member_state", member=member_id, state=member.state.label,
                              incarnation=member.incarnation, address=member.address)


class _SwimCollector(Collector):
    def __init__(self, actor: MembershipActor) -> None:
        self._actor = actor

    def collect(self) -> Iterator[Metric]:
        stats = self._actor.core.stats
        for name, value, help_text in (
            ("dakera_swim_probes", stats.probes, "Direct probes sent"),
            ("dakera_swim_probes_failed", stats.probes_failed, "Probes that ended without any ack"),
            ("dakera_swim_indirect_probes", stats.indirect_probes, "Probes made for others (ping-req)"),
            ("dakera_swim_nacks_sent", stats.nacks_sent, "Indirect probes that got no answer"),
            ("dakera_swim_suspicions", stats.suspicions, "Members this node began to suspect"),
            ("dakera_swim_refutations", stats.refutations, "Accusations about this node it refuted"),
            ("dakera_swim_deaths_declared", stats.deaths_declared, "Suspicions this node saw expire into Dead"),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        awareness = GaugeMetricFamily("dakera_swim_awareness", "Lifeguard local health score (0 = healthy)")
        awareness.add_metric([], self._actor.core.awareness.score)
        yield awareness
