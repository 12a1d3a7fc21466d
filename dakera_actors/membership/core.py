"""SWIM with Lifeguard, as a pure state machine: messages and ticks in, effects out.

One protocol period: probe one member (shuffled round robin) with a ping; if no ack within the
probe timeout, ask ``indirect_checks`` others to probe it too (ping-req) and relay the ack; if
the period ends without an ack, suspect it. Suspicions are disseminated, confirmed by
independent suspectors (which shortens the timeout, Lifeguard), refuted by the member itself
with a higher incarnation, or expire into Dead. News rides on every packet (piggyback) and is
also pushed to a few random members each gossip interval; a periodic full state exchange over
a stream (push-pull) heals anything gossip missed, and is how a node joins.

No I/O, no clock, no randomness of its own: ``now`` is passed in and ``rng`` is handed over,
so a simulation replays exactly. The actor carries out the returned effects.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import msgpack

from .. import wire
from .awareness import Awareness
from .member import Member, MemberState, Update, supersedes
from .messages import SwimAck, SwimGossip, SwimNack, SwimPing, SwimPingReq
from .queue import BroadcastQueue
from .suspicion import Suspicion

_MESSAGE_OVERHEAD = 96  # frame header + message fields, generously, before any update
SELF_BOOST = 3  # news about this node itself is retransmitted this many times more


@attrs.frozen
class SwimConfig:
    """Protocol timing. Defaults are tuned for a LAN; see the README for the figures they give."""

    probe_interval: float = 0.5
    probe_timeout: float = 0.25
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_dead: float = 30.0  # keep gossiping to the recently dead so a false death is refuted
    push_pull_interval: float = 15.0
    join_retry: float = 1.0
    join_retry_max: float = 30.0
    join_fanout: int = 3  # seeds contacted per join attempt: one answer is enough
    awareness_max: int = 8
    dead_retention: float = 3600.0  # how long Dead/Left members stay listed


@attrs.frozen
class Send:
    """Send ``message`` as a packet to ``address``."""

    address: str
    message: Any


@attrs.frozen
class StartPushPull:
    """Open a stream to ``address`` and exchange full state (``join`` on first contact)."""

    address: str
    join: bool


Effect = Send | StartPushPull


@attrs.define
class SwimStats:
    probes: int = 0
    probes_failed: int = 0
    indirect_probes: int = 0
    nacks_sent: int = 0
    suspicions: int = 0
    refutations: int = 0
    deaths_declared: int = 0
    updates_applied: int = 0


@attrs.define
class _Probe:
    target: str
    seq: int
    timeout_at: float
    period_end: float
    acked: bool = False
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@attrs.define
class _Relay:
    requester: str  # address to answer
    seq: int  # the requester's seq
    deadline: float


def push_pull_scale(members: int) -> int:
    """Full-state exchanges grow with the cluster: above 32 members, space them out by log2
    (memberlist's rule), so each member's push-pull bandwidth stays roughly flat."""
    if members <= 32:
        return 1
    return math.ceil(math.log2(members) - math.log2(32)) + 1


def update_size(update: Update) -> int:
    """Encoded bytes of one update inside a message (exact msgpack size of its payload form)."""
    return len(msgpack.packb(wire.unstructure(update), use_bin_type=True))


class SwimCore:
    def __init__(self, config: SwimConfig, *, self_id: str, address: str, api: str,
                 meta: dict[str, Any] | None, incarnation: int, seeds: list[str], rng: random.Random,
                 now: float, packet_budget: int = 1400) -> None:
        self.config = config
        self.self_id = self_id
        self.rng = rng
        self.packet_budget = packet_budget
        self.members: dict[str, Member] = {
            self_id: Member(self_id, address, api, incarnation, MemberState.ALIVE, dict(meta or {}), now)}
        self.queue = BroadcastQueue(config.retransmit_mult)
        self.awareness = Awareness(config.awareness_max)
        self.stats = SwimStats()
        self.seeds = [s for s in seeds if s != address]
        self.version = 0  # bumped on every change of the view, for publishers
        self.leaving = False
        self._reachable = 1  # cached count of Alive + Suspect members (this node included)
        self._next_reap = now + 1.0
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, _Relay] = {}
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._seq = 0
        self._joined = not self.seeds
        self._join_delay = config.join_retry
        self._next_join = now
        self._next_probe = now + rng.uniform(0, config.probe_interval)  # desynchronise nodes
        self._next_gossip = now + config.gossip_interval
        self._next_push_pull = now + config.push_pull_interval
        self._enqueue(self.me.as_update())

    # -- views -------------------------------------------------------------------------
    @property
    def me(self) -> Member:
        return self.members[self.self_id]

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    def reachable_count(self) -> int:
        return self._reachable

    def local_state(self) -> list[Update]:
        """Everything this node knows, for a push-pull."""
        return [m.as_update() for m in self.members.values()]

    def next_deadline(self) -> float:
        candidates = [self._next_gossip, self._next_push_pull]
        if not self.leaving:
            candidates.append(self._next_probe)
        if self._probe is not None and not self._probe.acked and not self._probe.indirect:
            candidates.append(self._probe.timeout_at)
        if not self._joined:
            candidates.append(self._next_join)
        candidates.extend(r.deadline for r in self._relays.values())
        candidates.extend(s.deadline for s in self._suspicions.values())
        return min(candidates)

    # -- helpers -----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _changed(self) -> None:
        self.version += 1

    def _enqueue(self, update: Update) -> None:
        boost = SELF_BOOST if update.id == self.self_id else 1
        self.queue.enqueue(update, update_size(update) + 1, boost=boost)

    def _piggyback(self, reserved: int = 0, first: Update | None = None) -> list[Update]:
        budget = self.packet_budget - _MESSAGE_OVERHEAD - reserved
        chosen: list[Update] = []
        if first is not None:
            budget -= update_size(first) + 1
            chosen.append(first)
        chosen.extend(self.queue.take(budget, self.reachable_count(),
                                      skip=(lambda u: u.id == first.id) if first is not None else None))
        return chosen

    def _set(self, member: Member, now: float) -> None:
        old = self.members.get(member.id)
        if old is None or old.state != member.state:
            member = attrs.evolve(member, since=now)
        else:
            member = attrs.evolve(member, since=old.since)
        self.members[member.id] = member
        self._reachable += int(member.reachable) - int(old is not None and old.reachable)
        if old is None and member.id != self.self_id:
            # a new member joins the probe rotation at a random place (SWIM, 4.3)
            self._probe_order.insert(self.rng.randint(0, len(self._probe_order)), member.id)
        self._changed()

    def _confirmations_wanted(self) -> int:
        """Lifeguard's k: SUSPICION_MULT - 2, but never more than the members that could confirm
        (all but the suspect and the accuser); in a 3-node cluster one confirmation is all there
        can be, and waiting for a second would hold every verdict at the long timeout."""
        return max(0, min(self.config.suspicion_mult - 2, self.reachable_count() - 2))

    def _suspicion_bounds(self) -> tuple[float, float]:
        n = max(1, self.reachable_count())
        node_scale = max(1.0, math.log10(n))
        low = self.config.suspicion_mult * node_scale * self.config.probe_interval
        return low, low * self.config.suspicion_max_mult

    # -- applying news -----------------------------------------------------------------
    def apply(self, update: Update, now: float) -> bool:
        """Apply one piece of news; re-gossip it if it changed anything. Returns whether it did."""
        if update.id == self.self_id:
            return self._about_me(update, now)
        current = self.members.get(update.id)
        state = MemberState(update.state) if update.state in MemberState._value2member_map_ else None
        if state is None:
            return False
        if current is None and state != MemberState.ALIVE:
            return False  # news of the death of someone we never knew: nothing to do
        if current is not None and state == MemberState.SUSPECT and current.state == MemberState.SUSPECT \
                and update.incarnation == current.incarnation:
            suspicion = self._suspicions.get(update.id)
            if suspicion is not None and suspicion.confirm(update.by):
                self._enqueue(update)  # spread the confirmation so others shorten their timers too
            return False
        if not supersedes(current, update):
            return False
        address = update.address or (current.address if current else "")
        api = update.api or (current.api if current else "")
        meta = update.meta if state == MemberState.ALIVE else (current.meta if current else {})
        self._set(Member(update.id, address, api, update.incarnation, state, meta), now)
        self.stats.updates_applied += 1
        self._suspicions.pop(update.id, None)
        if state == MemberState.SUSPECT:
            low, high = self._suspicion_bounds()
            self._suspicions[update.id] = Suspicion(update.incarnation, now, self._confirmations_wanted(),
                                                    low, high, origin=update.by)
        self._enqueue(attrs.evolve(update, address=address, api=api, meta=meta))
        return True

    def _about_me(self, update: Update, now: float) -> bool:
        me = self.me
        if self.leaving:
            return False
        if update.state == MemberState.ALIVE and update.incarnation <= me.incarnation:
            return False
        if update.state != MemberState.ALIVE and update.incarnation < me.incarnation:
            # an accusation I already refuted, yet someone still repeats it: my refutation has
            # not reached them. Send it again, fresh, so the ack to their probe carries it back.
            self._enqueue(me.as_update())
            return False
        # someone says I am suspect/dead/left (or knows a newer incarnation of me, from before a
        # restart): refute with a strictly higher incarnation. Being accused is also a hint that
        # my own network or loop is slow (Lifeguard).
        self.stats.refutations += 1
        if update.state != MemberState.ALIVE:
            self.awareness.apply(1)
        self._set(attrs.evolve(me, incarnation=update.incarnation + 1, state=MemberState.ALIVE), now)
        self._enqueue(self.me.as_update())
        return True

    def merge(self, updates: list[Update], now: float, *, joining_peer: bool = False) -> None:
        """Apply a peer's full state (push-pull). A peer joining through this node makes this
        node part of a cluster even if its own seeds never answered."""
        for update in updates:
            self.apply(update, now)
        if joining_peer:
            self._joined = True

    @property
    def joined(self) -> bool:
        return self._joined

    # -- inbound packets ---------------------------------------------------------------
    def handle(self, message: Any, source: str, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for update in getattr(message, "updates", ()):
            self.apply(update, now)
        if isinstance(message, SwimPing):
            if message.target == self.self_id:
                effects.append(Send(source, SwimAck(message.seq, self._piggyback())))
        elif isinstance(message, SwimAck):
            self._on_ack(message.seq, effects)
        elif isinstance(message, SwimPingReq):
            seq = self._next_seq()
            self._relays[seq] = _Relay(source, message.seq, now + self.awareness.scale(self.config.probe_timeout))
            self.stats.indirect_probes += 1
            effects.append(Send(message.address, SwimPing(seq, message.target, self._piggyback())))
        elif isinstance(message, SwimNack):
            if self._probe is not None and self._probe.seq == message.seq:
                self._probe.nacks += 1
        return effects

    def _on_ack(self, seq: int, effects: list[Effect]) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            effects.append(Send(relay.requester, SwimAck(relay.seq, self._piggyback())))
            return
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.acked = True
            self.awareness.apply(-1)

    # -- time --------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        self._expire_relays(now, effects)
        self._expire_suspicions(now)
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect and now >= probe.timeout_at:
            self._go_indirect(probe, effects)
        if not self.leaving and now >= self._next_probe:
            self._finish_probe(now)
            self._start_probe(now, effects)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip(now, effects)
        if now >= self._next_push_pull:
            self._next_push_pull = now + self.config.push_pull_interval * push_pull_scale(self.reachable_count())
            peers = [m for m in self.members.values() if m.alive and m.id != self.self_id]
            if peers:
                effects.append(StartPushPull(self.rng.choice(peers).address, join=False))
            # and one member we believe dead: after a long partition this is how the sides meet
            # again (gossip to the dead stops after gossip_to_dead), and a false death is undone
            dead = [m for m in self.members.values() if m.state == MemberState.DEAD]
            if dead:
                effects.append(StartPushPull(self.rng.choice(dead).address, join=False))
        if not self._joined and now >= self._next_join:
            self._next_join = now + self._join_delay
            self._join_delay = min(self._join_delay * 2, self.config.join_retry_max)
            seeds = self.rng.sample(self.seeds, min(self.config.join_fanout, len(self.seeds)))
            effects.extend(StartPushPull(seed, join=True) for seed in seeds)
        self._reap(now)
        return effects

    def push_pull_done(self, address: str, ok: bool, join: bool) -> None:
        """The actor reports how a push-pull it was asked to start went."""
        if ok and join:
            self._joined = True

    def _expire_relays(self, now: float, effects: list[Effect]) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                self.stats.nacks_sent += 1
                effects.append(Send(relay.requester, SwimNack(relay.seq, self._piggyback())))

    def _expire_suspicions(self, now: float) -> None:
        for member_id, suspicion in list(self._suspicions.items()):
            if now < suspicion.deadline:
                continue
            del self._suspicions[member_id]
            member = self.members.get(member_id)
            if member is not None and member.state == MemberState.SUSPECT \
                    and member.incarnation == suspicion.incarnation:
                self.stats.deaths_declared += 1
                self.apply(Update(member_id, int(MemberState.DEAD), member.incarnation, by=self.self_id), now)

    def _go_indirect(self, probe: _Probe, effects: list[Effect]) -> None:
        probe.indirect = True
        target = self.members.get(probe.target)
        if target is None:
            return
        helpers = [m for m in self.members.values()
                   if m.alive and m.id not in (self.self_id, probe.target)]
        for helper in self.rng.sample(helpers, min(self.config.indirect_checks, len(helpers))):
            probe.expected_nacks += 1
            effects.append(Send(helper.address, SwimPingReq(probe.seq, target.id, target.address,
                                                            self._piggyback())))

    def _finish_probe(self, now: float) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        self.stats.probes_failed += 1
        # no ack and nobody reported trying either: the trouble is probably here (Lifeguard)
        self.awareness.apply(max(1, probe.expected_nacks - probe.nacks) if probe.expected_nacks else 1)
        target = self.members.get(probe.target)
        if target is not None and target.reachable:
            # a new suspicion, or this node's independent confirmation of an existing one
            self.stats.suspicions += target.alive
            self.apply(Update(target.id, int(MemberState.SUSPECT), target.incarnation, by=self.self_id), now)

    def _next_target(self) -> Member | None:
        for _ in range(2 * len(self._probe_order) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [i for i in self._probe_order if i in self.members]
                self.rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = self.members.get(self._probe_order[self._probe_index])
            self._probe_index += 1
            if member is not None and member.reachable:
                return member
        return None

    def _start_probe(self, now: float, effects: list[Effect]) -> None:
        self._next_probe = now + self.awareness.scale(self.config.probe_interval)
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(target.id, seq, now + self.awareness.scale(self.config.probe_timeout),
                             self._next_probe)
        self.stats.probes += 1
        # buddy system: a suspected member learns of it from the probe itself and can refute at once
        buddy = None
        if target.state == MemberState.SUSPECT:
            buddy = Update(target.id, int(MemberState.SUSPECT), target.incarnation, by=self.self_id)
        effects.append(Send(target.address, SwimPing(seq, target.id, self._piggyback(first=buddy))))

    def _gossip(self, now: float, effects: list[Effect]) -> None:
        if not len(self.queue):
            return
        targets = [m for m in self.members.values() if m.id != self.self_id and (
            m.reachable or (m.state == MemberState.DEAD and now - m.since < self.config.gossip_to_dead))]
        for member in self.rng.sample(targets, min(self.config.gossip_nodes, len(targets))):
            updates = self._piggyback()
            if not updates:
                return
            effects.append(Send(member.address, SwimGossip(updates)))

    def _reap(self, now: float) -> None:
        if now < self._next_reap:
            return
        self._next_reap = now + 1.0
        for member in list(self.members.values()):
            if member.state in (MemberState.DEAD, MemberState.LEFT) \
                    and now - member.since > self.config.dead_retention:
                del self.members[member.id]  # gone members are not reachable: the count stays
                self._changed()

    # -- this node's own changes -------------------------------------------------------
    def set_meta(self, meta: dict[str, Any], now: float) -> None:
        """New metadata (maintenance flag, roles): announced with a new incarnation."""
        me = self.me
        self._set(attrs.evolve(me, meta=dict(meta), incarnation=me.incarnation + 1), now)
        self._enqueue(self.me.as_update())

    def leave(self, now: float) -> list[Effect]:
        """Graceful leave: announce Left to as many members as a packet reaches right now."""
        me = self.me
        self._set(attrs.evolve(me, state=MemberState.LEFT, incarnation=me.incarnation + 1), now)
        self.leaving = True
        left = self.me.as_update()
        self._enqueue(left)
        peers = [m for m in self.members.values() if m.reachable and m.id != self.self_id]
        fanout = len(peers) if len(peers) <= 16 else max(self.config.gossip_nodes * 2, 8)
        return [Send(m.address, SwimGossip([left])) for m in self.rng.sample(peers, fanout)]

