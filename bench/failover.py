"""Leader failover benchmark: how long the cluster is without a leader after the leader dies.

Usage: ``.venv/bin/python bench/failover.py [--quick] [--runs N] [--reps N] [--skip-sim] [--skip-real]
[--deaf [--deaf-reps N]]`` (from the repo root).

Part 1, simulation. ``LeaseSim`` (tests/lease/sim.py: pure ``LeaseCore`` instances, a heap of
events, drifting clocks, an invariant checker after every event) with the default ``LeaseConfig``
timings (``bootstrap_expect = n``, as the simulator sets it), one-way latency uniform in
0.2-2 ms (a LAN), clock rates within 100 ppm, and 0 % or 5 % loss on every message. Per seeded
run: wait for the first leader, let it hold (1 s settling, then a 3 s window in which every
message the cores send is counted), then wait a uniformly random part of one renewal period so
the crash falls anywhere in the renewal cycle, crash the leader, and measure in true simulated
time until another node holds a valid lease (``is_leader``), and until every survivor names it
(``current_leader``). n = 3 and n = 5.

Part 2, real processes. 3 ``python -m dakera_actors`` nodes on 127.0.0.1 (UDP + TCP gossip,
each seeded with the other two), wait until all three name the same leader in
``GET /admin/cluster/status``, SIGKILL it, poll both survivors every 20 ms until they name the
same new leader with a higher ``fencing_token``. Fresh processes and data dirs per repetition.

Part 3, a deaf leader (``--deaf``, needs root, ``ip`` and ``tc``). 5 ``python -m dakera_actors``
nodes, each in its own network namespace, joined by veth pairs to a bridge that lives in a sixth
namespace (where this script polls from): every address is inside a namespace the script created,
and every namespace (with the processes in it) is removed when it ends, error or not. Once all
five name one leader, a ``blackhole`` qdisc on the leader's bridge port drops every frame sent to
it (it can still send, with permanent neighbour entries: issue 13 item 7) for 20 s; the other four are polled every 50 ms
for the time until they name another leader and for the tokens; then the filter is removed and
the five are polled for 10 s more: does leadership move back?

Figures only: nothing here passes or fails. Beside them the script prints the issue's target,
the seed document's figure and the analytical bound for the configured timings.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import free_port, print_table  # noqa: E402

from dakera_actors.lease.core import LeaseConfig  # noqa: E402
from dakera_actors.wire import encode_frame, tag_of  # noqa: E402
from tests.lease.sim import LeaseSim  # noqa: E402

LATENCY = (0.0002, 0.002)  # one-way, seconds: a LAN
DRIFT = 1e-4  # clock rates within 100 ppm of true time
SETTLE = 1.0  # after the first election, before the counting window
WINDOW = 3.0  # steady state: messages counted over this much simulated time
ELECT_MAX = 30.0
FAILOVER_MAX = 30.0
TARGET_S = 2.0  # the issue: a new leader in under 2 s after the old one dies
SEED_DOC_S = 5.0  # the seed document: "~5 seconds"


# -- part 1: LeaseSim ----------------------------------------------------------------------

class CountingSim(LeaseSim):
    """``LeaseSim`` that counts every message a core sends (before the network drops any) and
    records when every live node first names the leader being watched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.counting = False
        self.sent: Counter[str] = Counter()  # by sender
        self.kinds: Counter[str] = Counter()  # by message tag
        self.sent_bytes = 0
        self.watch: str | None = None  # a leader: when does every live node name it?
        self.all_know_at: float | None = None
        super().__init__(*args, **kwargs)

    def _deliver(self, src: str, dst: str, message: Any) -> None:
        if self.counting:
            self.sent[src] += 1
            self.kinds[tag_of(message)] += 1
            self.sent_bytes += len(encode_frame(message, src))
        super()._deliver(src, dst, message)

    def check(self) -> None:
        super().check()
        if self.watch is not None and self.all_know_at is None:
            live = [n for n in self.nodes.values() if n.core is not None]
            if all(n.core is not None and n.core.current_leader(n.local(self.now)) == self.watch for n in live):
                self.all_know_at = self.now


def wait_leader(sim: LeaseSim, limit: float) -> str | None:
    end = sim.now + limit
    while sim.now < end:
        leader = sim.leader()
        if leader is not None:
            return leader
        sim.run_until(sim.now + 0.01)
    return sim.leader()


