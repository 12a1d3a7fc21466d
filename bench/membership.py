"""Membership benchmark: how SWIM + Lifeguard scales, in simulation and on real processes.

Usage: ``.venv/bin/python bench/membership.py [--quick] [--loss P] [--skip-sim] [--skip-real]``

Part 1, scaling (n = 10, 100, 1000). ``SwimCore`` instances are driven directly by a small
discrete-event simulator (no Trio, no actors): a heap of (time, event); every packet arrives
after a fixed one-way latency (0.5 ms, a LAN) unless the network drops it (``--loss``); each
core is ticked at its ``next_deadline()``; a push-pull is served after one round trip by
exchanging ``local_state()`` / ``merge()`` between the two cores, then ``push_pull_done``.
Every core uses the default ``SwimConfig`` and its own seeded ``random.Random``; the network
has its own. All n cores start in steady state: every core's state is merged into every other
(what a join's push-pull does), then the broadcast queues are emptied, as they would be once
the join news has been gossiped out. Cores start at random moments within the first push-pull
interval (so their timers are out of phase); after that interval plus one second, each run
measures, in this order:

- load: packets and bytes (``wire.encode_frame``) each member sends per second over one
  push-pull interval of quiet cluster life; push-pull stream bytes are counted apart;
- dissemination: one member calls ``set_meta``; time until every member knows its new incarnation;
- failure detection: one member stops (no more ticks, packets to it are lost, push-pulls to
  it fail); time until the first member and until every member marks it Dead.

Part 2, real processes: 5 ``python -m dakera_actors`` nodes on 127.0.0.1 (UDP + TCP), one is
killed with SIGKILL, the survivors' ``GET /admin/cluster/nodes`` is polled every 50 ms.

Figures only: nothing here passes or fails. Next to the simulation the script prints what
the SWIM paper (Das, Gupta, Motivala, DSN 2002) and memberlist's formulas predict for the
same parameters, so the two can be compared.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import itertools
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
from common import free_port, print_table  # noqa: E402

from dakera_actors.membership.core import Send, SwimConfig, SwimCore
from dakera_actors.membership.member import MemberState
from dakera_actors.membership.messages import SwimPushPull
from dakera_actors.membership.queue import BroadcastQueue
from dakera_actors.wire import encode_frame

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.0005  # one-way packet latency, seconds (LAN)
SETTLE_MAX = 10.0  # after dissemination, wait (at most this) for every broadcast queue to drain
DISSEMINATION_MAX = 60.0
DETECTION_MAX = 120.0
INCARNATION_BASE = 1_764_000_000_000  # wall-clock milliseconds, as a real node starts with

_PACKET, _TICK, _PUSH_PULL = 0, 1, 2


# -- part 1: discrete-event simulation of SwimCore ---------------------------------------

@attrs.define(eq=False)
class SimNode:
    core: SwimCore
    address: str
    alive: bool = True
    timer: float = math.inf  # the tick currently scheduled for this node
    packets: int = 0  # sent while the load window is open
    bytes: int = 0
    stream_bytes: int = 0


@attrs.define
class Watch:
    """Members still waiting for a condition, and when each one met it."""

    condition: Callable[[SwimCore], bool]
    pending: set[str]
    started: float
    times: list[float] = attrs.Factory(list)


class Simulation:
    def __init__(self, n: int, seed: int, config: SwimConfig, *, latency: float, loss: float) -> None:
        self.config = config
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.rng = random.Random(f"bench:{seed}:{n}")  # the network and the experiment's choices
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.counting = False
        self.watches: list[Watch] = []
        self.nodes: list[SimNode] = []
        # cores start at random moments over one push-pull interval, as real nodes would: their
        # gossip and push-pull timers are out of phase (started together they tick in lockstep)
        starts = [self.rng.uniform(0, config.push_pull_interval) for _ in range(n)]
        for i, start in enumerate(starts, 1):
            host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
            core = SwimCore(config, self_id=f"node-{i}", address=f"{host}:7946", api=f"http://{host}:3300",
                            meta={"maintenance": False}, incarnation=INCARNATION_BASE + i, seeds=[],
                            rng=random.Random(f"core:{seed}:{n}:{i}"), now=start)
            self.nodes.append(SimNode(core, f"{host}:7946"))
        self.by_address = {node.address: node for node in self.nodes}
        everyone = [node.core.me.as_update() for node in self.nodes]
        for node, start in zip(self.nodes, starts, strict=True):
            node.core.merge(everyone, start)
            # steady state: the join news has long been gossiped out (and would cost n^2 packets)
            node.core.queue = BroadcastQueue(config.retransmit_mult)
            self._arm(node)

    # -- the event loop ------------------------------------------------------------------
    def _push(self, when: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, payload))

    def _arm(self, node: SimNode) -> None:
        deadline = max(node.core.next_deadline(), self.now)
        if deadline != node.timer:
            node.timer = deadline
            self._push(deadline, _TICK, node)

    def _after(self, node: SimNode, effects: list[Any]) -> None:
        """Carry out ``node``'s effects, re-arm its timer and check the watched condition."""
        for effect in effects:
            if isinstance(effect, Send):
                if self.counting:
                    node.packets += 1
                    node.bytes += len(encode_frame(effect.message, node.core.self_id))
                if self.loss and self.rng.random() < self.loss:
                    continue
                self._push(self.now + self.latency, _PACKET, (effect.address, effect.message, node.address))
            else:  # StartPushPull: a stream, answered after one round trip
                self._push(self.now + 2 * self.latency, _PUSH_PULL, (node, effect.address, effect.join))
        self._arm(node)
        for watch in self.watches:
            if node.core.self_id in watch.pending and watch.condition(node.core):
                watch.pending.discard(node.core.self_id)
                watch.times.append(self.now - watch.started)

    def _push_pull(self, node: SimNode, address: str, join: bool) -> None:
        peer = self.by_address.get(address)
        if peer is None or not peer.alive:
            node.core.push_pull_done(address, False, join)
            self._after(node, [])
            return
        mine, theirs = node.core.local_state(), peer.core.local_state()
        if self.counting:
            node.stream_bytes += len(encode_frame(SwimPushPull(mine, join), node.core.self_id))
            peer.stream_bytes += len(encode_frame(SwimPushPull(theirs), peer.core.self_id))
        peer.core.merge(mine, self.now)
        node.core.merge(theirs, self.now)
        node.core.push_pull_done(address, True, join)
        self._after(peer, [])
        self._after(node, [])

    def run_until(self, end: float, done: Callable[[], bool] | None = None) -> bool:
        """Process events up to ``end``; stop early (True) once ``done()`` holds."""
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, kind, payload = heapq.heappop(heap)
            self.now = when
            if kind == _TICK:
                node = payload
                if not node.alive or node.timer != when:
                    continue  # stale: the node re-armed since, or is dead
                node.timer = math.inf
                self._after(node, node.core.tick(when))
            elif kind == _PACKET:
                address, message, source = payload
                node = self.by_address[address]
                if node.alive:
                    self._after(node, node.core.handle(message, source, when))
            else:
                node, address, join = payload
                if node.alive:
                    self._push_pull(node, address, join)
            if done is not None and done():
                return True
        self.now = max(self.now, end)
        return done is not None and done()

    # -- experiments ---------------------------------------------------------------------
    def live(self) -> list[SimNode]:
        return [node for node in self.nodes if node.alive]

    def queues_empty(self) -> bool:
        return all(len(node.core.queue) == 0 for node in self.live())

    def measure_load(self, window: float) -> tuple[float, float, float]:
        """Per member per second over ``window``: packets sent, packet bytes, push-pull bytes."""
        start = self.now
        self.counting = True
        self.run_until(start + window)
        self.counting = False
        members = len(self.live())
        return (sum(n.packets for n in self.nodes) / members / window,
                sum(n.bytes for n in self.nodes) / members / window,
                sum(n.stream_bytes for n in self.nodes) / members / window)

    def measure_dissemination(self) -> float | None:
        """``set_meta`` on one member; seconds until every other member has its new incarnation."""
        source = self.rng.choice(self.live())
        source.core.set_meta({"maintenance": False, "rack": "r2"}, self.now)
        target = source.core.incarnation
        source_id = source.core.self_id
        watch = Watch(lambda core: core.members[source_id].incarnation >= target,
                      {n.core.self_id for n in self.live()} - {source_id}, self.now)
        self.watches = [watch]
        self._after(source, [])
        self.run_until(self.now + DISSEMINATION_MAX, lambda: not watch.pending)
        self.watches = []
        return max(watch.times) if not watch.pending else None

    def settle(self) -> None:
        end = self.now + SETTLE_MAX
        while self.now < end and not self.queues_empty():
            self.run_until(self.now + 0.5)

    def measure_detection(self) -> tuple[float | None, float | None, float | None]:
        """Kill one member; seconds until the first survivor suspects it, until the first marks
        it Dead, and until every survivor does."""
        victim = self.rng.choice(self.live())
        victim.alive = False
        victim_id = victim.core.self_id
        survivors = {n.core.self_id for n in self.live()}
        suspect = Watch(lambda core: core.members[victim_id].state != MemberState.ALIVE, set(survivors), self.now)
        dead = Watch(lambda core: core.members[victim_id].state == MemberState.DEAD, set(survivors), self.now)
        self.watches = [suspect, dead]
        self.run_until(self.now + DETECTION_MAX, lambda: not dead.pending)
        self.watches = []
        return (min(suspect.times) if suspect.times else None, min(dead.times) if dead.times else None,
                max(dead.times) if not dead.pending else None)


