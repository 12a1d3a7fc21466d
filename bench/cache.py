"""The L1.5 cache's figures: reads through a node that does not own the agent, answered from Redis
(a hit) beside the same read on the owner (local) and forwarded without a cache; recall likewise;
and what the generation step costs a write. Real processes: two 3-node clusters (RF 2, quorum
acks) running side by side, one with ``DAKERA_REDIS_URL`` (a real redis-server started here) and
one without, and a plain Redis GET from this process as the floor of any shared cache.

The measurements are interleaved: each round sends one request of every kind, in a shuffled order,
so a stretch of machine noise (this VM reports up to 50% CPU steal) lands on every kind alike
instead of on whichever ran during it.

    .venv/bin/python bench/cache.py [--rounds 3000] [--writes 500]
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
PER_AGENT = 5


class Side:
    """One cluster, its clients, and the memories stored in it (agent, id, owner url)."""

    def __init__(self, nodes: list, rng: random.Random) -> None:
        self.clients = {n.url: httpx.Client(base_url=n.url, timeout=30) for n in nodes}
        self.rng = rng
        self.memories: list[tuple[str, str, str]] = []
        first = self.clients[nodes[0].url]
        for a in range(AGENTS):
            for i in range(PER_AGENT):
                r = first.post("/v1/memory/store", json={"agent_id": f"agent-{a}", "content": f"note {i} about topic {a}"})
                r.raise_for_status()
                self.memories.append((f"agent-{a}", r.json()["memory"]["id"], r.headers["X-Dakera-Owner"]))

    def _url(self, owner: str, local: bool) -> str:
        return owner if local else self.rng.choice([u for u in self.clients if u != owner])

    def read(self, local: bool) -> Callable[[], None]:
        def call() -> None:
            agent, mid, owner = self.rng.choice(self.memories)
            self.clients[self._url(owner, local)].get(f"/v1/memory/get/{mid}",
                                                      params={"agent_id": agent}).raise_for_status()
        return call

    def recall(self, local: bool) -> Callable[[], None]:
        def call() -> None:
            agent, _mid, owner = self.rng.choice(self.memories)
            self.clients[self._url(owner, local)].post(
                "/v1/memory/recall", json={"agent_id": agent, "query": "topic note", "top_k": 5}).raise_for_status()
        return call

    def update(self) -> None:
        agent, mid, owner = self.rng.choice(self.memories)
        self.clients[owner].put(f"/v1/memory/update/{mid}", params={"agent_id": agent},
                                json={"content": f"updated {self.rng.random()}"}).raise_for_status()

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def interleaved(calls: dict[str, Callable[[], None]], rounds: int, rng: random.Random) -> dict[str, list[float]]:
    """Each round: every call once, in a shuffled order; milliseconds per call by name."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter()
            calls[name]()
            out[name].append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000, help="rounds of interleaved reads")
    parser.add_argument("--writes", type=int, default=500, help="rounds of interleaved updates")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dakera-cache-bench-"))
    for sub in ("redis", "with", "without"):
        (tmp / sub).mkdir()
    server = RedisServer(tmp / "redis")
    server.start()
    env = {"DAKERA_REPLICATION_FACTOR": "2", "DAKERA_SHARDS": "16", "DAKERA_WRITE_ACK": "quorum",
           "DAKERA_LOG_LEVEL": "warning"}
    rng = random.Random(args.seed)
    try:
        cached_nodes = cluster_processes(tmp / "with", 3, **env, DAKERA_REDIS_URL=server.url)
        plain_nodes = cluster_processes(tmp / "without", 3, **env)
        with running(cached_nodes), running(plain_nodes):
            cached, plain = Side(cached_nodes, random.Random(args.seed)), Side(plain_nodes, random.Random(args.seed))
            redis = server.sync()
            redis.set("bench:floor", b"x" * 300)
            warm = max(args.rounds // 4, 50)
            interleaved({"a": cached.read(False), "b": cached.recall(False)}, warm, rng)  # owners fill, others hit
            interleaved({"a": plain.read(False), "b": plain.recall(False)}, warm // 4, rng)
            reads = interleaved({
                "L1.5: read on the owner (local)": cached.read(True),
                "L1.5: read through another node (hit)": cached.read(False),
                "no cache: read on the owner (local)": plain.read(True),
                "no cache: read through another node (forward)": plain.read(False),
                "L1.5: recall on the owner (local)": cached.recall(True),
                "L1.5: recall through another node (hit)": cached.recall(False),
                "no cache: recall on the owner (local)": plain.recall(True),
                "no cache: recall through another node (forward)": plain.recall(False),
                "floor: one Redis GET from the client": lambda: redis.get("bench:floor"),
            }, args.rounds, rng)
            writes = interleaved({"L1.5: update on the owner (quorum ack)": cached.update,
                                  "no cache: update on the owner (quorum ack)": plain.update}, args.writes, rng)
            cached.close()
            plain.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {**reads, **writes}
    rows = [[name, f"{percentile(v, 0.5):.2f}", f"{percentile(v, 0.99):.2f}"] for name, v in figures.items()]
    print_table(["operation (ms)", "p50", "p99"], rows)

    def p50(name: str) -> float:
        return percentile(figures[name], 0.5)

    local = p50("no cache: read on the owner (local)")
    print(f"\nread through another node / local read without the cache (p50): with L1.5 (a hit) "
          f"{p50('L1.5: read through another node (hit)') / local:.2f}x (aim 1.1x), "
          f"forwarded {p50('no cache: read through another node (forward)') / local:.2f}x")
    print(f"a hit costs the local read plus {p50('L1.5: read through another node (hit)') - local:.2f} ms; "
          f"one Redis GET from the client takes {p50('floor: one Redis GET from the client'):.2f} ms")
    print(f"the generation step on a write (p50): "
          f"+{p50('L1.5: update on the owner (quorum ack)') - p50('no cache: update on the owner (quorum ack)'):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