@attrs.define
class SimResult:
    n: int
    loss: float
    runs: int = 0
    first_election: list[float] = attrs.Factory(list)
    failover: list[float] = attrs.Factory(list)  # crash -> another node holds a valid lease
    all_know: list[float] = attrs.Factory(list)  # crash -> every survivor names it
    phase: list[float] = attrs.Factory(list)  # crash time since the leader's last renewal ask, in periods
    campaigns: list[int] = attrs.Factory(list)  # campaigns the survivors started until one won
    leader_msgs: list[float] = attrs.Factory(list)  # per second, steady state
    follower_msgs: list[float] = attrs.Factory(list)  # per follower per second
    total_msgs: list[float] = attrs.Factory(list)
    total_bytes: list[float] = attrs.Factory(list)
    kinds: Counter[str] = attrs.Factory(Counter)
    window_s: float = 0.0
    changes_in_window: int = 0  # new (leader, token) pairs while nobody was crashed
    no_leader: int = 0  # runs where no leader existed when the crash was due (waited for one)
    failures: int = 0  # a bound hit
    wall_s: float = 0.0


def sim_run(result: SimResult, seed: int, config: LeaseConfig) -> None:
    n, loss = result.n, result.loss
    rng = random.Random(f"failover:{seed}:{n}:{loss}")
    sim = CountingSim(n, seed=seed, config=config, drift=DRIFT, latency=LATENCY, loss=loss)
    if wait_leader(sim, ELECT_MAX) is None:
        result.failures += 1
        return
    result.first_election.append(sim.leaders[0][0])
    sim.run_until(sim.now + SETTLE)
    before = len(sim.leaders)
    sim.counting = True
    sim.run_until(sim.now + WINDOW)
    sim.counting = False
    result.changes_in_window += len(sim.leaders) - before
    leader = sim.leader()
    total = sum(sim.sent.values())
    if leader is not None:
        result.leader_msgs.append(sim.sent[leader] / WINDOW)
        result.follower_msgs.append((total - sim.sent[leader]) / (n - 1) / WINDOW)
    result.total_msgs.append(total / WINDOW)
    result.total_bytes.append(sim.sent_bytes / WINDOW)
    result.kinds.update(sim.kinds)
    result.window_s += WINDOW
    # crash at a uniformly random moment of the renewal cycle
    period = config.ttl * config.renew_fraction
    sim.run_until(sim.now + rng.uniform(0, period))
    leader = sim.leader()
    if leader is None:
        result.no_leader += 1
        leader = wait_leader(sim, ELECT_MAX)
        if leader is None:
            result.failures += 1
            return
    node = sim.nodes[leader]
    assert node.core is not None
    # the core schedules its next renewal one period after the last ask (local clock)
    since_ask = period - (node.core._next_renew - node.local(sim.now))
    result.phase.append(min(max(since_ask / period, 0.0), 0.999))
    old_token = node.core.leader_token
    known = len(sim.leaders)
    survivors = [n.core for n in sim.nodes.values() if n.core is not None and n.id != leader]
    campaigns_before = sum(core.stats.campaigns for core in survivors)
    sim.crash(leader)
    crashed_at = sim.now
    end = crashed_at + FAILOVER_MAX
    while len(sim.leaders) == known and sim.now < end:
        sim.run_until(sim.now + 0.01)
    if len(sim.leaders) == known:
        result.failures += 1
        result.phase.pop()
        return
    elected_at, new, token = sim.leaders[known]
    assert new != leader and token > old_token
    result.failover.append(elected_at - crashed_at)
    result.campaigns.append(sum(core.stats.campaigns for core in survivors) - campaigns_before)
    sim.watch = new
    sim.check()
    while sim.all_know_at is None and sim.now < end:
        sim.run_until(sim.now + 0.01)
    if sim.all_know_at is not None:
        result.all_know.append(sim.all_know_at - crashed_at)
    result.runs += 1


def simulate(n: int, loss: float, runs: int, config: LeaseConfig, base_seed: int) -> SimResult:
    result = SimResult(n, loss)
    started = time.perf_counter()
    for run in range(runs):
        sim_run(result, base_seed + run, config)
    result.wall_s = time.perf_counter() - started
    print(f"  n={n} loss={loss:.0%}: {result.runs} runs, failover p50 {_pct(result.failover, 50)} s, "
          f"max {_max(result.failover)} s ({result.wall_s:.1f} s wall)", flush=True)
    return result


