"""The L1.5 cache's figures: reads through a node that does not own the agent, answered from Redis
(a hit) beside the same read on the owner (local) and forwarded without a cache; recall likewise;
and what the generation step costs a write. Real processes (3 nodes, RF 2, quorum acks) and a real
redis-server started here; the cluster without the cache runs in the same way, right after.

    .venv/bin/python bench/cache.py [--reads 2000] [--writes 500]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import percentile, print_table  # noqa: E402

from tests.cache.conftest import RedisServer  # noqa: E402
from tests.real.procs import cluster_processes, running  # noqa: E402

AGENTS = 12


def timed(call: Callable[[], None], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run(tmp: Path, redis_url: str | None, reads: int, writes: int, seed: int) -> dict[str, list[float]]:
    env = {"DAKERA_REPLICATION_FACTOR": "2", "DAKERA_SHARDS": "16", "DAKERA_WRITE_ACK": "quorum",
           "DAKERA_LOG_LEVEL": "warning"}
    if redis_url:
        env["DAKERA_REDIS_URL"] = redis_url
    tmp.mkdir(parents=True, exist_ok=True)
    nodes = cluster_processes(tmp, 3, **env)
    rng = random.Random(seed)
    out: dict[str, list[float]] = {}
    with running(nodes):
        clients = {n.url: httpx.Client(base_url=n.url, timeout=30) for n in nodes}
        memories: list[tuple[str, str, str]] = []  # (agent, id, owner url)
        for a in range(AGENTS):
            for i in range(5):
                r = clients[nodes[0].url].post("/v1/memory/store", json={"agent_id": f"agent-{a}",
                                                                         "content": f"note {i} about topic {a}"})
                r.raise_for_status()
                memories.append((f"agent-{a}", r.json()["memory"]["id"], r.headers["X-Dakera-Owner"]))

        def read(local: bool) -> Callable[[], None]:
            def call() -> None:
                agent, mid, owner = rng.choice(memories)
                url = owner if local else rng.choice([u for u in clients if u != owner])
                clients[url].get(f"/v1/memory/get/{mid}", params={"agent_id": agent}).raise_for_status()
            return call

        def recall(local: bool) -> Callable[[], None]:
            def call() -> None:
                agent, _mid, owner = rng.choice(memories)
                url = owner if local else rng.choice([u for u in clients if u != owner])
                clients[url].post("/v1/memory/recall", json={"agent_id": agent, "query": "topic note",
                                                              "top_k": 5}).raise_for_status()
            return call

        def write() -> None:
            agent, mid, owner = rng.choice(memories)
            clients[owner].put(f"/v1/memory/update/{mid}", params={"agent_id": agent},
                               json={"content": f"updated {rng.random()}"}).raise_for_status()

        timed(read(False), reads // 4)  # warm: the owners fill, the others then hit
        timed(recall(False), reads // 8)
        out["read on the owner (local)"] = timed(read(True), reads)
        out["read through another node"] = timed(read(False), reads)
        out["recall on the owner (local)"] = timed(recall(True), reads // 2)
        out["recall through another node"] = timed(recall(False), reads // 2)
        out["update on the owner (quorum ack)"] = timed(write, writes)
        for c in clients.values():
            c.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dakera-cache-bench-"))
    server = RedisServer(tmp / "redis")
    (tmp / "redis").mkdir()
    server.start()
    try:
        with_cache = run(tmp / "with", server.url, args.reads, args.writes, args.seed)
        without = run(tmp / "without", None, args.reads, args.writes, args.seed)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for label in with_cache:
        a, b = with_cache[label], without[label]
        rows.append([label, f"{percentile(a, 0.5):.2f}", f"{percentile(a, 0.99):.2f}",
                     f"{percentile(b, 0.5):.2f}", f"{percentile(b, 0.99):.2f}"])
    print_table(["operation (ms)", "L1.5 p50", "L1.5 p99", "no cache p50", "no cache p99"], rows)
    local = percentile(with_cache["read on the owner (local)"], 0.5)
    hit = percentile(with_cache["read through another node"], 0.5)
    fwd = percentile(without["read through another node"], 0.5)
    print(f"\nread through another node / local read (p50): with L1.5 {hit / local:.2f}x "
          f"(aim 1.1x), without {fwd / percentile(without['read on the owner (local)'], 0.5):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
