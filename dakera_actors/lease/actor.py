"""The lease actor: runs the lease core over the endpoint, persists before it speaks, publishes.

Membership tells it who is reachable; the core decides everything else. Effects are carried
out in order, and a ``Persist`` is awaited before anything after it is sent: a grant or a
campaign is never on the wire before its token is on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..endpoint import Endpoint
from ..log import EventLogger
from ..membership.actor import MembershipView
from ..membership.member import MemberState
from ..metrics import NodeMetrics
from ..peers import Peers
from ..runtime import Actor, Published
from ..wal.actor import disk_call
from ..wire import Envelope
from .core import Effect, LeaseCore, Persist, Send, TokenRefused
from .messages import (
    ConfigAck,
    ConfigCommit,
    LeaseAnnounce,
    LeaseGrant,
    LeasePreVote,
    LeasePreVoteReply,
    LeaseRelease,
    LeaseRequest,
)


@attrs.frozen
class LeaseView:
    """Who leads, as this node sees it. ``until`` is in this node's trio time."""

    leader: str | None
    token: int
    until: float
    is_self: bool

    def remaining(self, now: float) -> float | None:
        return self.until - now if self.leader is not None and now < self.until else None


@attrs.frozen
class _Inbound:
    message: Any
    sender: str


@attrs.frozen
class _Members:
    view: MembershipView


@attrs.frozen
class _Fence:
    token: int


class LeaseActor(Actor):
    """Lease packets arrive through ``endpoint``; the core's sends and broadcasts go out through
    ``peers`` (member ids, the membership view's addresses)."""

    def __init__(self, core: LeaseCore, store: Any, endpoint: Endpoint, peers: Peers, metrics: NodeMetrics,
                 log: EventLogger) -> None:
        super().__init__("lease")
        self.core = core
        self.store = store
        self.peers = peers
        self.log = log
        self.view: Published[LeaseView] = Published(LeaseView(None, 0, 0.0, False))
        for kind in (LeaseRequest, LeaseGrant, LeaseRelease, LeaseAnnounce, ConfigCommit, ConfigAck,
                     LeasePreVote, LeasePreVoteReply):
            endpoint.on_packet(kind, self._on_packet)
        metrics.registry.register(_LeaseCollector(self))
        metrics.leader_lease_remaining_ms.set_function(self._remaining_ms)

    def _remaining_ms(self) -> float:
        remaining = self.view.value.remaining(trio.current_time()) if _in_trio() else None
        return 0.0 if remaining is None else remaining * 1000

    def _on_packet(self, envelope: Envelope, source: str) -> None:
        self.tell_nowait(_Inbound(envelope.message, envelope.sender))

    async def follow(self, membership: Published[MembershipView]) -> None:
        """Feed membership changes in (run as a task beside the actor)."""
        async for view in membership.changes():
            await self.tell(_Members(view))

    async def fence(self, token: int) -> bool:
        """Accept a leader decision stamped ``token``? Asked of the actor (which owns the core);
        a raised floor is persisted before the answer, so a restart cannot make this node accept
        an older leader again."""
        accepted: bool = await self.ask(_Fence(token))
        return accepted

    # -- the actor's side --------------------------------------------------------------
    def next_timer(self) -> float:
        return self.core.next_deadline()

    async def on_timer(self, now: float) -> None:
        await self._carry_out(self.core.tick(now))

    async def handle(self, message: Any) -> Any:
        now = trio.current_time()
        if isinstance(message, _Fence):
            accepted, effects = self.core.fence_check(message.token, now)
            await self._carry_out(effects)
            return accepted
        if isinstance(message, _Inbound):
            await self._carry_out(self.core.handle(message.message, message.sender, now))
        elif isinstance(message, _Members):
            members = message.view.members
            alive = {m.id for m in members.values() if m.state == MemberState.ALIVE}
            dead = {m.id for m in members.values() if m.state in (MemberState.DEAD, MemberState.LEFT)}
            await self._carry_out(self.core.on_members(alive, dead, now))
        return None

    async def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                await disk_call(self.store.blocking, self.store.save, effect.state)
            elif isinstance(effect, TokenRefused):
                self.log.warning("lease_token_refused", token=effect.token, floor=effect.floor,
                                 sender=effect.sender or "-", kind=effect.kind or "fence")
            elif isinstance(effect, Send):
                await self.peers.send(effect.to, effect.message)  # an unknown member is skipped
            else:
                for member in self.peers.reachable():
                    await self.peers.send(member, effect.message)
        self._publish()

    def _publish(self) -> None:
        now = trio.current_time()
        core = self.core
        leader = core.current_leader(now)
        remaining = core.lease_remaining(now)
        view = LeaseView(leader, core.leader_token if leader else core.fence_floor,
                         now + remaining if remaining is not None else now, leader == core.self_id)
        old = self.view.value
        if (view.leader, view.token, view.is_self) != (old.leader, old.token, old.is_self) \
                or abs(view.until - old.until) > 1e-9:
            self.view.set(view)
            if (view.leader, view.token) != (old.leader, old.token):
                self.log.info("leader_changed", leader=view.leader or "-", token=view.token,
                              self_is_leader=view.is_self)


class _LeaseCollector(Collector):
    def __init__(self, actor: LeaseActor) -> None:
        self._actor = actor

    def collect(self) -> Iterator[Metric]:
        core = self._actor.core
        token = GaugeMetricFamily("dakera_fencing_token", "The highest fencing token of a leader this node knows")
        token.add_metric([], core.fence_floor)
        yield token
        view = self._actor.view.value
        leading = view.is_self and _in_trio() and view.remaining(trio.current_time()) is not None
        is_leader = GaugeMetricFamily("dakera_is_leader",
                                      "1 while this node holds an unexpired leader lease, else 0 (sum over "
                                      "the nodes: how many lead; 0 or 2 for long is an incident)")
        is_leader.add_metric([], 1.0 if leading else 0.0)
        yield is_leader
        for name, value, text in (
            ("dakera_fencing_rejections", core.stats.fencing_rejections, "Leader decisions refused for a stale token"),
            ("dakera_lease_campaigns", core.stats.campaigns, "Elections this node started"),
            ("dakera_lease_elections_won", core.stats.elections_won, "Elections this node won"),
            ("dakera_lease_step_downs", core.stats.step_downs, "Leases this node lost without a renewal"),
            ("dakera_lease_prevotes", core.stats.prevotes, "Pre-vote rounds this node started"),
            ("dakera_lease_tokens_refused", core.stats.tokens_refused,
             "Tokens refused as beyond the bound or a jump no election could make"),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


def _in_trio() -> bool:
    try:
        trio.current_time()
        return True
    except RuntimeError:
        return False