def analytical(config: LeaseConfig, rtt: float) -> dict[str, float]:
    period = config.ttl * config.renew_fraction
    promise = config.ttl + config.drift_margin
    return {
        "promise": promise,
        "period": period,
        "backoff": config.backoff[1],
        "rtt": rtt,
        "bound": promise + period + config.backoff[1] + rtt,
        # the last renewal reached the voters up to one period before the crash
        "floor": promise - period,
        # a failed attempt (split vote, lost message) costs request_timeout + backoff more
        "retry": config.request_timeout + config.backoff[1],
    }


# -- part 2: real processes on loopback ---------------------------------------------------

@attrs.define
class RealNode:
    id: str
    http: str
    process: subprocess.Popen[bytes]
    log: Path


def start_cluster(n: int, root: Path) -> list[RealNode]:
    ports: list[int] = []
    while len(ports) < 2 * n:  # gossip ports first (free for UDP and TCP), then HTTP ports
        port = free_port()
        if port not in ports:
            ports.append(port)
    gossip, http_ports = [f"127.0.0.1:{p}" for p in ports[:n]], ports[n:]
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAKERA_")}
    nodes: list[RealNode] = []
    key = base64.b64encode(os.urandom(32)).decode()  # one per cluster: cluster mode requires a key
    try:
        for i in range(n):
            env = dict(base)
            env.update({
                "DAKERA_CLUSTER_MODE": "true",
                "DAKERA_GOSSIP_KEY": key,
                "DAKERA_NODE_ID": f"node-{i + 1}",
                "DAKERA_HOST": "127.0.0.1",
                "DAKERA_PORT": str(http_ports[i]),
                "DAKERA_GOSSIP_PORT": str(ports[i]),
                "DAKERA_GOSSIP_BIND": gossip[i],
                "DAKERA_CLUSTER_SEEDS": ",".join(a for a in gossip if a != gossip[i]),
                "DAKERA_DATA_DIR": str(root / f"node-{i + 1}"),
                "DAKERA_LOG_LEVEL": "warning",
            })
            log = root / f"node-{i + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                                           stdout=out, stderr=subprocess.STDOUT)
            nodes.append(RealNode(f"node-{i + 1}", f"http://127.0.0.1:{http_ports[i]}", process, log))
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def stop_cluster(nodes: list[RealNode]) -> None:
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
    for node in nodes:
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)


def leader_of(client: httpx.Client, node: RealNode) -> tuple[str | None, int] | None:
    try:
        response = client.get(f"{node.http}/admin/cluster/status")
        if response.status_code != 200:
            return None
        body = response.json()
        return body.get("leader"), int(body.get("fencing_token") or 0)
    except (httpx.HTTPError, ValueError):
        return None


@attrs.frozen
class RealRun:
    elected: float  # spawn -> all three name one leader
    first: float  # kill -> the first survivor names a new leader with a higher token
    both: float  # kill -> both survivors name the same one
    old: str
    new: str
    tokens: tuple[int, int]


