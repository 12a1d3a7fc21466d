"""One embedder per cluster, in an in-process cluster (MockClock): a node configured with another
DAKERA_EMBEDDER refuses to join, stops itself, owns no shard, and the cluster keeps serving."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.search import make_embedder
from dakera_actors.testing import open_cluster

from ..waiting import eventually
from .test_routing import ready

MockClock = trio.testing.MockClock
DEFAULT = make_embedder("wordllama").identity  # the cluster's (the default embedder)


async def test_a_node_with_another_embedder_is_refused_and_the_cluster_keeps_serving(
        autojump_clock: MockClock) -> None:
    odd = {"node-4": {"embedder": "hashing:256"}}  # the others: hashing (384 dimensions)
    async with open_cluster(4, seed=41, start=3, node_config=odd) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        async with cluster.client("node-1") as http:
            for i in range(6):
                r = await http.post("/v1/memory/store", json={"agent_id": f"agent-{i}", "content": f"tea fact {i}"})
                assert r.status_code == 200, r.text
        newcomer = await cluster.start("node-4")
        await eventually(lambda: cluster.slot("node-4").node is None, timeout=30)  # it stopped itself
        assert newcomer.refused is not None
        assert "DAKERA_EMBEDDER" in newcomer.refused and f"'{DEFAULT}'" in newcomer.refused
        for node_id in ("node-1", "node-2", "node-3"):
            smap = cluster.node(node_id).shard_map.view.value  # type: ignore[union-attr]
            assert smap is not None and "node-4" not in smap.members()
            assert cluster.node(node_id).refused is None
        for via in ("node-1", "node-2", "node-3"):
            async with cluster.client(via) as http:
                r = await http.post("/v1/memory/recall", json={"agent_id": "agent-3", "query": "tea fact 3"})
                assert r.status_code == 200, r.text
                assert r.json()["memories"][0]["content"] == "tea fact 3"


async def test_started_together_the_odd_one_out_refuses(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=42, node_config={"node-3": {"embedder": "hashing:256"}}) as cluster:
        odd = cluster.node("node-3")
        await eventually(lambda: cluster.slot("node-3").node is None, timeout=30)
        assert odd.refused is not None and f"'{DEFAULT}'" in odd.refused

        for node_id in ("node-1", "node-2"):
            assert cluster.node(node_id).refused is None
