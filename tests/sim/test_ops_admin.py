"""Ops stats, diagnostics and the cluster admin answers in an in-process cluster (MockClock): the
counts are the cluster's (each shard once, at its primary), a member that does not answer makes
them partial and named rather than silently short, and every admin answer carries the seed's
fields and the typed SDKs' names."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually, eventually_async
from .test_routing import ready

MockClock = trio.testing.MockClock
AGENTS = 12
PER_AGENT = 3


async def get(cluster: Cluster, via: str, path: str, **kwargs: Any) -> Any:
    async with cluster.client(via) as http:
        r = await http.get(path, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


async def store_everywhere(cluster: Cluster) -> dict[str, int]:
    stored: dict[str, int] = {}
    for i in range(AGENTS):
        agent = f"agent-{i}"
        async with cluster.client(cluster.ids[i % 3]) as http:
            for k in range(PER_AGENT):
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"fact {k} of {agent}"})
                assert r.status_code == 200, r.text
        stored[agent] = PER_AGENT
    return stored


async def counted_everywhere(cluster: Cluster) -> None:
    async def whole() -> bool:
        return all([not (await get(cluster, via, "/v1/ops/stats"))["partial"] for via in cluster.ids])

    await eventually_async(whole, timeout=60, interval=0.5)


async def test_ops_stats_counts_the_whole_cluster_and_says_when_partial(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=5, config={"request_timeout": 2.0}) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        await counted_everywhere(cluster)  # right after start primaries are still taking their shards over
        for via in cluster.ids:  # an empty cluster: zero
            empty = await get(cluster, via, "/v1/ops/stats")
            assert (empty["total_vectors"], empty["namespace_count"], empty["partial"]) == (0, 0, False)
        stored = await store_everywhere(cluster)
        for via in cluster.ids:
            stats = await get(cluster, via, "/v1/ops/stats")
            assert stats["total_vectors"] == stats["total_memories"] == AGENTS * PER_AGENT
            assert stats["namespace_count"] == stats["agent_count"] == len(stored)
            assert stats["state"] == "healthy" and stats["partial"] is False and "unavailable" not in stats
            assert stats["shards_counted"] == 64 and isinstance(stats["uptime_seconds"], int)
            assert isinstance(stats["timestamp"], int) and stats["version"]
            status = await get(cluster, via, "/v1/admin/cluster/status")
            assert (status["total_vectors"], status["namespace_count"]) == (AGENTS * PER_AGENT, len(stored))
        # node-3 cut off: what it leads is not counted, and the answer says so (never silently short)
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None
        led = set(smap.primaries_of("node-3"))
        lost_agents = [a for a in stored if shard_of(a, 64) in led]
        cluster.partition(["node-1", "node-2"], ["node-3"])
        stats = await get(cluster, "node-1", "/v1/ops/stats")
        assert cluster.node("node-1").shard_map.view.value == smap  # type: ignore[union-attr]
        assert stats["partial"] is True and stats["state"] == "degraded"
        assert [u["node_id"] for u in stats["unavailable"]] == ["node-3"]
        assert set(stats["missing_shards"]) == led and stats["shards_counted"] == 64 - len(led)
        assert lost_agents and stats["namespace_count"] == len(stored) - len(lost_agents)
        assert stats["total_vectors"] == (len(stored) - len(lost_agents)) * PER_AGENT
        cluster.heal()
        await counted_everywhere(cluster)
        healed = await get(cluster, "node-1", "/v1/ops/stats")
        assert (healed["total_vectors"], healed["namespace_count"]) == (AGENTS * PER_AGENT, len(stored))


async def test_admin_answers_carry_both_name_sets_in_a_cluster(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=6) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        await store_everywhere(cluster)
        await counted_everywhere(cluster)
        for via in cluster.ids:
            status = await get(cluster, via, "/v1/admin/cluster/status")
            assert status["status"] == status["state"] == "healthy" and status["healthy"] is True
            assert status["nodes"] == status["node_count"] == 3 and status["alive"] == 3
            assert status["cluster_id"] and status["version"] and isinstance(status["timestamp"], int)
            assert status["leader"] in cluster.ids and status["shard_count"] == 64
            ids = {(await get(cluster, v, "/admin/cluster/status"))["cluster_id"] for v in cluster.ids}
            assert len(ids) == 1  # one name, whichever node answers

            replication = await get(cluster, via, "/v1/admin/cluster/replication")
            assert replication["total_nodes"] == 3 and replication["replication_factor"] == 2
            assert {e["node_id"] for e in replication["replication_lag"]} == set(cluster.ids)
            for entry in replication["replication_lag"]:
                assert isinstance(entry["lag_ms"], int) and entry["status"] in ("healthy", "lagging", "unknown")
            assert "healthy_replicas" in replication and "under_replicated_shards" in replication

            shards = await get(cluster, via, "/v1/admin/cluster/shards")
            assert shards["total"] == 64 == len(shards["shards"])
            assert sum(s["vector_count"] for s in shards["shards"]) == AGENTS * PER_AGENT
            for n, s in enumerate(shards["shards"]):
                assert s["id"] == n and s["shard_id"] == f"shard-{n}"
                assert s["primary_node"] == s["primary"] and s["replica_nodes"] == s["replicas"]
                assert s["state"] == "active" and s["counted"] is True and isinstance(s["size_bytes"], int)
                assert s["namespace"] == ""

            maintenance = await get(cluster, via, "/v1/admin/cluster/maintenance")
            assert maintenance["status"] == "active" and maintenance["enabled"] is False
            assert maintenance["nodes_in_maintenance"] == [] and maintenance["rejecting_requests"] is False
            assert maintenance["reason"] is None and maintenance["enabled_at"] is None

            diagnostics = await get(cluster, via, "/ops/diagnostics")
            assert {m["id"] for m in diagnostics["members"]} == set(cluster.ids)
            assert diagnostics["shard_map"]["version"] == status["shard_map_version"]
            assert diagnostics["replication"]["replication_factor"] == 2
            assert diagnostics["wal"]["records_appended"] >= 0 and diagnostics["storage"]["shards_held"] > 0
            assert diagnostics["system"]["pid"] > 0 and diagnostics["components"]["storage"]["healthy"] is True

        # maintenance on one node: every status names it, with when it began
        async with cluster.client("node-2") as http:
            r = await http.post("/v1/admin/cluster/maintenance/enable",
                                json={"reason": "kernel patch", "duration_minutes": 30})
            assert r.status_code == 200, r.text
            on = r.json()
        assert on["enabled"] is True and on["reason"] == "kernel patch" and on["node_id"] == "node-2"
        assert on["enabled_at"] == on["since"] and isinstance(on["enabled_at"], int)
        assert on["scheduled_end"] == on["enabled_at"] + 1800 and on["rejecting_requests"] is False

        async def named() -> bool:
            m = await get(cluster, "node-1", "/v1/admin/cluster/maintenance")
            return bool(m["nodes_in_maintenance"] == ["node-2"])

        await eventually_async(named, timeout=60, interval=0.5)
        own = await get(cluster, "node-1", "/admin/maintenance/status")
        assert own["enabled"] is False and own["node_id"] == "node-1"  # its own status: not in maintenance
        async with cluster.client("node-1") as http:
            both = (await http.post("/admin/maintenance/enable", json={"node_ids": ["node-2"], "reason": "x"})).json()
        assert both["enabled"] is True and both["nodes_in_maintenance"] == ["node-2"]


async def test_rebalance_takes_shard_ids_in_every_sdk_form_and_refuses_bad_ones(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=7) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        version = cluster.node("node-1").shard_map.view.value.version  # type: ignore[union-attr]
        async with cluster.client("node-2") as http:
            for ids in ([0, 1], ["0", "1"], ["shard-0", "shard-1"], ["shard-0", 1]):
                r = await http.post("/v1/admin/cluster/shards/rebalance", json={"dry_run": True, "shard_ids": ids})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["initiated"] is False and body["total_shards"] == 64
                assert body["operation_id"].startswith("rebalance-") and body["shards_affected"] == len(body["plan"])
                assert body["planned_moves"] == [] and body["estimated_seconds"] == 0 and body["moved"] == 0
            for bad in (["shard-x"], ["shard-64"], [64], ["-1"], [True], [1.5], ["shard-"], [None], "shard-1"):
                r = await http.post("/admin/cluster/rebalance", json={"shard_ids": bad})
                assert r.status_code == 400, (bad, r.text)
                assert r.json()["code"] == "INVALID_REQUEST" and "shard_ids" in r.json()["error"]
            r = await http.post("/admin/cluster/rebalance", json={"shard_ids": [0]})  # balanced: nothing to move
            assert r.status_code == 200 and r.json()["initiated"] is False
        assert cluster.node("node-1").shard_map.view.value.version == version  # type: ignore[union-attr]