@attrs.define
class SimResult:
    n: int
    runs: int = 0
    first_suspect: list[float] = attrs.Factory(list)
    first_dead: list[float] = attrs.Factory(list)
    all_dead: list[float] = attrs.Factory(list)
    dissemination: list[float] = attrs.Factory(list)
    packets: list[float] = attrs.Factory(list)
    bytes: list[float] = attrs.Factory(list)
    stream_bytes: list[float] = attrs.Factory(list)
    false_suspicions: int = 0
    failures: int = 0  # runs where a bound was hit before the condition held
    setup_s: float = 0.0
    wall_s: float = 0.0


def simulate(n: int, runs: int, config: SwimConfig, *, loss: float, base_seed: int) -> SimResult:
    result = SimResult(n)
    started = time.perf_counter()
    for run in range(runs):
        t0 = time.perf_counter()
        sim = Simulation(n, base_seed + run, config, latency=LATENCY, loss=loss)
        result.setup_s += time.perf_counter() - t0
        sim.run_until(config.push_pull_interval + 1.0)  # every core has started and probes
        packets, sent, stream = sim.measure_load(config.push_pull_interval)  # one push-pull each
        result.packets.append(packets)
        result.bytes.append(sent)
        result.stream_bytes.append(stream)
        result.false_suspicions += sum(node.core.stats.suspicions for node in sim.nodes)
        spread = sim.measure_dissemination()
        sim.settle()
        suspected, first, every = sim.measure_detection()
        if suspected is not None:
            result.first_suspect.append(suspected)
        if spread is not None:
            result.dissemination.append(spread)
        if first is not None:
            result.first_dead.append(first)
        if every is not None:
            result.all_dead.append(every)
        result.failures += (spread is None) + (every is None)
        result.runs += 1
        print(f"  n={n} run {run + 1}/{runs}: first Suspect {_s(suspected)}, first Dead {_s(first)}, all Dead {_s(every)}, "
              f"dissemination {_s(spread)}, {packets:.2f} pkt/s/member "
              f"({time.perf_counter() - t0:.1f} s wall)", flush=True)
    result.wall_s = time.perf_counter() - started
    return result


