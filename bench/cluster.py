"""Cluster HTTP benchmark: 3 real cluster-mode nodes and 1 single node, on loopback; then replication.

Usage: ``.venv/bin/python bench/cluster.py [--quick] [--seed 1] [--replication-only | --skip-replication]
[--repl-seconds 5] [--lag-seconds 15] [--failover-reps 3] [--cache | --cache-only]`` (from the repo root).

Part 1, routing (skipped with ``--replication-only``):

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

Part 2, replication (skipped with ``--skip-replication``), each on fresh 3-process clusters
(own data dirs, ready, one leader and one map everywhere, no shard under-replicated):

- write acks: one cluster per (DAKERA_REPLICATION_FACTOR, DAKERA_WRITE_ACK) in RF=1 (the
  baseline: no replica, so the ack mode changes nothing), then RF=2 and RF=3 x primary / quorum /
  all. 20 agents; ``POST /v1/memory/store`` (what the SDK's store_memory sends) one at a time to
  the agent's primary, then to a random node, then from 4 threads back to back for
  ``--repl-seconds`` (throughput and latency under concurrency);
- lag (on the RF=2 and RF=3 primary-ack clusters): two paced writers store 100/s in all for
  ``--lag-seconds`` while a sampler reads ``dakera_replication_lag_ms`` from every node's
  /metrics every 50 ms and ``lag_ms`` from ``GET /admin/cluster/replication`` every 100 ms;
- visibility (same clusters, idle): one store at a time to the agent's primary, then
  ``GET /v1/memory/get/<id>?consistency=eventual`` to each replica until it answers from its own
  copy; time after the primary's 200;
- failover: RF=2 (ack=primary), 20 agents x 20 memories; SIGKILL the primary of one agent's
  shard (a non-leader, then the leader; ``--failover-reps`` each, fresh cluster each), then store
  for that agent through a survivor every 50 ms: seconds from SIGKILL to the first 200, with
  when that survivor saw the victim Suspect / Dead, a new leader, and a new primary for the shard.

Part 3, the L1.5 cache (``--cache``, or ``--cache-only``): bench/cache.py's interleaved figures
(a read answered from Redis through a non-owner beside the local read and the forward without the
cache, recall likewise, the write cost of the generation step, one Redis GET as the floor).

Every process is killed at the end, also on error. Prints figures; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def spawn_cluster(tmp: Path, procs: list[Proc], n: int = 3, extra: dict[str, str] | None = None) -> None:
    """Start ``n`` cluster-mode nodes (each seeded with the others' gossip addresses), appending
    each to ``procs`` as soon as it is spawned so the caller's cleanup sees it."""
    base = base_env()
    key = base64.b64encode(os.urandom(32)).decode()  # one per cluster: cluster mode requires a key
    gossip = [free_port() for _ in range(n)]
    for i, port in enumerate(gossip):
        name = f"node-{i + 1}"
        env = dict(base, DAKERA_CLUSTER_MODE="true", DAKERA_GOSSIP_KEY=key, DAKERA_NODE_ID=name, DAKERA_GOSSIP_PORT=str(port),
                   DAKERA_GOSSIP_BIND=f"127.0.0.1:{port}",
                   DAKERA_CLUSTER_SEEDS=",".join(f"127.0.0.1:{p}" for p in gossip if p != port),
                   DAKERA_HOST="127.0.0.1", DAKERA_PORT=str(free_port()), DAKERA_DATA_DIR=str(tmp / f"{name}-data"),
                   **(extra or {}))
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


# -- replication: write acks, lag, failover ------------------------------------------------

ACK_MODES = ("primary", "quorum", "all")
REPL_AGENTS = 20
WRITERS = 4  # concurrent writers for the throughput figure
LAG_RATE = 100  # writes/s during the lag window (two paced writers)
SAMPLE_EVERY = 0.05  # lag sampling period (every node's /metrics; the admin route every other tick)
VISIBLE_DEADLINE = 5.0
FAILOVER_DEADLINE = 60.0
FAILOVER_POLL = 0.05


def get_json(client: httpx.Client, path: str) -> dict[str, Any]:
    return ok(client.get(path)).json()


def shard_copies(client: httpx.Client) -> dict[int, list[str]]:
    """shard -> [primary, *replicas] from ``GET /admin/cluster/shards``."""
    return {s["id"]: [s["primary"], *s["replicas"]] for s in get_json(client, "/admin/cluster/shards")["shards"]}


def wait_replicated(nodes: list[Proc], deadline: float = MAP_DEADLINE) -> None:
    """Until every node names one leader and one map, and no shard is under-replicated."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            status = [httpx.get(n.url + "/admin/cluster/status", timeout=2).json() for n in nodes]
            repl = httpx.get(nodes[0].url + "/admin/cluster/replication", timeout=5).json()
            last = ([(s["leader"], s["shard_map_version"]) for s in status], repl.get("under_replicated_shards"))
            if (status[0]["leader"] and status[0]["shard_map_version"] and len(set(last[0])) == 1
                    and repl["under_replicated_shards"] == 0 and not repl["down"]):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"cluster not replicated within {deadline}s: {last}")


@contextlib.contextmanager
def fresh_cluster(tmp: Path, label: str, **env: str) -> Iterator[list[Proc]]:
    """3 new cluster processes with their own data dirs, ready and fully replicated; killed on exit."""
    nodes: list[Proc] = []
    where = tmp / label
    where.mkdir()
    try:
        spawn_cluster(where, nodes, extra=env)
        for n in nodes:
            n.wait_ready()
        wait_shared_map(nodes)
        wait_replicated(nodes)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def store_body(agent: str, r: random.Random) -> dict[str, str]:
    return {"agent_id": agent, "content": sentence(r)}


def timed_writes(clients: dict[str, httpx.Client], pick: Callable[[random.Random], tuple[str, str]],
                 count: int, seed: int) -> tuple[list[float], Counter[str]]:
    """``count`` sequential stores; ``pick`` gives (node, agent). Latency of the 200s, and the rest."""
    rng = random.Random(seed + 11)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    for _ in range(count):
        node, agent = pick(rng)
        t = time.perf_counter()
        try:
            r = clients[node].post("/v1/memory/store", json=store_body(agent, rng))
            code = str(r.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        if code == "200":
            lat.append((time.perf_counter() - t) * 1000)
        else:
            errors[code] += 1
    return lat, errors


def concurrent_writes(nodes: list[Proc], agents: list[str], writers: int, seconds: float,
                      seed: int) -> tuple[list[float], Counter[str], float]:
    """``writers`` threads, each storing back to back (random agent, random node, its own
    keep-alive clients) for ``seconds``: latencies of the 200s, the rest, and the elapsed time."""
    lat: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]

    def writer(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        clients = [httpx.Client(base_url=n.url, timeout=30) for n in nodes]
        mine: list[float] = []
        bad: Counter[str] = Counter()
        try:
            start.wait()
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                try:
                    code = str(rng.choice(clients).post("/v1/memory/store",
                                                        json=store_body(rng.choice(agents), rng)).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                if code == "200":
                    mine.append((time.perf_counter() - t) * 1000)
                else:
                    bad[code] += 1
        finally:
            for c in clients:
                c.close()
            with lock:
                lat.extend(mine)
                errors.update(bad)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    return lat, errors, time.perf_counter() - t0


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def lag_under_load(nodes: list[Proc], agents: list[str], seconds: float, rate: int, seed: int) -> dict[str, Any]:
    """Two paced writers (``rate`` stores/s in all, random agent and node) for ``seconds``, while a
    sampler reads ``dakera_replication_lag_ms`` from every node's /metrics every SAMPLE_EVERY and
    ``lag_ms`` from ``GET /admin/cluster/replication`` every other tick."""
    stop = threading.Event()
    out: dict[str, Any] = {"per_node": [], "worst": [], "route": [], "writes": [], "errors": Counter(),
                           "sample_errors": 0, "per_shard_max": 0.0}
    lock = threading.Lock()

    def writer(i: int, per_second: float) -> None:
        rng = random.Random(seed * 1000 + i)
        clients = [httpx.Client(base_url=n.url, timeout=30) for n in nodes]
        interval, next_at = 1 / per_second, time.perf_counter() + i * 0.5 / per_second
        try:
            while not stop.is_set():
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval, time.perf_counter() - interval)  # no bursts after a stall
                t = time.perf_counter()
                try:
                    code = str(rng.choice(clients).post("/v1/memory/store",
                                                        json=store_body(rng.choice(agents), rng)).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with lock:
                    if code == "200":
                        out["writes"].append((time.perf_counter() - t) * 1000)
                    else:
                        out["errors"][code] += 1
        finally:
            for c in clients:
                c.close()

    def sampler() -> None:
        clients = [httpx.Client(base_url=n.url, timeout=5) for n in nodes]
        tick, next_at = 0, time.perf_counter()
        try:
            while not stop.is_set():
                try:
                    texts = [c.get("/metrics").text for c in clients]
                    values = [metric_value(t, "dakera_replication_lag_ms") for t in texts]
                    if any(v is None for v in values):
                        raise ValueError("no dakera_replication_lag_ms")
                    out["per_node"].extend(values)
                    out["worst"].append(max(values))  # type: ignore[type-var]
                    for t in texts:
                        for line in t.splitlines():
                            if line.startswith("dakera_replication_shard_lag_ms{"):
                                out["per_shard_max"] = max(out["per_shard_max"], float(line.split()[1]))
                    if tick % 2 == 0:
                        out["route"].append(float(clients[tick // 2 % len(clients)]
                                                  .get("/admin/cluster/replication").json()["lag_ms"]))
                except (httpx.HTTPError, ValueError, KeyError):
                    out["sample_errors"] += 1
                tick += 1
                next_at += SAMPLE_EVERY
                time.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=writer, args=(i, rate / 2)) for i in range(2)]
    threads.append(threading.Thread(target=sampler))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    out["elapsed"] = time.perf_counter() - t0
    return out


def visibility(nodes: list[Proc], clients: dict[str, httpx.Client], agents: list[str], count: int,
               seed: int) -> dict[str, Any]:
    """One store at a time sent to the agent's primary; then every replica of its shard is asked,
    in turn and back to back, ``GET /v1/memory/get/<id>?consistency=eventual`` until it answers
    200 from its own copy (404 until the record arrives). Times from the primary's 200."""
    rng = random.Random(seed + 23)
    copies = shard_copies(clients[nodes[0].name])
    api = {n.name: n.url for n in nodes}
    first: list[float] = []
    every: list[float] = []
    write: list[float] = []
    polls: list[int] = []
    odd: Counter[str] = Counter()
    for _ in range(count):
        agent = rng.choice(agents)
        primary, *replicas = copies[shard_of(agent, SHARDS)]
        t0 = time.perf_counter()
        mid = ok(clients[primary].post("/v1/memory/store", json=store_body(agent, rng))).json()["memory"]["id"]
        t1 = time.perf_counter()
        write.append((t1 - t0) * 1000)
        pending, seen, n = set(replicas), [], 0
        while pending and time.perf_counter() - t1 < VISIBLE_DEADLINE:
            for rep in sorted(pending):
                r = clients[rep].get(f"/v1/memory/get/{mid}", params={"agent_id": agent, "consistency": "eventual"})
                n += 1
                if r.status_code == 200:
                    if r.headers.get("X-Dakera-Owner", "").rstrip("/") != api[rep]:
                        odd[f"200 served by {r.headers.get('X-Dakera-Owner')}"] += 1
                    pending.discard(rep)
                    seen.append((time.perf_counter() - t1) * 1000)
                elif r.status_code != 404:
                    odd[str(r.status_code)] += 1
        if pending:
            odd[f"not visible within {VISIBLE_DEADLINE}s"] += 1
            continue
        first.append(min(seen))
        every.append(max(seen))
        polls.append(n)
        time.sleep(0.01)
    return {"first": first, "every": every, "write": write, "polls": polls, "odd": odd,
            "replicas": len(copies[0]) - 1}


def write_ack_run(tmp: Path, rf: int, mode: str, count: int, seconds: float, seed: int,
                  lag_seconds: float, visible_count: int) -> dict[str, Any]:
    """One fresh 3-node cluster with DAKERA_REPLICATION_FACTOR=rf, DAKERA_WRITE_ACK=mode."""
    t = time.perf_counter()
    with fresh_cluster(tmp, f"rf{rf}-{mode}", DAKERA_REPLICATION_FACTOR=str(rf), DAKERA_WRITE_ACK=mode) as nodes:
        ready = time.perf_counter() - t
        clients = {n.name: httpx.Client(base_url=n.url, timeout=30) for n in nodes}
        try:
            agents = [f"agent-{i:02d}" for i in range(REPL_AGENTS)]
            copies = shard_copies(clients["node-1"])
            owner = {a: copies[shard_of(a, SHARDS)][0] for a in agents}
            names = [n.name for n in nodes]

            def to_owner(r: random.Random) -> tuple[str, str]:
                agent = r.choice(agents)
                return owner[agent], agent

            def to_random(r: random.Random) -> tuple[str, str]:
                return r.choice(names), r.choice(agents)

            timed_writes(clients, to_random, max(20, count // 5), seed + 1)  # warm-up
            res: dict[str, Any] = {"rf": rf, "mode": mode, "ready": ready}
            res["owner"], e1 = timed_writes(clients, to_owner, count, seed)
            res["random"], e2 = timed_writes(clients, to_random, count, seed + 2)
            res["conc"], e3, res["conc_elapsed"] = concurrent_writes(nodes, agents, WRITERS, seconds, seed)
            res["errors"] = e1 + e2 + e3
            if lag_seconds:
                res["lag"] = lag_under_load(nodes, agents, lag_seconds, LAG_RATE, seed)
            if visible_count:
                res["visible"] = visibility(nodes, clients, agents, visible_count, seed)
            print(f"  RF={rf} ack={mode}: ready in {ready:.1f}s; "
                  f"{len(res['owner']) + len(res['random']) + len(res['conc'])} writes measured"
                  + (f", errors {dict(res['errors'])}" if res["errors"] else "")
                  + (", lag window done" if lag_seconds else "")
                  + (", visibility probe done" if visible_count else "")
                  + f" ({time.perf_counter() - t:.0f}s)", flush=True)
            return res
        finally:
            for c in clients.values():
                c.close()


def failover_run(tmp: Path, label: str, victim_role: str, seed: int) -> dict[str, Any]:
    """Fresh 3-node RF=2 cluster (default ack), 20 agents x 20 memories; SIGKILL a node that is
    primary of some agent's shard (the leader, or a node that is not the leader), then store for
    that agent through a survivor every FAILOVER_POLL until one answers 200."""
    rng = random.Random(seed)
    t = time.perf_counter()
    with fresh_cluster(tmp, label, DAKERA_REPLICATION_FACTOR="2") as nodes:
        ready = time.perf_counter() - t
        by_name = {n.name: n for n in nodes}
        clients = {n.name: httpx.Client(base_url=n.url, timeout=10) for n in nodes}
        try:
            agents = [f"agent-{i:02d}" for i in range(REPL_AGENTS)]
            for agent in agents:
                body = {"agent_id": agent, "memories": [{"content": sentence(rng)} for _ in range(20)]}
                ok(clients["node-1"].post("/v1/memories/store/batch", json=body))
            status = get_json(clients["node-1"], "/admin/cluster/status")
            leader, version = status["leader"], status["shard_map_version"]
            copies = shard_copies(clients["node-1"])
            choices = [n.name for n in nodes if (n.name == leader) == (victim_role == "leader")]
            victim = rng.choice(choices)
            on_victim = [a for a in sorted(agents, key=lambda _: rng.random()) if copies[shard_of(a, SHARDS)][0] == victim]
            extra = 0
            while not on_victim:  # every loaded agent lives elsewhere: name a new one on the victim
                candidate = f"agent-x{extra}"
                if copies[shard_of(candidate, SHARDS)][0] == victim:
                    on_victim.append(candidate)
                extra += 1
            agent = on_victim[0]
            shard = shard_of(agent, SHARDS)
            others = [n for n in by_name if n != victim]
            # write through the survivor holding no copy of the shard when there is one (it must
            # learn the new map and forward), else through the surviving replica
            survivor = next((n for n in others if n not in copies[shard]), others[0])
            client = clients[survivor]
            ok(client.post("/v1/memory/store", json=store_body(agent, rng)))
            by_name[victim].proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            codes: Counter[str] = Counter()
            first_ok: float | None = None
            phases: dict[str, float] = {}  # what the survivor reports, first seen at (s after SIGKILL)

            def watch() -> None:
                try:
                    state = next(m["state"] for m in client.get("/admin/cluster/nodes").json() if m["id"] == victim)
                    status = client.get("/admin/cluster/status").json()
                    primary = "" if "promoted" in phases else shard_copies(client)[shard][0]
                except (httpx.HTTPError, ValueError, KeyError, StopIteration, RuntimeError):
                    return
                now = time.monotonic() - killed
                if state != "Alive":
                    phases.setdefault("suspect", now)
                if state == "Dead":
                    phases.setdefault("dead", now)
                if status["leader"] and status["leader"] != leader:
                    phases.setdefault("leader", now)
                if primary and primary != victim:
                    phases.setdefault("promoted", now)

            while time.monotonic() - killed < FAILOVER_DEADLINE:
                started = time.monotonic()
                watch()
                try:
                    r = client.post("/v1/memory/store", json=store_body(agent, rng))
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                if code == "200":
                    first_ok = time.monotonic() - killed
                    break
                codes[code] += 1
                time.sleep(max(0.0, started + FAILOVER_POLL - time.monotonic()))
            by_name[victim].proc.wait(10)
            after = shard_copies(client)[shard]
            new_version = get_json(client, "/admin/cluster/status")["shard_map_version"]
            res = {"victim": victim, "role": victim_role, "leader": leader, "agent": agent, "shard": shard,
                   "via": survivor, "before": copies[shard], "after": after, "version": (version, new_version),
                   "seconds": first_ok, "codes": codes, "ready": ready, "phases": phases}
            shown = f"{first_ok:.2f} s" if first_ok is not None else f"none within {FAILOVER_DEADLINE:.0f} s"
            seen = ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
            print(f"  {label}: killed {victim} ({victim_role}; leader was {leader}), shard {shard} "
                  f"{copies[shard]} -> {after}, map v{version} -> v{new_version}; stores for {agent} via "
                  f"{survivor}: first 200 after {shown} (refused before: {dict(codes) or 'none'}); "
                  f"{survivor} saw: {seen or '-'} s", flush=True)
            return res
        finally:
            for c in clients.values():
                c.close()


def phase_median(runs: list[dict[str, Any]], key: str) -> str:
    got = [r["phases"][key] for r in runs if key in r["phases"]]
    return f"{statistics.median(got):.2f}" if got else "-"


def fmt(v: float) -> str:
    return f"{v:.2f}"


def replication_report(runs: list[dict[str, Any]], failovers: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next(r for r in runs if r["rf"] == 1)
    b50, b99, btp = pct(base["owner"], 50), pct(base["owner"], 99), len(base["conc"]) / base["conc_elapsed"]
    print()
    print(f"== write latency by replication factor and DAKERA_WRITE_ACK (fresh 3-process cluster each; "
          f"{REPL_AGENTS} agents) ==")
    rows = []
    for r in runs:
        tp = len(r["conc"]) / r["conc_elapsed"]
        o50, o99 = pct(r["owner"], 50), pct(r["owner"], 99)
        rows.append([str(r["rf"]), r["mode"] if r["rf"] > 1 else "(any)",
                     fmt(o50), fmt(o99), fmt(pct(r["random"], 50)), fmt(pct(r["random"], 99)),
                     f"{tp:,.0f}", fmt(pct(r["conc"], 50)), fmt(pct(r["conc"], 99)),
                     f"{o50 / b50:.2f}x / {o99 / b99:.2f}x", f"{tp / btp:.2f}x",
                     str(sum(r["errors"].values()))])
    print_table(["RF", "ack", "owner p50", "owner p99", "any-node p50", "any-node p99",
                 f"{WRITERS}w writes/s", f"{WRITERS}w p50", f"{WRITERS}w p99", "owner vs RF=1 p50/p99",
                 "tput vs RF=1", "errors"], rows)
    print(f"  ms; owner = sequential stores sent to the agent's primary ({len(base['owner'])} each); any-node = "
          f"sequential stores to a random node (about 2/3 forwarded); {WRITERS}w = {WRITERS} threads storing back to "
          f"back for {args.repl_seconds:g} s to random nodes; baseline RF=1 (no replicas: every ack mode is the "
          f"same); quorum = floor(copies/2)+1, so at RF=2 quorum waits for the replica like all does")

    lagged = [r for r in runs if "lag" in r]
    if lagged:
        print()
        print(f"== replication lag under steady writes ({LAG_RATE} stores/s, random agent and node) ==")
        rows = []
        for r in lagged:
            lag = r["lag"]
            rows.append([str(r["rf"]), r["mode"], f"{lag['elapsed']:.1f}",
                         f"{len(lag['writes']) / lag['elapsed']:.0f}", str(len(lag["worst"])),
                         fmt(pct(lag["per_node"], 50)), fmt(pct(lag["per_node"], 99)),
                         fmt(pct(lag["worst"], 50)), fmt(pct(lag["worst"], 99)), fmt(max(lag["worst"])),
                         str(len(lag["route"])), fmt(pct(lag["route"], 50)), fmt(pct(lag["route"], 99)),
                         fmt(max(lag["route"])),
                         f"{sum(1 for v in lag['worst'] if v > 0) / len(lag['worst']):.0%}",
                         str(sum(lag["errors"].values()) + lag["sample_errors"])])
        print_table(["RF", "ack", "s", "stores/s", "samples", "node p50", "node p99", "worst p50", "worst p99",
                     "worst max", "route n", "route p50", "route p99", "route max", "samples > 0", "errors"], rows)
        print(f"  ms; node = dakera_replication_lag_ms of each node's /metrics (worst over its primary shards), "
              f"every {SAMPLE_EVERY * 1000:.0f} ms; worst = the largest of the three at each tick; route = lag_ms of "
              f"GET /admin/cluster/replication (cluster-wide worst), every {2 * SAMPLE_EVERY * 1000:.0f} ms; "
              f"lag = age of the oldest record a replica has not yet acknowledged (its next fetch)")
        print("  largest dakera_replication_shard_lag_ms seen: "
              + ", ".join(f"RF={r['rf']} {fmt(r['lag']['per_shard_max'])} ms" for r in lagged))
        print("  store latency during the window (ms p50 / p99): "
              + ", ".join(f"RF={r['rf']} {fmt(pct(r['lag']['writes'], 50))} / {fmt(pct(r['lag']['writes'], 99))}"
                          for r in lagged))

    seen = [r for r in runs if "visible" in r]
    if seen:
        print()
        print("== time until a store is visible on the replica(s) (idle cluster, one store at a time) ==")
        rows = []
        for r in seen:
            v = r["visible"]
            rows.append([str(r["rf"]), r["mode"], str(len(v["first"])), fmt(pct(v["write"], 50)),
                         fmt(pct(v["first"], 50)), fmt(pct(v["first"], 99)), fmt(max(v["first"])),
                         fmt(pct(v["every"], 50)) if v["replicas"] > 1 else "-",
                         fmt(pct(v["every"], 99)) if v["replicas"] > 1 else "-",
                         f"{statistics.median(v['polls']):.0f}", ", ".join(f"{k} x{n}" for k, n in v["odd"].items())
                         or "-"])
        print_table(["RF", "ack", "n", "store p50", "first replica p50", "first p99", "first max",
                     "all replicas p50", "all p99", "gets p50", "unexpected"], rows)
        print("  ms after the primary's 200; store sent to the agent's primary, then GET /v1/memory/get/<id>"
              "?consistency=eventual to each replica back to back (a replica answers from its own copy: 404 until the "
              "record is applied there), so figures include up to one GET (~1-2 ms) of polling granularity; "
              "gets = GETs per store until every replica had it")

    if failovers:
        print()
        print("== failover: SIGKILL a shard's primary, then store for one of its agents through a survivor every "
              f"{FAILOVER_POLL * 1000:.0f} ms (RF=2, ack=primary, fresh cluster each) ==")
        rows = []
        for role in ("follower", "leader"):
            got = [f for f in failovers if f["role"] == role]
            if not got:
                continue
            secs = [f["seconds"] for f in got if f["seconds"] is not None]
            rows.append([role, str(len(got)), " / ".join(f"{f['seconds']:.2f}" if f["seconds"] is not None
                                                         else "none" for f in got),
                         f"{statistics.median(secs):.2f}" if secs else "-",
                         f"{min(secs):.2f} / {max(secs):.2f}" if secs else "-",
                         *(phase_median(got, k) for k in ("suspect", "dead", "leader", "promoted"))])
        print_table(["victim", "reps", "SIGKILL -> first 200 (s), each", "median (s)", "min / max (s)",
                     "suspect p50", "dead p50", "new leader p50", "promoted p50"], rows)
        print("  victim = follower: a node that is primary of the agent's shard but not the leader; leader: the "
              "leader (the lease must move first); wall-clock seconds from SIGKILL, a store every "
              f"{FAILOVER_POLL * 1000:.0f} ms (+ its own time); compare: SWIM marks a SIGKILLed node Dead after "
              "~2.8 s with 5 nodes and a leader lease moves in ~1.3 s on this machine (bench/membership.py, "
              "bench/failover.py); phase columns: seconds after SIGKILL at which the survivor taking the stores "
              "first reported the victim not Alive / Dead (GET /admin/cluster/nodes), another leader "
              "(GET /admin/cluster/status), and another primary for the shard (GET /admin/cluster/shards), "
              "polled just before each store")


def replication_bench(tmp: Path, args: argparse.Namespace) -> None:
    quick = args.quick
    count = 60 if quick else 200
    lag_seconds = 5.0 if quick else args.lag_seconds
    visible_count = 30 if quick else 100
    runs: list[dict[str, Any]] = []
    t = time.perf_counter()
    print(f"== replication: write acks on fresh 3-process clusters (RF=1 baseline, then RF=2 and RF=3 x "
          f"{'/'.join(ACK_MODES)}) ==", flush=True)
    plan = [(1, "primary")] + [(rf, mode) for rf in (2, 3) for mode in ACK_MODES]
    for rf, mode in plan:
        with_lag = mode == "primary" and rf > 1
        runs.append(write_ack_run(tmp, rf, mode, count, args.repl_seconds, args.seed,
                                  lag_seconds if with_lag else 0.0, visible_count if with_lag else 0))
    failovers: list[dict[str, Any]] = []
    if args.failover_reps:
        print(f"== failover: {args.failover_reps} rep(s) per victim role on fresh RF=2 clusters ==", flush=True)
        for role in ("follower", "leader"):
            for i in range(args.failover_reps):
                failovers.append(failover_run(tmp, f"failover-{role}-{i + 1}", role, args.seed + 100 * i))
    replication_report(runs, failovers, args)
    print(f"\nreplication sections: {time.perf_counter() - t:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="60 requests per operation instead of 300 (200 per write figure in the replication "
                         "sections), a 5 s lag window, 30 visibility probes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replication-only", action="store_true",
                    help="only the replication sections (write acks, lag, visibility, failover)")
    ap.add_argument("--skip-replication", action="store_true", help="only the original routing figures")
    ap.add_argument("--repl-seconds", type=float, default=5.0,
                    help="length of each concurrent-writer throughput window (default 5)")
    ap.add_argument("--lag-seconds", type=float, default=15.0, help="steady-write lag window (default 15)")
    ap.add_argument("--failover-reps", type=int, default=3,
                    help="SIGKILL repetitions per victim role (non-leader, leader); 0 skips failover")
    ap.add_argument("--cache", action="store_true",
                    help="also the L1.5 cache section (bench/cache.py: hits beside local and forwarded "
                         "reads, the write cost of the generation step; starts a redis-server)")
    ap.add_argument("--cache-only", action="store_true", help="only the L1.5 cache section")
    args = ap.parse_args()
    if args.cache_only:
        import cache

        cache.main(["--rounds", "600" if args.quick else "3000", "--writes", "150" if args.quick else "500",
                    "--seed", str(args.seed)])
        return
    count, warmup = (60, 10) if args.quick else (300, 30)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dakera-bench-cluster-") as tmp_name:
        if not args.replication_only:
            procs: list[Proc] = []
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
        if not args.skip_replication:
            if not args.replication_only:
                print()
            replication_bench(Path(tmp_name), args)
    if args.cache:
        import cache

        print("\nL1.5 cache (bench/cache.py)", flush=True)
        cache.main(["--rounds", "600" if args.quick else "3000", "--writes", "150" if args.quick else "500",
                    "--seed", str(args.seed)])
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
