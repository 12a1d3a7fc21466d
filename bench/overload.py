"""Overload benchmark: does the event loop stay responsive while clients send heavy batches?

Usage: ``.venv/bin/python bench/overload.py [--seconds S] [--clients N] [--batch-mb MB] [--code DIR]``
(from the repo root). ``--code`` runs the nodes from another checkout (e.g. the previous commit's
worktree) for a before/after comparison on the same machine.

Starts 3 real ``python -m dakera_actors`` nodes in cluster mode on loopback (as bench/failover.py
does) and waits until they agree on a leader. Then, against the leader's HTTP port (the node whose
lease renewals matter most), two phases of ``--seconds`` each:

1. idle: one prober sends ``GET /health`` every 20 ms (a fresh connection each time, as a load
   balancer does) and another polls ``GET /admin/cluster/status`` on every node every 100 ms;
2. overload: the same probes while ``--clients`` threads each send ``--batch-mb`` MB batch stores
   (``POST /v1/memories/store/batch``, 1000 memories of varied words) back to back, to agents
   spread over the shards (so most are forwarded to other owners).

It reports per phase: /health p50/p99/max, the fencing token at the start and end (each lease
lost and won again raises it), how many times any node saw the leader change or none, and the
batch stores' outcomes and latency. Figures only: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import percentile, print_table  # noqa: E402
from failover import RealNode, leader_of, start_cluster, stop_cluster  # noqa: E402


def batch_body(agent: str, target_bytes: int, rng: random.Random, vocabulary: list[str]) -> bytes:
    per = max(1, target_bytes // 1000)
    memories = []
    for _ in range(1000):
        words: list[str] = []
        size = 0
        while size < per:
            word = rng.choice(vocabulary)
            words.append(word)
            size += len(word) + 1
        memories.append({"content": " ".join(words)})
    import json

    return json.dumps({"agent_id": agent, "memories": memories}).encode()


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health_ms: list[float] = []
        self.health_errors = 0
        self.tokens: list[int] = []
        self.leader_changes = 0
        self.leaderless = 0
        self.stores: Counter[int | str] = Counter()
        self.store_s: list[float] = []
        self.stored_bytes = 0


def probe_health(url: str, phase: Phase, stop: threading.Event) -> None:
    # a fresh connection each time, as a load balancer's check makes (no keep-alive)
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                r = client.get(url + "/health")
                if r.status_code == 200:
                    phase.health_ms.append((time.perf_counter() - started) * 1000)
                else:
                    phase.health_errors += 1
            except httpx.HTTPError:
                phase.health_errors += 1
            stop.wait(0.02)


def probe_leases(nodes: list[RealNode], phase: Phase, stop: threading.Event) -> None:
    last: dict[str, str | None] = {}
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            for node in nodes:
                seen = leader_of(client, node)
                if seen is None:
                    continue
                leader, token = seen
                phase.tokens.append(token)
                if leader is None:
                    phase.leaderless += 1
                if node.id in last and last[node.id] != leader:
                    phase.leader_changes += 1
                last[node.id] = leader
            stop.wait(0.1)


def send_batches(url: str, bodies: list[bytes], phase: Phase, stop: threading.Event) -> None:
    with httpx.Client(timeout=60) as client:
        n = 0
        while not stop.is_set():
            body = bodies[n % len(bodies)]
            n += 1
            started = time.perf_counter()
            try:
                r = client.post(url + "/v1/memories/store/batch", content=body,
                                headers={"content-type": "application/json"})
                phase.stores[r.status_code] += 1
                if r.status_code == 200:
                    phase.store_s.append(time.perf_counter() - started)
                    phase.stored_bytes += len(body)
                elif r.status_code == 503:
                    stop.wait(float(r.headers.get("retry-after", "1")))
            except httpx.HTTPError as exc:
                phase.stores[type(exc).__name__] += 1


def run_phase(name: str, target: RealNode, nodes: list[RealNode], seconds: float,
              clients: int, bodies: list[list[bytes]]) -> Phase:
    phase = Phase(name)
    stop = threading.Event()
    threads = [threading.Thread(target=probe_health, args=(target.http, phase, stop)),
               threading.Thread(target=probe_leases, args=(nodes, phase, stop))]
    threads += [threading.Thread(target=send_batches, args=(target.http, bodies[i], phase, stop))
                for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch-mb", type=float, default=2.0)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to run the nodes from")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(args.code.resolve())
    import failover

    failover.ROOT = args.code.resolve()  # the nodes' working directory

    rng = random.Random(13)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
                  for _ in range(20_000)]
    bodies = [[batch_body(f"bench-{c}-{k}", int(args.batch_mb * 1024 * 1024), rng, vocabulary) for k in range(3)]
              for c in range(args.clients)]
    print(f"code: {args.code.resolve()}  (git {git_head(args.code)})")
    print(f"{args.clients} clients x {len(bodies[0][0]) / 1e6:.2f} MB batches, {args.seconds:.0f} s per phase, "
          f"{os.cpu_count()} CPUs\n")

    with tempfile.TemporaryDirectory(prefix="dakera-bench-overload-") as tmp:
        nodes = start_cluster(3, Path(tmp))
        try:
            target = wait_leader(nodes)
            print(f"leader: {target.id}; probing {target.http}\n")
            phases = [run_phase("idle", target, nodes, args.seconds, 0, bodies),
                      run_phase(f"{args.clients} x {args.batch_mb:g} MB batches", target, nodes, args.seconds,
                                args.clients, bodies)]
            alive = [n.id for n in nodes if n.process.poll() is None]
            for node in nodes:
                if node.process.poll() is not None:  # say why a node died before its log goes
                    tail = node.log.read_text(errors="replace").strip().splitlines()[-6:]
                    print(f"{node.id} exited with {node.process.returncode}; its log ends:\n  " + "\n  ".join(tail))
        finally:
            stop_cluster(nodes)
    rows = []
    for p in phases:
        stores = ", ".join(f"{k}: {v}" for k, v in sorted(p.stores.items(), key=str)) or "-"
        rows.append([p.name, str(len(p.health_ms)), f"{percentile(p.health_ms, 0.5):.1f}",
                     f"{percentile(p.health_ms, 0.99):.1f}", f"{max(p.health_ms, default=float('nan')):.1f}",
                     str(p.health_errors),
                     f"{min(p.tokens, default=0)} -> {max(p.tokens, default=0)}", str(p.leader_changes),
                     str(p.leaderless), stores,
                     f"{statistics.median(p.store_s):.2f}" if p.store_s else "-",
                     f"{p.stored_bytes / 1e6 / args.seconds:.1f}"])
    print_table(["phase", "health n", "p50 ms", "p99 ms", "max ms", "health err", "token", "leader changes",
                 "leaderless", "batch stores", "store p50 s", "MB/s stored"], rows)
    print(f"\nnodes alive at the end: {', '.join(alive)}")


def wait_leader(nodes: list[RealNode], limit: float = 60.0) -> RealNode:
    deadline = time.monotonic() + limit
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            seen = [leader_of(client, n) for n in nodes]
            ready = all(_ready(client, n) for n in nodes)
            leaders = {s[0] for s in seen if s is not None}
            if ready and len(leaders) == 1 and None not in leaders and all(s is not None for s in seen):
                leader = leaders.pop()
                return next(n for n in nodes if n.id == leader)
            time.sleep(0.1)
    raise SystemExit("no leader agreed on within the limit")


def _ready(client: httpx.Client, node: RealNode) -> bool:
    try:
        return client.get(node.http + "/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def git_head(path: Path) -> Any:
    try:
        return subprocess.run(["git", "-C", str(path), "log", "--oneline", "-1"], capture_output=True,
                              text=True, check=False).stdout.strip()[:60]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
