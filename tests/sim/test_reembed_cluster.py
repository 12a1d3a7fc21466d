"""Re-embedding in a cluster (MockClock): written with hashing:256, stopped, started again with
hashing:384 everywhere; each primary re-embeds its shards through replication, recall works
throughout, and every copy of a shard ends with exactly its primary's vectors."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from dakera_actors.testing import open_cluster

from ..waiting import eventually, eventually_async
from .test_routing import ready

MockClock = trio.testing.MockClock
AGENTS = [f"agent-{i}" for i in range(8)]


async def test_a_cluster_restarted_with_another_embedder_reembeds_every_copy(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=43, config={"embedder": "hashing:256"}) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        async with cluster.client("node-1") as http:
            for agent in AGENTS:
                for k in range(3):
                    r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"{agent} likes tea {k}"})
                    assert r.status_code == 200, r.text
        for node_id in cluster.ids:
            await cluster.stop(node_id)
        for node_id in cluster.ids:
            slot = cluster.slot(node_id)
            slot.config = attrs.evolve(slot.config, embedder="hashing:384")
        for node_id in cluster.ids:
            await cluster.start(node_id)
        await eventually(lambda: ready(cluster), timeout=60)

        async def recalled() -> bool:
            async with cluster.client("node-2") as http:
                for agent in AGENTS:
                    r = await http.post("/v1/memory/recall", json={"agent_id": agent, "query": f"{agent} likes tea 1",
                                                                   "top_k": 1, "routing": "vector"})
                    if r.status_code != 200 or r.json()["memories"][0]["content"] != f"{agent} likes tea 1":
                        return False
            return True

        assert await recalled()  # at once: old shards are queried with their old embedder

        def switched() -> bool:
            for node in cluster.nodes.values():
                assert node.memory is not None
                for agent in AGENTS:
                    sid = node.memory.shards.shard_of(agent)
                    shard = node.memory.shards.shards.get(sid)
                    if shard is not None and shard.agents and (shard.embedder, shard.dim) != ("hashing:384", 384):
                        return False
            return True

        await eventually(switched, timeout=120)
        await eventually_async(recalled, timeout=30)
        for agent in AGENTS:
            copies = []
            for node in cluster.nodes.values():
                assert node.memory is not None
                shard = node.memory.shards.shards.get(node.memory.shards.shard_of(agent))
                if shard is not None and agent in shard.agents:
                    copies.append(shard.agents[agent].vectors)
            assert len(copies) >= 2 and all(c == copies[0] for c in copies)  # the primary's, everywhere
        for node in cluster.nodes.values():
            assert node.reembedder is not None and node.reembedder.progress().shards_remaining == 0
        # primaries embedded every memory once; replicas took their vectors from the records
        assert sum(n.reembedder.done for n in cluster.nodes.values() if n.reembedder) >= len(AGENTS) * 3
