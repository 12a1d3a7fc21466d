"""Rebalancing in in-process clusters (MockClock): a node joins a loaded cluster and shards move
onto it through learners, while clients read and write without a single failure; transfers
survive the death of their source, their target or the leader."""

from __future__ import annotations

import random

import httpx
import trio
import trio.testing

from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually
from .test_replication import one_map, replicas_equal_primaries

MockClock = trio.testing.MockClock


def settled(cluster: Cluster, members: int) -> bool:
    smap = one_map(cluster)
    return (smap is not None and len(smap.members()) == members and not smap.down and not smap.learners_any()
            and all(n.readiness.ready and n.replicator is not None and not n.replicator.syncing
                    for n in cluster.nodes.values()))


class Traffic:
    """Clients writing and reading back through random nodes; every failure is kept."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.acked: dict[str, str] = {}
        self.failures: list[str] = []
        self.requests = 0

    async def run(self, name: str, stop: trio.Event) -> None:
        n = 0
        while not stop.is_set():
            # like a load balancer: only nodes whose /health/ready says so
            live = [i for i, n in self.cluster.nodes.items() if n.readiness.ready]
            via = self.rng.choice(live)
            try:
                async with self.cluster.client(via) as http:
                    if self.acked and self.rng.random() < 0.5:
                        mid = self.rng.choice(sorted(self.acked))
                        r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": self.acked[mid]})
                    else:
                        mid, agent = f"{name}-{n}", f"agent-{self.rng.randrange(40)}"
                        n += 1
                        r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"{mid} fact",
                                                                      "id": mid})
                        if r.status_code == 200:
                            self.acked[mid] = agent
                    self.requests += 1
                    if r.status_code != 200:
                        self.failures.append(f"t={trio.current_time():.1f} {via} {r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"t={trio.current_time():.1f} {via} {exc!r}")
            await trio.sleep(self.rng.uniform(0.005, 0.05))


async def watch_copies(cluster: Cluster, problems: list[str], stop: trio.Event) -> None:
    """Invariant while shards move: a copy the map counts is never an empty one (a new copy is
    a learner until it has caught up), so no shard ever has fewer than RF copies with its data."""
    while not stop.is_set():
        for node in list(cluster.nodes.values()):
            smap = node.shard_map.view.value  # type: ignore[union-attr]
            if smap is None or not node.readiness.ready:
                continue
            for shard, copies in enumerate(smap.placement):
                counted = [c for c in copies[:smap.counted] if c in cluster.nodes]
                seqs = {c: cluster.node(c).memory.shards.shard(shard).seq for c in counted}  # type: ignore[union-attr]
                if seqs and max(seqs.values()) >= 3 and min(seqs.values()) == 0:
                    problems.append(f"t={trio.current_time():.2f} map {smap.key} shard {shard}: {seqs}")
        await trio.sleep(0.01)


async def test_a_joining_node_gets_its_share_while_clients_see_no_failure(autojump_clock: MockClock) -> None:
    async with open_cluster(4, seed=21, start=3, config={"rebalance_concurrency": 3}) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        traffic = Traffic(cluster, 1)
        stop = trio.Event()
        problems: list[str] = []
        async with trio.open_nursery() as nursery:
            for w in range(3):
                nursery.start_soon(traffic.run, f"w{w}", stop)
            await trio.sleep(3)
            before = len(traffic.acked)
            nursery.start_soon(watch_copies, cluster, problems, stop)
            await cluster.start("node-4")
            await eventually(lambda: settled(cluster, 4) and one_map(cluster).balance() < 0.1  # type: ignore[union-attr]
                             and replicas_equal_primaries(cluster), timeout=300)
            stop.set()
        smap = one_map(cluster)
        assert smap is not None
        assert smap.balance() < 0.1
        dist = smap.distribution()
        assert dist["node-4"]["primary"] >= 12 and dist["node-4"]["primary"] + dist["node-4"]["replica"] >= 30
        assert not traffic.failures, traffic.failures[:10]
        assert not problems, problems[:5]
        assert len(traffic.acked) > before + 100 and traffic.requests > 500
        # every write is still there, and the copies the joining node replaced are gone
        for mid, agent in sorted(traffic.acked.items()):
            async with cluster.client("node-4") as http:
                r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            assert r.status_code == 200, (mid, r.text)
        await eventually(lambda: all(
            set(n.memory.shards.shards) == set() or all(  # type: ignore[union-attr]
                node_id in smap.placement[s] or not (sh.seq or sh.agents)
                for s, sh in n.memory.shards.shards.items())  # type: ignore[union-attr]
            for node_id, n in cluster.nodes.items()), timeout=30)
        moved = cluster.node("node-1").metrics.sample("dakera_replication_snapshots_total", direction="sent")
        assert moved + sum(n.metrics.sample("dakera_replication_records_total", direction="sent")
                           for n in cluster.nodes.values()) > 0
