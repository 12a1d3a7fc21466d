"""Cluster HTTP benchmark: 3 real cluster-mode nodes and 1 single node, on loopback.

Usage: ``.venv/bin/python bench/cluster.py [--quick] [--seed 1]`` (from the repo root).

Starts 3 ``python -m dakera_actors`` nodes in cluster mode (UDP + TCP gossip, each seeded with
the other two, temp data dirs) and waits until all three are ready and report the same non-zero
``shard_map_version``; starts 1 single (non-cluster) node in the same run as the baseline. Loads
20 agents x 50 memories through node-1 (batch store: node-1 forwards agents it does not own),
reads the shard map from ``GET /admin/cluster/shards`` to know each agent's owner
(``shard_of(agent, 64)``), then measures sequentially (one request at a time, one persistent
httpx.Client per node, a warm-up before each phase):

- local read: ``GET /v1/memory/get/<id>`` sent to the agent's owner;
- forwarded read: the same request sent to a node that does not own the agent;
- write: ``POST /v1/memory/store`` to a random node, split by whether that node owns the agent;
- hybrid recall: ``POST /v1/memory/recall`` top_k=10 to a random node;
- get / store / recall against the single node.

Every process is killed at the end, also on error. Prints figures; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import free_port, print_table  # noqa: E402
from recall import query, sentence  # noqa: E402  (bench/recall.py: the same seeded vocabulary)

from dakera_actors.store.shard import shard_of  # noqa: E402

SHARDS = 64
AGENTS = 20
PER_AGENT = 50
TOP_K = 10
STARTUP_DEADLINE = 40.0
MAP_DEADLINE = 40.0


class Proc:
    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.port = int(env["DAKERA_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        end = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {STARTUP_DEADLINE}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def base_env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAKERA_")}
    base["DAKERA_LOG_LEVEL"] = "warning"
    return base


def spawn_cluster(tmp: Path, procs: list[Proc], n: int = 3, **extra: str) -> None:
    """Start ``n`` cluster-mode nodes (each seeded with the others' gossip addresses), appending
    each to ``procs`` as soon as it is spawned so the caller's cleanup sees it."""
    base = base_env()
    gossip = [free_port() for _ in range(n)]
    for i, port in enumerate(gossip):
        name = f"node-{i + 1}"
        env = dict(base, DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID=name, DAKERA_GOSSIP_PORT=str(port),
                   DAKERA_GOSSIP_BIND=f"127.0.0.1:{port}",
                   DAKERA_CLUSTER_SEEDS=",".join(f"127.0.0.1:{p}" for p in gossip if p != port),
                   DAKERA_HOST="127.0.0.1", DAKERA_PORT=str(free_port()), DAKERA_DATA_DIR=str(tmp / f"{name}-data"),
                   **extra)
        procs.append(Proc(name, env, tmp))


def start_all(tmp: Path, procs: list[Proc]) -> None:
    spawn_cluster(tmp, procs)
    env = dict(base_env(), DAKERA_HOST="127.0.0.1", DAKERA_PORT=str(free_port()),
               DAKERA_DATA_DIR=str(tmp / "single-data"))
    procs.append(Proc("single", env, tmp))
    for p in procs:
        p.wait_ready()


def wait_shared_map(nodes: list[Proc]) -> int:
    end = time.monotonic() + MAP_DEADLINE
    versions: list[int] = []
    while time.monotonic() < end:
        try:
            versions = [httpx.get(n.url + "/admin/cluster/status", timeout=1).json()["shard_map_version"]
                        for n in nodes]
            if versions[0] and len(set(versions)) == 1:
                return int(versions[0])
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nodes did not agree on a shard map within {MAP_DEADLINE}s: {versions}")


def ok(r: httpx.Response) -> httpx.Response:
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
    return r


def pct(lat: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(lat)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def measure(call: Callable[[random.Random], None], count: int, seed: int) -> list[float]:
    rng = random.Random(seed + 11)
    lat: list[float] = []
    for _ in range(count):
        t = time.perf_counter()
        call(rng)
        lat.append((time.perf_counter() - t) * 1000)
    return lat


def bench(nodes: list[Proc], single: Proc, count: int, warmup: int, seed: int) -> dict[str, list[float]]:
    clients = {n.name: httpx.Client(base_url=n.url, timeout=30) for n in [*nodes, single]}
    try:
        rng = random.Random(seed)
        agents = [f"agent-{i:02d}" for i in range(AGENTS)]
        ids: dict[str, dict[str, list[str]]] = {"cluster": {}, "single": {}}
        t = time.perf_counter()
        for agent in agents:  # cluster through node-1 (it forwards agents it does not own)
            body = {"agent_id": agent, "memories": [{"content": sentence(rng)} for _ in range(PER_AGENT)]}
            for target, client in (("cluster", "node-1"), ("single", "single")):
                stored = ok(clients[client].post("/v1/memories/store/batch", json=body)).json()["stored"]
                ids[target][agent] = [m["id"] for m in stored]
        print(f"loaded {AGENTS} agents x {PER_AGENT} memories (cluster via node-1, and the single node) "
              f"in {time.perf_counter() - t:.1f}s", flush=True)

        shards = ok(clients["node-1"].get("/admin/cluster/shards")).json()["shards"]
        primary = {s["id"]: s["primary"] for s in shards}
        owner = {a: primary[shard_of(a, SHARDS)] for a in agents}
        names = [n.name for n in nodes]
        print("agents per owner:", {n: sum(1 for a in agents if owner[a] == n) for n in names}, flush=True)
        api = {n.name: n.url for n in nodes}
        owner_header_ok: set[bool] = set()

        def get(node: str, agent: str, r: random.Random) -> None:
            target = "single" if node == "single" else "cluster"
            resp = ok(clients[node].get(f"/v1/memory/get/{r.choice(ids[target][agent])}", params={"agent_id": agent}))
            if target == "cluster":
                owner_header_ok.add(resp.headers.get("X-Dakera-Owner", "").rstrip("/") == api[owner[agent]])

        def local_read(r: random.Random) -> None:
            agent = r.choice(agents)
            get(owner[agent], agent, r)

        def forwarded_read(r: random.Random) -> None:
            agent = r.choice(agents)
            get(r.choice([n for n in names if n != owner[agent]]), agent, r)

        def single_read(r: random.Random) -> None:
            get("single", r.choice(agents), r)

        writes: dict[str, list[float]] = {"local": [], "forwarded": []}
        recording = [False]

        def store(node_of: Callable[[random.Random], str]) -> Callable[[random.Random], None]:
            def call(r: random.Random) -> None:
                agent, node = r.choice(agents), node_of(r)
                t0 = time.perf_counter()
                ok(clients[node].post("/v1/memory/store", json={"agent_id": agent, "content": sentence(r)}))
                if recording[0] and node != "single":
                    kind = "local" if node == owner[agent] else "forwarded"
                    writes[kind].append((time.perf_counter() - t0) * 1000)
            return call

        def recall(node_of: Callable[[random.Random], str]) -> Callable[[random.Random], None]:
            def call(r: random.Random) -> None:
                body = {"agent_id": r.choice(agents), "query": query(r), "top_k": TOP_K, "routing": "hybrid"}
                ok(clients[node_of(r)].post("/v1/memory/recall", json=body))
            return call

        def random_node(r: random.Random) -> str:
            return r.choice(names)

        def single_node(r: random.Random) -> str:
            return "single"

        def cluster_write(r: random.Random) -> None:
            store(random_node)(r)

        out: dict[str, list[float]] = {}
        plan: list[tuple[str, Callable[[random.Random], None]]] = [
            ("single: read", single_read),
            ("single: write", store(single_node)),
            ("single: recall", recall(single_node)),
            ("cluster: local read", local_read),
            ("cluster: forwarded read", forwarded_read),
            ("cluster: write (random node)", cluster_write),
            ("cluster: recall (random node)", recall(random_node)),
        ]
        for label, call in plan:
            wrng = random.Random(seed + 7)
            for _ in range(warmup):
                call(wrng)
            recording[0] = True
            out[label] = measure(call, count, seed)
            recording[0] = False
            print(f"  {label:<30} {len(out[label]):>5} requests", flush=True)
        out["  of which owner got it (local)"] = writes["local"]
        out["  of which forwarded"] = writes["forwarded"]
        if owner_header_ok != {True}:
            print("warning: X-Dakera-Owner did not always name the expected owner", flush=True)
        return out
    finally:
        for c in clients.values():
            c.close()


def report(out: dict[str, list[float]]) -> None:
    local = out["cluster: local read"]
    fwd = out["cluster: forwarded read"]
    rows = []
    for label, lat in out.items():
        ratio = ""
        if label == "cluster: forwarded read":
            ratio = f"{pct(fwd, 50) / pct(local, 50):.2f}x p50, {pct(fwd, 99) / pct(local, 99):.2f}x p99"
        rows.append([label, str(len(lat)), f"{pct(lat, 50):.2f}", f"{pct(lat, 99):.2f}", ratio])
    print()
    print(f"sequential, one request at a time, HTTP/1.1 keep-alive (httpx.Client per node); "
          f"recall = hybrid top_k={TOP_K}; {AGENTS} agents x {PER_AGENT} memories")
    print_table(["operation", "n", "p50 ms", "p99 ms", "forwarded/local"], rows)
    print()
    print("seed document's figures:")
    print_table(["operation", "single node", "clustered (3 nodes)"], [
        ["local read", "< 5 ms", "< 5 ms"],
        ["forwarded read", "-", "~8-12 ms"],
        ["write", "< 10 ms", "~15-20 ms"],
        ["hybrid recall", "~30 ms", "~35-45 ms"],
    ])
    print("issue's aim: a forwarded read within 1.5x of a local one")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 requests per operation instead of 300")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    count, warmup = (60, 10) if args.quick else (300, 30)
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="dakera-bench-cluster-") as tmp_name:
        try:
            t = time.perf_counter()
            start_all(Path(tmp_name), procs)
            version = wait_shared_map(procs[:3])
            print(f"3 cluster nodes + 1 single node ready, shard map v{version}, "
                  f"in {time.perf_counter() - t:.1f}s", flush=True)
            report(bench(procs[:3], procs[3], count, warmup, args.seed))
        finally:
            for p in procs:
                p.stop()


if __name__ == "__main__":
    main()