# -- expectations from the literature ----------------------------------------------------

def suspicion_bounds(config: SwimConfig, n: int) -> tuple[float, float]:
    """memberlist's suspicionTimeout (util.go) and Lifeguard's upper bound, in seconds."""
    low = config.suspicion_mult * max(1.0, math.log10(max(1, n))) * config.probe_interval
    return low, low * config.suspicion_max_mult


def retransmit_limit(config: SwimConfig, n: int) -> int:
    """memberlist's retransmitLimit (util.go): retransmit_mult * ceil(log10(n + 1))."""
    return config.retransmit_mult * math.ceil(math.log10(n + 1))


def expectations(config: SwimConfig, n: int) -> dict[str, float]:
    period = config.probe_interval
    # SWIM 3.1: e/(e-1) periods to the first detection, counted from the first period boundary
    # after the crash, which is half a period away on average when members are out of phase
    first_probe = (math.e / (math.e - 1) + 0.5) * period
    low, high = suspicion_bounds(config, n)
    fanout = config.gossip_nodes
    # push epidemic with fanout f (Pittel 1987 for f = 1): log_{1+f}(n) + ln(n)/f rounds
    rounds = math.log(n) / math.log(1 + fanout) + math.log(n) / fanout
    return {
        "first_suspect": first_probe,
        "suspicion_min": low,
        "suspicion_max": high,
        "first_dead": first_probe + low,
        "retransmits": retransmit_limit(config, n),
        "memberlist_rounds_s": config.retransmit_mult * math.log10(n + 1) * config.gossip_interval,
        "epidemic_s": rounds * config.gossip_interval,
        "swim_packets": 2 / period,  # a ping and (on average) one ack sent per protocol period
    }


