"""A discrete-event simulator for lease cores: drifting clocks, lossy links, partitions, crashes.

Each node has its own clock ``local = offset + rate * true_time``; the invariant checker works in
true time, which no node can see: at every event, at most one node may consider its lease valid,
and every change of holder must come with a token strictly above every earlier leader's token.

Links fail whole (partitions), one way per pair (``cut``), or one way per node: a *deaf* node
sends but receives nothing, a *mute* node receives but sends nothing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Any

import attrs

from dakera_actors.lease.core import Broadcast, LeaseConfig, LeaseCore, LeaseState, Persist, Send

from ..linkfaults import LinkFaults


@attrs.define
class SimNode:
    id: str
    rate: float
    offset: float
    disk: LeaseState = attrs.Factory(LeaseState)
    core: LeaseCore | None = None

    def local(self, t: float) -> float:
        return self.offset + self.rate * t


class Violation(AssertionError):
    pass


class LeaseSim(LinkFaults):
    def __init__(self, n: int, *, seed: int, config: LeaseConfig | None = None, drift: float = 0.0,
                 latency: tuple[float, float] = (0.001, 0.005), loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.cfg = config or LeaseConfig(bootstrap_expect=n)
        self.latency, self.loss = latency, loss
        self.now = 0.0
        self.nodes = {f"n{i}": SimNode(f"n{i}", self.rng.uniform(1 - drift, 1 + drift), self.rng.uniform(0, 100))
                      for i in range(1, n + 1)}
        LinkFaults.__init__(self)
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.leaders: list[tuple[float, str, int]] = []  # (true time, id, token) of each election
        self.max_token = 0
        for node in self.nodes.values():
            self._boot(node, restarted=False)

    # -- control -------------------------------------------------------------------------
    def _boot(self, node: SimNode, *, restarted: bool) -> None:
        node.core = LeaseCore(self.cfg, self_id=node.id, state=node.disk, now=node.local(self.now),
                              rng=random.Random(self.rng.random()), restarted=restarted)
        node.core.on_members(set(self.nodes), set(), node.local(self.now))
        self._schedule_tick(node)

    def crash(self, node_id: str) -> None:
        self.nodes[node_id].core = None

    def restart(self, node_id: str) -> None:
        self._boot(self.nodes[node_id], restarted=True)

    # -- engine --------------------------------------------------------------------------
    def _push(self, at: float, kind: str, data: Any) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, data))

    def _schedule_tick(self, node: SimNode) -> None:
        assert node.core is not None
        deadline_local = node.core.next_deadline()
        true_at = (deadline_local - node.offset) / node.rate
        self._push(max(true_at, self.now) + 1e-9, "tick", (node.id, node.core))

    def _carry_out(self, node: SimNode, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                node.disk = effect.state
            elif isinstance(effect, Send):
                self._deliver(node.id, effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                for other in self.nodes:
                    if other != node.id:
                        self._deliver(node.id, other, effect.message)

    def _deliver(self, src: str, dst: str, message: Any) -> None:
        if not self.can_talk(src, dst) or self.rng.random() < self.loss:
            return
        self._push(self.now + self.rng.uniform(*self.latency), "msg", (src, dst, message))

    def run_until(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            at, _, kind, data = heapq.heappop(self._events)
            self.now = max(self.now, at)
            if kind == "tick":
                node_id, core = data
                node = self.nodes[node_id]
                if node.core is not core:
                    continue  # a tick of a crashed incarnation
                self._carry_out(node, core.tick(node.local(self.now)))
                self._schedule_tick(node)
            else:
                src, dst, message = data
                node = self.nodes[dst]
                if node.core is None:
                    continue
                self._carry_out(node, node.core.handle(message, src, node.local(self.now)))
                self._schedule_tick(node)
            self.check()
        self.now = max(self.now, until)

    # -- invariants ----------------------------------------------------------------------
    def holders(self) -> list[tuple[str, int]]:
        return [(n.id, n.core.leader_token) for n in self.nodes.values()
                if n.core is not None and n.core.is_leader(n.local(self.now))]

    def check(self) -> None:
        holders = self.holders()
        if len(holders) > 1:
            raise Violation(f"two valid leases at t={self.now:.4f}: {holders}")
        for node_id, token in holders:
            if not self.leaders or self.leaders[-1][1:] != (node_id, token):
                # the same holder may lose and regain validity under one token (a late renewal);
                # any other change of holder needs a strictly higher token
                if token <= self.max_token:
                    raise Violation(f"leader {node_id} token {token} not above {self.max_token}")
                self.leaders.append((self.now, node_id, token))
                self.max_token = max(self.max_token, token)

    def both_ways(self, a: str, b: str) -> bool:
        return self.can_talk(a, b) and self.can_talk(b, a)

    def leader(self) -> str | None:
        holders = self.holders()
        return holders[0][0] if holders else None