def real_run(*, elect_max: float = 60.0, failover_max: float = 30.0, poll: float = 0.02) -> RealRun:
    with tempfile.TemporaryDirectory(prefix="dakera-bench-failover-") as tmp:
        nodes = start_cluster(3, Path(tmp))
        try:
            with httpx.Client(timeout=1.0) as client:
                started = time.monotonic()
                while True:
                    views = [leader_of(client, node) for node in nodes]
                    if all(v is not None and v[0] is not None for v in views) and len(set(views)) == 1:
                        break
                    exited = [node.id for node in nodes if node.process.poll() is not None]
                    if exited:
                        raise RuntimeError(f"{exited} exited during startup")
                    if time.monotonic() - started > elect_max:
                        raise RuntimeError(f"no agreed leader after {elect_max:.0f} s: {views}")
                    time.sleep(poll)
                elected = time.monotonic() - started
                old, old_token = views[0]  # type: ignore[misc]
                victim = next(node for node in nodes if node.id == old)
                survivors = [node for node in nodes if node is not victim]
                victim.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                first: float | None = None
                while True:
                    views = [leader_of(client, node) for node in survivors]
                    now = time.monotonic() - killed
                    fresh = [v for v in views if v is not None and v[0] not in (None, old) and v[1] > old_token]
                    if fresh and first is None:
                        first = now
                    if len(fresh) == 2 and fresh[0] == fresh[1]:
                        break
                    if now > failover_max:
                        raise RuntimeError(f"no agreed new leader {failover_max:.0f} s after killing {old}: {views}")
                    time.sleep(poll)
            assert first is not None
            new, new_token = fresh[0]
            return RealRun(elected, first, now, old, str(new), (old_token, new_token))
        except BaseException:
            for node in nodes:
                if node.process.poll() not in (None, -signal.SIGKILL):
                    tail = node.log.read_text(errors="replace")[-2000:]
                    print(f"--- {node.id} log tail ---\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_cluster(nodes)


# -- part 3: a deaf leader, real processes in network namespaces ----------------------------

DEAF_FOR = 20.0  # the issue's probe: the leader's inbound traffic dropped this long
AFTER_HEAL = 10.0
SUBNET = "10.213.13"  # only ever assigned inside namespaces this script creates
CLONE_NEWNET = 0x40000000


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


class NetnsLab:
    """``n`` namespaces with one node address each, bridged in a hub namespace. ``close()``
    kills whatever runs in them and deletes them; it is safe to call after a partial setup."""

    def __init__(self, n: int) -> None:
        prefix = f"dkdeaf{os.getpid()}"
        self.hub = f"{prefix}-hub"
        self.names = [f"{prefix}-n{i + 1}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{11 + i}" for i in range(n)]
        self.created: list[str] = []
        self._home: int | None = None

    def open(self) -> None:
        for name in (self.hub, *self.names):
            _run("ip", "netns", "add", name)
            self.created.append(name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            _run("ip", "-n", self.hub, "link", "add", f"v{i + 1}", "type", "veth", "peer", "name", "eth0",
                 "netns", name)
            _run("ip", "-n", self.hub, "link", "set", f"v{i + 1}", "master", "br0", "up")
            _run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _run("ip", "-n", name, "link", "set", "eth0", "up")

    def enter_hub(self) -> None:
        """Move this (main) thread into the hub namespace, so its sockets reach the nodes."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.hub}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the hub namespace")
        finally:
            os.close(fd)

    def deafen(self, i: int) -> None:
        """Drop every frame the bridge sends to node ``i`` (a ``blackhole`` qdisc on its port, in
        the hub): it receives nothing. So that it can still send, its neighbour entries for the
        other nodes are made permanent first (ARP replies no longer reach it)."""
        for j, name in enumerate(self.names):
            if j != i:
                link = json.loads(subprocess.run(["ip", "-j", "-n", name, "link", "show", "eth0"],
                                                 capture_output=True, text=True, check=True).stdout)
                _run("ip", "-n", self.names[i], "neigh", "replace", self.addresses[j], "lladdr",
                     link[0]["address"], "dev", "eth0", "nud", "permanent")
        _run("tc", "-n", self.hub, "qdisc", "add", "dev", f"v{i + 1}", "root", "blackhole")

    def heal(self, i: int) -> None:
        _run("tc", "-n", self.hub, "qdisc", "del", "dev", f"v{i + 1}", "root")

    def close(self) -> None:
        if self._home is not None:
            import ctypes

            ctypes.CDLL(None, use_errno=True).setns(self._home, CLONE_NEWNET)
            os.close(self._home)
            self._home = None
        for name in reversed(self.created):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:  # only processes inside a namespace this script created
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.created.clear()


@attrs.frozen
class DeafRun:
    old: str
    new: str | None
    first: float | None  # cut -> the first of the other four names another leader
    all_four: float | None  # cut -> all four name the same other leader
    tokens: tuple[int, int, int]  # before the cut, highest seen during it, after the heal
    after_heal: str | None  # the leader all five name 10 s after the heal
    moved_back: bool


def deaf_run(lab: NetnsLab, root: Path, poll: float = 0.05) -> DeafRun:
    n = len(lab.names)
    gossip = [f"{a}:7946" for a in lab.addresses]
    key = base64.b64encode(os.urandom(32)).decode()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAKERA_")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    nodes: list[RealNode] = []
    try:
        for i in range(n):
            env = dict(base)
            env.update({
                "DAKERA_CLUSTER_MODE": "true", "DAKERA_NODE_ID": f"node-{i + 1}",
                "DAKERA_HOST": lab.addresses[i], "DAKERA_PORT": "8080", "DAKERA_GOSSIP_PORT": "7946",
                "DAKERA_GOSSIP_BIND": gossip[i], "DAKERA_GOSSIP_KEY": key,
                "DAKERA_CLUSTER_SEEDS": ",".join(a for a in gossip if a != gossip[i]),
                "DAKERA_BOOTSTRAP_EXPECT": "3",
                "DAKERA_DATA_DIR": str(root / f"node-{i + 1}"), "DAKERA_LOG_LEVEL": "warning",
            })
            log = root / f"node-{i + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(["ip", "netns", "exec", lab.names[i], sys.executable, "-m",
                                            "dakera_actors"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            nodes.append(RealNode(f"node-{i + 1}", f"http://{lab.addresses[i]}:8080", process, log))
        with httpx.Client(timeout=0.5) as client:
            started = time.monotonic()
            while True:
                views = [leader_of(client, node) for node in nodes]
                if all(v is not None and v[0] is not None for v in views) and len(set(views)) == 1:
                    break
                if any(node.process.poll() is not None for node in nodes):
                    raise RuntimeError("a node exited during startup")
                if time.monotonic() - started > 60:
                    raise RuntimeError(f"no agreed leader after 60 s: {views}")
                time.sleep(poll)
            time.sleep(5.0)  # the leader grows the voters from three to five, one at a time
            views = [leader_of(client, node) for node in nodes]
            if len(set(views)) != 1 or views[0] is None or views[0][0] is None:
                raise RuntimeError(f"leadership not settled: {views}")
            old, token = views[0]
            deaf = next(i for i, node in enumerate(nodes) if node.id == old)
            others = [node for i, node in enumerate(nodes) if i != deaf]
            lab.deafen(deaf)
            cut = time.monotonic()
            first = all_four = None
            new: str | None = None
            highest = token
            while (now := time.monotonic() - cut) < DEAF_FOR:
                views = [leader_of(client, node) for node in others]
                highest = max([highest, *(v[1] for v in views if v is not None)])
                fresh = [v for v in views if v is not None and v[0] not in (None, old)]
                if fresh and first is None:
                    first = now
                if all_four is None and len(fresh) == len(others) and len(set(fresh)) == 1:
                    all_four, new = now, fresh[0][0]
                time.sleep(poll)
            lab.heal(deaf)
            healed = time.monotonic()
            leaders_seen: set[str | None] = set()
            while time.monotonic() - healed < AFTER_HEAL:
                views = [leader_of(client, node) for node in nodes]
                leaders_seen |= {v[0] for v in views if v is not None}
                highest = max([highest, *(v[1] for v in views if v is not None)])
                time.sleep(poll)
            final = [leader_of(client, node) for node in nodes]
            agreed = final[0][0] if final[0] is not None and len(set(final)) == 1 else None
            end_token = max(v[1] for v in final if v is not None)
            return DeafRun(str(old), new, first, all_four, (token, highest, end_token), agreed,
                           old in leaders_seen)
    except BaseException:
        for node in nodes:
            if node.process.poll() not in (None, -signal.SIGKILL):
                print(f"--- {node.id} log tail ---\n{node.log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        raise
    finally:
        stop_cluster(nodes)


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def deaf_bench(reps: int) -> list[DeafRun]:
    done: list[DeafRun] = []
    for rep in range(reps):
        lab = NetnsLab(5)
        try:
            with tempfile.TemporaryDirectory(prefix="dakera-bench-deaf-") as tmp:
                lab.open()
                lab.enter_hub()
                run = deaf_run(lab, Path(tmp))
        finally:
            lab.close()
        done.append(run)
        print(f"  rep {rep + 1}: {run.old} (token {run.tokens[0]}) made deaf; another leader named after "
              f"{_secs(run.first)}, all four agree on {run.new or '-'} after {_secs(run.all_four)}; highest token "
              f"during the cut {run.tokens[1]}; after the heal all five name {run.after_heal or '-'} "
              f"(token {run.tokens[2]}), the deaf node named again: {run.moved_back}", flush=True)
    return done


# -- output --------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)  # nearest-rank percentile
    return f"{ordered[rank]:.3f}"


def _max(values: list[float]) -> str:
    return f"{max(values):.3f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    parser.add_argument("--runs", type=int, default=0, help="simulated runs per (n, loss) (default 500, quick 50)")
    parser.add_argument("--reps", type=int, default=0, help="real-process repetitions (default 5, quick 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--deaf", action="store_true",
                        help="part 3: a deaf leader among 5 nodes in network namespaces (root, ip, tc)")
    parser.add_argument("--deaf-reps", type=int, default=0, help="deaf-leader repetitions (default 3, quick 1)")
    args = parser.parse_args(argv)
    runs = args.runs or (50 if args.quick else 500)
    reps = args.reps or (2 if args.quick else 5)
    defaults = LeaseConfig()
    began = time.perf_counter()
    print(f"LeaseConfig (defaults): ttl={defaults.ttl}s drift_margin={defaults.drift_margin}s "
          f"renew every ttl*{defaults.renew_fraction:.3f}={defaults.ttl * defaults.renew_fraction:.3f}s "
          f"request_timeout={defaults.request_timeout}s backoff={defaults.backoff[0]}-{defaults.backoff[1]}s")

    bound = analytical(defaults, 2 * LATENCY[1])
    print(f"\nexpected: target (issue) < {TARGET_S:.1f} s; seed document ~{SEED_DOC_S:.0f} s; analytical bound "
          f"= ttl + drift_margin ({bound['promise']:.2f}) + one campaign check period ({bound['period']:.3f})\n"
          f"  + max backoff ({bound['backoff']:.2f}) + one round trip ({bound['rtt'] * 1000:.0f} ms in the sim, "
          f"~0 on loopback) = {bound['bound']:.3f} s; floor without loss = ttl + drift_margin - one renewal\n"
          f"  period = {bound['floor']:.3f} s (the voters heard the last renewal up to a period before the "
          f"crash); each failed attempt\n  (split vote, lost message) adds request_timeout + backoff "
          f"= {defaults.request_timeout + defaults.backoff[0]:.2f}-{bound['retry']:.2f} s")

    if not args.skip_sim:
        print(f"\n== 1. Simulation: LeaseSim, {runs} seeded runs per row, one-way latency "
              f"{LATENCY[0] * 1000:.1f}-{LATENCY[1] * 1000:.0f} ms, clocks within {DRIFT * 1e6:.0f} ppm ==")
        print(f"per run: first election, {SETTLE:.0f} s settling, {WINDOW:.0f} s counted steady state, a uniformly "
              f"random part of one renewal period,\nthen the leader crashes; times are true simulated seconds "
              f"from the crash")
        results = [simulate(n, loss, runs, LeaseConfig(bootstrap_expect=n), args.seed)
                   for loss in (0.0, 0.05) for n in (3, 5)]
        print("\nfailover (s): crash -> another node holds a valid lease; all know = every survivor names it")
        print_table(
            ["n", "loss", "runs", "min", "p50", "p99", "max", "mean", f"> bound {bound['bound']:.2f}",
             f">= {TARGET_S:.0f} s", "campaigns p50 / max", "all know p50", "all know p99", "all know max",
             "first election p50"],
            [[str(r.n), f"{r.loss:.0%}", str(r.runs), f"{min(r.failover):.3f}" if r.failover else "-",
              _pct(r.failover, 50), _pct(r.failover, 99),
              _max(r.failover), f"{statistics.fmean(r.failover):.3f}" if r.failover else "-",
              str(sum(f > bound["bound"] for f in r.failover)), str(sum(f >= TARGET_S for f in r.failover)),
              f"{statistics.median(r.campaigns):.0f} / {max(r.campaigns)}" if r.campaigns else "-",
              _pct(r.all_know, 50), _pct(r.all_know, 99), _max(r.all_know), _pct(r.first_election, 50)]
             for r in results])
        fails = [f"n={r.n} loss={r.loss:.0%}: {r.failures}" for r in results if r.failures]
        print("  campaigns = campaigns the survivors started between the crash and the winning one's quorum\n"
              "  bounds hit (no leader within 30 s): " + (", ".join(fails) if fails else "none"))
        waits = [f"n={r.n} loss={r.loss:.0%}: {r.no_leader}" for r in results if r.no_leader]
        print("  runs with no leader at the crash moment (waited for one first): "
              + (", ".join(waits) if waits else "none"))

        print("\nfailover p50 / max (s) by when the crash fell in the renewal cycle "
              "(time since the leader's last renewal ask)")
        thirds = [(0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0)]
        rows = []
        for r in results:
            row = [str(r.n), f"{r.loss:.0%}"]
            for lo, hi in thirds:
                chosen = [f for f, p in zip(r.failover, r.phase, strict=True) if lo <= p < hi]
                row.append(f"{_pct(chosen, 50)} / {_max(chosen)} ({len(chosen)})")
            rows.append(row)
        period_ms = defaults.ttl * defaults.renew_fraction * 1000
        print_table(["n", "loss"] + [f"{lo * period_ms:.0f}-{hi * period_ms:.0f} ms (runs)" for lo, hi in thirds],
                    rows)

        print(f"\nsteady-state lease traffic (messages sent per second, over {WINDOW:.0f} s per run, "
              f"counted before loss; median over runs)")
        print_table(
            ["n", "loss", "leader msg/s", "per follower msg/s", "total msg/s", "total B/s",
             "leader changes w/o crash"],
            [[str(r.n), f"{r.loss:.0%}", f"{statistics.median(r.leader_msgs):.1f}",
              f"{statistics.median(r.follower_msgs):.1f}", f"{statistics.median(r.total_msgs):.1f}",
              f"{statistics.median(r.total_bytes):.0f}", str(r.changes_in_window)] for r in results])
        print("  by kind, whole cluster (msg/s, mean over runs): " + "; ".join(
            f"n={r.n} loss={r.loss:.0%}: " + ", ".join(
                f"{kind} {count / r.window_s:.1f}" for kind, count in sorted(r.kinds.items()))
            for r in results))
        print("  expected without loss: every ttl/3 the leader sends n-1 renewal requests and n-1 announces,\n"
              "    each voter answers one grant: 3 * 3 * (n-1) = "
              + ", ".join(f"{9 * (n - 1)} msg/s for n={n}" for n in (3, 5)))

    if not args.skip_real:
        print(f"\n== 2. Real processes: 3 x python -m dakera_actors on 127.0.0.1 (UDP+TCP gossip), SIGKILL the "
              f"leader, {reps} repetition(s) ==")
        done: list[RealRun] = []
        for rep in range(reps):
            run = real_run()
            done.append(run)
            print(f"  rep {rep + 1}: agreed leader {run.old} (token {run.tokens[0]}) {run.elected:.2f} s after spawn; "
                  f"killed; first survivor names {run.new} (token {run.tokens[1]}) after {run.first:.3f} s, "
                  f"both after {run.both:.3f} s", flush=True)
        firsts, boths = [r.first for r in done], [r.both for r in done]
        print()
        print_table(["nodes", "reps", "agreed leader from spawn p50 / max (s)", "first survivor p50 / max (s)",
                     "both survivors p50 / max (s)", "target (s)", "seed doc (s)", "bound (s)"],
                    [["3", str(reps),
                      f"{statistics.median(r.elected for r in done):.2f} / {max(r.elected for r in done):.2f}",
                      f"{statistics.median(firsts):.3f} / {max(firsts):.3f}",
                      f"{statistics.median(boths):.3f} / {max(boths):.3f}",
                      f"< {TARGET_S:.1f}", f"~{SEED_DOC_S:.0f}", f"{bound['bound'] - bound['rtt']:.3f}"]])
        print("  wall-clock seconds from SIGKILL, polling GET /admin/cluster/status on both survivors every\n"
              "  20 ms (+ two requests' time per poll, so figures are late by up to ~30 ms)")
    if args.deaf:
        deaf_reps = args.deaf_reps or (1 if args.quick else 3)
        print(f"\n== 3. Deaf leader: 5 x python -m dakera_actors, each in its own network namespace; the "
              f"leader's inbound traffic dropped for {DEAF_FOR:.0f} s, then healed; {deaf_reps} repetition(s) ==")
        runs3 = deaf_bench(deaf_reps)
        firsts3 = [r.first for r in runs3 if r.first is not None]
        alls3 = [r.all_four for r in runs3 if r.all_four is not None]
        print()
        print_table(["reps", "another leader p50 / max (s)", "all four agree p50 / max (s)", "no leader in 20 s",
                     "tokens before -> during -> after", "moved back after heal"],
                    [[str(len(runs3)),
                      f"{statistics.median(firsts3):.2f} / {max(firsts3):.2f}" if firsts3 else "-",
                      f"{statistics.median(alls3):.2f} / {max(alls3):.2f}" if alls3 else "-",
                      str(sum(r.first is None for r in runs3)),
                      ", ".join(f"{a}->{b}->{c}" for a, b, c in (r.tokens for r in runs3)),
                      str(sum(r.moved_back for r in runs3))]])
        print("  wall-clock seconds from installing the filter, polling GET /admin/cluster/status on the\n"
              "  other four every 50 ms (the deaf node's own HTTP is unreachable while it is deaf)")
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