# -- part 2: real processes on loopback ---------------------------------------------------

@attrs.define
class RealNode:
    id: str
    http: str
    gossip: str
    process: subprocess.Popen[bytes]
    log: Path


def start_cluster(n: int, root: Path) -> list[RealNode]:
    gossip_ports: list[int] = []
    http_ports: list[int] = []
    while len(gossip_ports) < n:
        port = free_port()
        if port not in gossip_ports:
            gossip_ports.append(port)
    while len(http_ports) < n:
        port = free_port()
        if port not in gossip_ports and port not in http_ports:
            http_ports.append(port)
    gossip = [f"127.0.0.1:{p}" for p in gossip_ports]
    nodes: list[RealNode] = []
    key = base64.b64encode(os.urandom(32)).decode()  # one per cluster: cluster mode requires a key
    try:
        for i in range(1, n + 1):
            env = dict(os.environ)
            env.update({
                "DAKERA_CLUSTER_MODE": "true",
                "DAKERA_GOSSIP_KEY": key,
                "DAKERA_NODE_ID": f"node-{i}",
                "DAKERA_HOST": "127.0.0.1",
                "DAKERA_PORT": str(http_ports[i - 1]),
                "DAKERA_GOSSIP_PORT": str(gossip_ports[i - 1]),
                "DAKERA_GOSSIP_BIND": gossip[i - 1],
                "DAKERA_CLUSTER_SEEDS": ",".join(a for a in gossip[:3] if a != gossip[i - 1]),
                "DAKERA_DATA_DIR": str(root / f"node-{i}"),
                "DAKERA_LOG_LEVEL": "warning",
            })
            log = root / f"node-{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                                           stdout=out, stderr=subprocess.STDOUT)
            nodes.append(RealNode(f"node-{i}", f"http://127.0.0.1:{http_ports[i - 1]}", gossip[i - 1],
                                  process, log))
    except BaseException:
        stop_cluster(nodes, kill=True)
        raise
    return nodes


def stop_cluster(nodes: list[RealNode], *, kill: bool) -> None:
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    for node in nodes:
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)


def states(client: httpx.Client, node: RealNode) -> dict[str, str] | None:
    try:
        response = client.get(f"{node.http}/admin/cluster/nodes")
        if response.status_code != 200:
            return None
        return {m["id"]: m["state"] for m in response.json()}
    except httpx.HTTPError:
        return None


