"""A single node in-process (ASGI): ops stats count what was stored, diagnostics, and the admin
answers a node without a cluster gives (maintenance status is ``active``, not a 409)."""

from __future__ import annotations

from pathlib import Path

from .test_facade import assert_error, node_client


async def test_ops_stats_count_what_was_stored(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        empty = (await client.get("/v1/ops/stats")).json()
        assert (empty["total_vectors"], empty["namespace_count"], empty["state"], empty["partial"]) == (
            0, 0, "healthy", False)
        for i in range(7):
            r = await client.post("/v1/memory/store", json={"agent_id": f"agent-{i % 3}", "content": f"fact {i}"})
            assert r.status_code == 200, r.text
        ids = (await client.post("/v1/memory/store", json={"agent_id": "gone", "content": "x"})).json()["memory"]["id"]
        assert (await client.post("/v1/memory/forget", json={"agent_id": "gone", "memory_ids": [ids]})).status_code == 200
        r = await client.get("/v1/ops/stats")
        assert r.status_code == 200
        stats = r.json()
        assert stats["total_vectors"] == stats["total_memories"] == 7
        assert stats["namespace_count"] == stats["agent_count"] == 3  # an agent with nothing left is no namespace
        assert isinstance(stats["uptime_seconds"], int) and isinstance(stats["timestamp"], int)
        assert stats["version"] == "0.1.0" and stats["node_id"] == "node-t" and "unavailable" not in stats
        status = (await client.get("/v1/admin/cluster/status")).json()
        assert (status["total_vectors"], status["namespace_count"], status["node_count"]) == (7, 3, 1)
        assert status["cluster_id"] and status["healthy"] is True and status["state"] == status["status"] == "healthy"
        shards = (await client.get("/v1/admin/cluster/shards")).json()
        assert shards["total"] == 64 and sum(s["vector_count"] for s in shards["shards"]) == 7
        assert {s["primary_node"] for s in shards["shards"]} == {"node-t"}
        replication = (await client.get("/v1/admin/cluster/replication")).json()
        assert replication["total_nodes"] == 1
        assert replication["replication_lag"] == [{"node_id": "node-t", "lag_ms": 0, "status": "healthy",
                                                   "lag_records": 0, "shards": 0}]


async def test_diagnostics_show_the_nodes_view_and_the_typed_sdks_fields(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        await client.post("/v1/memory/store", json={"agent_id": "a", "content": "written to the WAL"})
        r = await client.get("/ops/diagnostics")
        assert r.status_code == 200
        d = r.json()
        assert d["node_id"] == "node-t" and d["ready"] is True and d["cluster_mode"] is False
        assert [m["id"] for m in d["members"]] == ["node-t"]
        assert d["wal"]["records_appended"] == 1 and d["storage"]["memories_held"] == 1
        assert d["storage"]["disk_used_bytes"] > 0 and d["disk_used_bytes"] == d["storage"]["disk_used_bytes"]
        assert d["system"]["pid"] > 0 and isinstance(d["system"]["uptime_seconds"], int)
        assert d["resources"]["memory_bytes"] > 0 and d["resources"]["open_fds"] > 0
        assert set(d["components"]) == {"storage", "search_engine", "cache", "grpc"}
        assert d["components"]["storage"]["healthy"] is True and d["components"]["grpc"]["healthy"] is False
        assert d["shard_map"]["shards"] == 64 and d["replication"]["replication_factor"] == 1


async def test_a_single_node_answers_maintenance_status_and_refuses_what_needs_a_cluster(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        for path in ("/admin/maintenance/status", "/v1/admin/cluster/maintenance", "/v1/admin/maintenance/status"):
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            m = r.json()
            assert m["status"] == "active" and m["maintenance"] is False and m["enabled"] is False
            assert m["node_id"] == "node-t" and m["nodes_in_maintenance"] == [] and m["rejecting_requests"] is False
            assert m["reason"] is None and m["enabled_at"] is None and m["scheduled_end"] is None
        # draining a lone node has nowhere to go; a rebalance finds nothing to move
        assert_error(await client.post("/v1/admin/cluster/maintenance/enable", json={"reason": "x"}), 409, "CONFLICT")
        r = await client.post("/v1/admin/cluster/shards/rebalance", json={"shard_ids": ["shard-1", 2]})
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in ("moved", "plan", "initiated", "planned_moves", "total_shards")} == {
            "moved": 0, "plan": [], "initiated": False, "planned_moves": [], "total_shards": 64}
        # a bad shard id is a 400 naming the field whatever the mode
        bad = assert_error(await client.post("/v1/admin/cluster/shards/rebalance", json={"shard_ids": ["shard-x"]}),
                           400, "INVALID_REQUEST")
        assert bad["field"] == "shard_ids" and "shard-x" in bad["error"]
        assert (await client.get("/v1/admin/cluster/maintenance")).json()["enabled"] is False


async def test_health_is_degraded_while_rejecting_requests_in_maintenance(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (node, client):
        node.readiness.rejecting = True
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded" and health["healthy"] is False
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False
        # operators still read the ops routes of a node that turns clients away
        assert (await client.get("/v1/ops/stats")).status_code == 200
        assert_error(await client.post("/v1/memory/recall", json={"agent_id": "a", "query": "x"}), 503,
                     "SERVICE_UNAVAILABLE")
        node.readiness.rejecting = False
        assert (await client.get("/health")).json()["status"] == "healthy"
