"""Routing in an in-process cluster (MockClock): any node answers any request, owners serve."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually

MockClock = trio.testing.MockClock


def ready(cluster: Cluster) -> bool:
    maps = {(m.token, m.version) if (m := n.shard_map.view.value) else None  # type: ignore[union-attr]
            for n in cluster.nodes.values()}
    return len(maps) == 1 and None not in maps and all(n.readiness.ready for n in cluster.nodes.values())


async def test_writes_and_reads_through_any_node_land_on_owners(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=1) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None
        stored: dict[str, str] = {}
        for i in range(30):
            via = cluster.ids[i % 3]
            async with cluster.client(via) as http:
                r = await http.post("/v1/memory/store", json={"agent_id": f"agent-{i}", "content": f"fact {i} about tea"})
                assert r.status_code == 200, r.text
                stored[f"agent-{i}"] = r.json()["memory"]["id"]
                owner = smap.owner(shard_of(f"agent-{i}", 64))
                assert r.headers["x-dakera-owner"] == f"http://{owner}"
        # the data sits on the owner only, and every node returns the same answers
        for agent, mid in stored.items():
            owner = smap.owner(shard_of(agent, 64))
            assert cluster.node(owner).memory.shards.get(agent, mid, 1e12) is not None  # type: ignore[union-attr]
            answers = []
            for via in cluster.ids:
                async with cluster.client(via) as http:
                    got = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
                    rec = await http.post("/v1/memory/recall", json={"agent_id": agent, "query": "tea"})
                assert got.status_code == 200 and rec.status_code == 200
                answers.append((got.json(), [m["id"] for m in rec.json()["memories"]]))
            assert all(a == answers[0] for a in answers)
        forwarded = sum(n.metrics.sample("dakera_forwarded_requests_total") for n in cluster.nodes.values())
        assert forwarded > 0
        # errors come back from the owner unchanged
        async with cluster.client("node-1") as http:
            missing = await http.get("/v1/memory/get/nope", params={"agent_id": "agent-5"})
            assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
            listed = (await http.get("/v1/agents")).json()
        assert sorted(a["agent_id"] for a in listed) == sorted(stored)


async def test_an_unreachable_owner_is_a_clean_503(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=2, config={"request_timeout": 2.0}) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None
        agent = next(f"agent-{i}" for i in range(1000) if smap.owner(shard_of(f"agent-{i}", 64)) == "node-3")
        cluster.partition(["node-1", "node-2"], ["node-3"])  # node-3 is still believed alive for a while
        async with cluster.client("node-1") as http:
            started = trio.current_time()
            r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": "x"})
            assert r.status_code == 503 and r.json()["code"] == "SERVICE_UNAVAILABLE"
            assert "node-3" in r.json()["error"]
            assert trio.current_time() - started <= 2.5  # bounded by the request timeout, not a hang


async def test_the_same_forwarded_write_delivered_twice_is_applied_once(autojump_clock: MockClock) -> None:
    import json

    from dakera_actors.routing.messages import Forward

    async with open_cluster(3, seed=21) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None
        agent = next(f"agent-{i}" for i in range(1000) if smap.owner(shard_of(f"agent-{i}", 64)) == "node-2")
        sender = cluster.node("node-1").endpoint
        assert sender is not None

        def forward(content: str, request_id: str) -> Forward:
            body = json.dumps({"agent_id": agent, "content": content}).encode()
            return Forward("store", body, {}, map_version=smap.version, request_id=request_id)

        first = await sender.request(cluster.address("node-2"), forward("tea", "node-1/abc"))
        again = await sender.request(cluster.address("node-2"), forward("tea", "node-1/abc"))
        assert first.message.status == 200 and again.message == first.message
        owner = cluster.node("node-2").memory
        assert owner is not None
        assert owner.agent_stats(agent)["total_memories"] == 1
        # a different id is a different write (so the test above means something)
        await sender.request(cluster.address("node-2"), forward("tea", "node-1/def"))
        assert owner.agent_stats(agent)["total_memories"] == 2
        # and writes taken from HTTP and forwarded carry an id
        async with cluster.client("node-1") as http:
            r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": "coffee"})
            assert r.status_code == 200
        assert len(cluster.node("node-2").router.applied) == 3  # type: ignore[union-attr]
        # ids expire: memory stays bounded
        await trio.sleep(cluster.node("node-2").router.applied.ttl + 1)  # type: ignore[union-attr]
        await sender.request(cluster.address("node-2"), forward("x", "node-1/late"))
        assert len(cluster.node("node-2").router.applied) == 1  # type: ignore[union-attr]


async def test_a_forward_larger_than_the_unauthenticated_limit_goes_through(autojump_clock: MockClock) -> None:
    import json

    from dakera_actors.endpoint import UNAUTHENTICATED_FRAME_LIMIT
    from dakera_actors.routing.messages import Forward

    async with open_cluster(2, seed=22) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None
        agent = next(f"agent-{i}" for i in range(1000) if smap.owner(shard_of(f"agent-{i}", 64)) == "node-2")
        async with cluster.client("node-1") as http:  # over HTTP, forwarded on a fresh stream
            r = await http.post("/v1/memories/store/batch", json={"agent_id": agent, "memories": [
                {"content": f"{i} " + "y" * 30_000} for i in range(4)]})
            assert r.status_code == 200, r.text
        body = json.dumps({"agent_id": agent, "content": "z" * 99_000}).encode()
        assert len(body) > UNAUTHENTICATED_FRAME_LIMIT
        node1 = cluster.node("node-1").endpoint
        assert node1 is not None
        node1._idle.clear()  # a fresh stream: the hello path, not a pooled stream
        reply = await node1.request(cluster.address("node-2"), Forward("store", body, {}, map_version=smap.version))
        assert reply.message.status == 200
        assert cluster.node("node-2").memory.agent_stats(agent)["total_memories"] == 5  # type: ignore[union-attr]