def real_run(n: int, victim_index: int, *, converge_max: float = 60.0,
             detect_max: float = 60.0, poll: float = 0.05) -> tuple[float, float, float]:
    """Start ``n`` processes, wait for a full Alive view, SIGKILL one; (converge, first, all) seconds."""
    with tempfile.TemporaryDirectory(prefix="dakera-bench-membership-") as tmp:
        nodes = start_cluster(n, Path(tmp))
        clean = False
        try:
            with httpx.Client(timeout=1.0) as client:
                started = time.monotonic()
                while True:
                    views = [states(client, node) for node in nodes]
                    if all(v is not None and len(v) == n and set(v.values()) == {"Alive"} for v in views):
                        break
                    dead = [node.id for node in nodes if node.process.poll() is not None]
                    if dead:
                        raise RuntimeError(f"{dead} exited during startup")
                    if time.monotonic() - started > converge_max:
                        raise RuntimeError(f"no full Alive view after {converge_max:.0f} s: {views}")
                    time.sleep(poll)
                converge = time.monotonic() - started
                victim = nodes[victim_index]
                victim.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                survivors = [node for node in nodes if node is not victim]
                seen: dict[str, float] = {}
                while len(seen) < len(survivors):
                    if time.monotonic() - killed > detect_max:
                        raise RuntimeError(f"{victim.id} not Dead everywhere after {detect_max:.0f} s: {seen}")
                    for node in survivors:
                        if node.id not in seen:
                            view = states(client, node)
                            if view is not None and view.get(victim.id) == "Dead":
                                seen[node.id] = time.monotonic() - killed
                    time.sleep(poll)
            clean = True
            return converge, min(seen.values()), max(seen.values())
        except BaseException:
            for node in nodes:
                if node.process.poll() not in (None, -signal.SIGKILL):
                    tail = node.log.read_text(errors="replace")[-2000:]
                    print(f"--- {node.id} log tail ---\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_cluster(nodes, kill=not clean)


# -- output --------------------------------------------------------------------------------

def _s(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.2f}"


def p50_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss rate in the simulation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-n", type=int, default=0, help="simulate only sizes up to this (0: all)")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    config = SwimConfig()
    runs = {10: 2, 100: 2, 1000: 1} if args.quick else {10: 5, 100: 5, 1000: 3}
    if args.max_n:
        runs = {n: r for n, r in runs.items() if n <= args.max_n}
    real_reps = 1 if args.quick else 3
    began = time.perf_counter()
    print(f"SwimConfig (defaults): probe_interval={config.probe_interval}s probe_timeout={config.probe_timeout}s "
          f"indirect_checks={config.indirect_checks} suspicion_mult={config.suspicion_mult} "
          f"suspicion_max_mult={config.suspicion_max_mult} retransmit_mult={config.retransmit_mult} "
          f"gossip_interval={config.gossip_interval}s gossip_nodes={config.gossip_nodes} "
          f"push_pull_interval={config.push_pull_interval}s")

    if not args.skip_sim:
        print(f"\n== 1. Simulation: SwimCore x n, discrete events, one-way latency {LATENCY * 1000:.1f} ms, "
              f"loss {args.loss:.1%} ==")
        print("start: every core merged into every other (full view), broadcast queues emptied, cores\n"
              f"started at random times over {config.push_pull_interval:.0f} s; measured after "
              f"{config.push_pull_interval + 1:.0f} s: load over one push-pull interval "
              f"({config.push_pull_interval:.0f} s simulated), then dissemination, then detection")
        results = [simulate(n, r, config, loss=args.loss, base_seed=args.seed) for n, r in runs.items()]
        print("\nmeasured (p50 / max over runs; times in simulated seconds)")
        print_table(
            ["n", "runs", "first Suspect (s)", "first Dead (s)", "all Dead (s)", "dissemination (s)", "pkt/s/member",
             "B/s/member", "push-pull B/s/member", "suspicions", "wall (s)"],
            [[str(r.n), str(r.runs), p50_max(r.first_suspect), p50_max(r.first_dead), p50_max(r.all_dead), p50_max(r.dissemination),
              f"{statistics.median(r.packets):.2f}", f"{statistics.median(r.bytes):.0f}",
              f"{statistics.median(r.stream_bytes):.0f}", str(r.false_suspicions), f"{r.wall_s:.0f}"]
             for r in results])
        print("  suspicions = suspicions raised before the first change (warm-up + load window, all runs):\n"
              "    false alarms, 0 expected without loss")
        if any(r.failures for r in results):
            print("  bounds hit: " + ", ".join(f"n={r.n}: {r.failures}" for r in results if r.failures))

        print("\nexpected for the same parameters")
        rows = []
        for r in results:
            e = expectations(config, r.n)
            rows.append([str(r.n), f"{e['first_suspect']:.2f}",
                         f"{e['suspicion_min']:.1f} / {e['suspicion_max']:.1f}", f"{e['first_dead']:.2f}",
                         str(int(e["retransmits"])), f"{e['memberlist_rounds_s']:.2f}",
                         f"{e['epidemic_s']:.2f}", f"{e['swim_packets']:.1f}"])
        print_table(["n", "SWIM first suspect (s)", "suspicion min / max (s)", "expected first Dead (s)",
                     "retransmits", "memberlist rounds (s)", "epidemic est. (s)", "SWIM pkt/s/member"], rows)
        print("  SWIM first suspect = e/(e-1) protocol periods (SWIM 3.1: expected time until some member's\n"
              "    probe of the failed one fails) + half a period from the crash to the next period boundary;\n"
              "    expected first Dead = that + the suspicion timeout at its minimum (means, not bounds)\n"
              "  suspicion min / max = memberlist suspicionTimeout: suspicion_mult * max(1, log10 n) *\n"
              "    probe_interval; Lifeguard starts at suspicion_max_mult times that and shrinks to the\n"
              f"    minimum after {max(0, config.suspicion_mult - 2)} independent confirmations\n"
              "  retransmits = memberlist retransmitLimit: retransmit_mult * ceil(log10(n+1)) sends per update;\n"
              "    memberlist rounds = retransmit_mult * log10(n+1) gossip intervals (how long news is pushed)\n"
              "  epidemic est. = push gossip, fanout gossip_nodes per gossip_interval:\n"
              "    log_(1+f)(n) + ln(n)/f rounds (Pittel 1987 for f=1), an O(log n) infection time\n"
              "  SWIM pkt/s/member = one ping + one ack per protocol period, independent of n\n"
              "    (memberlist scales push-pull with n: interval * (ceil(log2 n - log2 32) + 1) above 32)")

    if not args.skip_real:
        print(f"\n== 2. Real processes: 5 x python -m dakera_actors on 127.0.0.1 (UDP+TCP), SIGKILL one, "
              f"{real_reps} repetition(s) ==")
        converge: list[float] = []
        first: list[float] = []
        every: list[float] = []
        victims = [4, 2, 3]  # node-5, node-3, node-4: never node-1
        for rep in range(real_reps):
            c, f, a = real_run(5, victims[rep % len(victims)])
            converge.append(c)
            first.append(f)
            every.append(a)
            print(f"  rep {rep + 1}: killed node-{victims[rep % len(victims)] + 1}: full view after {c:.2f} s "
                  f"(from spawn), first Dead {f:.2f} s, all 4 Dead {a:.2f} s", flush=True)
        low, high = suspicion_bounds(config, 5)
        print()
        print_table(["nodes", "reps", "full view from spawn (s)", "first Dead (s)", "all 4 Dead (s)",
                     "expected first Dead (s)"],
                    [["5", str(real_reps), p50_max(converge), p50_max(first), p50_max(every),
                      f"{expectations(config, 5)['first_dead']:.2f}"]])
        print(f"  p50 / max; wall-clock seconds measured by polling every 50 ms (+ request time);\n"
              f"  suspicion timeout for n=5: {low:.1f} s after enough confirmations, {high:.1f} s without")
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
