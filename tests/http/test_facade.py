"""HTTP facade in-process (ASGI): health, metrics, the JSON error shape, auth, admin mounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dakera_actors import Config, Node, open_node

KEY = "root-key-for-tests"


@asynccontextmanager
async def node_client(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    cfg = Config(data_dir=tmp_path / "data", node_id="node-t", **config)
    async with open_node(cfg, serve_http=False) as node:
        transport = httpx.ASGITransport(app=node.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            yield node, client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "code"} and body["code"] == code
    assert "Traceback" not in response.text
    return body


async def test_health_endpoints(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (node, client):
        r = await client.get("/health")
        assert r.status_code == 200
        health = r.json()
        assert {k: health[k] for k in ("status", "healthy", "node_id", "version")} == {
            "status": "healthy", "healthy": True, "node_id": "node-t", "version": "0.1.0"}
        assert isinstance(health["uptime_seconds"], int) and health["uptime_seconds"] >= 0
        live = await client.get("/health/live")
        assert live.status_code == 200 and live.json()["alive"] is True and live.json()["node_id"] == "node-t"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["ready"] is True
        assert ready.json()["checks"] == {"storage": True, "accepting": True} == ready.json()["components"]
        # a gate closed after start: not ready, and /health says degraded (still 200: the process is up)
        node.readiness.require("shard_map")
        not_ready = await client.get("/health/ready")
        assert_error(not_ready, 503, "SERVICE_UNAVAILABLE")
        assert not_ready.json()["waiting_for"] == ["shard_map"] and not_ready.json()["ready"] is False
        assert not_ready.json()["checks"] == {"storage": True, "shard_map": False, "accepting": True}
        degraded = await client.get("/health")
        assert degraded.status_code == 200
        assert degraded.json()["status"] == "degraded" and degraded.json()["healthy"] is False


async def test_metrics_are_valid_prometheus_text_with_the_seed_five(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        await client.get("/health")
        for path in ("/metrics", "/v1/ops/metrics"):
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(r.text)}
            for name in ("dakera_gossip_members", "dakera_replication_lag_ms", "dakera_shard_balance",
                         "dakera_leader_lease_remaining_ms", "dakera_forwarded_requests",
                         "dakera_wire_rejected", "dakera_http_request_duration_seconds",
                         "dakera_under_replicated_shards", "dakera_replication_records"):
                assert name in families, name
            assert "dakera_forwarded_requests_total" in r.text
            health = [s for s in families["dakera_http_request_duration_seconds"].samples
                      if s.name.endswith("_count") and s.labels["route"] == "/health"]
            assert health and health[0].value >= 1


async def test_a_single_node_reports_replication_as_one_copy(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        for prefix in ("/admin", "/v1/admin"):
            r = await client.get(prefix + "/cluster/replication")
            assert r.status_code == 200
            assert r.json()["under_replicated_shards"] == 0 and r.json()["lag_ms"] == 0


async def test_unknown_route_and_method(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        assert_error(await client.get("/no/such/route"), 404, "ROUTE_NOT_FOUND")
        assert_error(await client.post("/health"), 405, "METHOD_NOT_ALLOWED")


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with node_client(tmp_path, max_body_bytes=2048) as (_, client):
        body = assert_error(await client.post("/admin/cluster/rebalance", content=b"x" * 4096), 413,
                            "PAYLOAD_TOO_LARGE")
        assert "2048" in body["error"]


async def test_auth_required_everywhere_but_health(tmp_path: Path) -> None:
    async with node_client(tmp_path, root_api_key=KEY) as (_, client):
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
        for path in ("/metrics", "/admin/cluster/status", "/v1/admin/cluster/nodes", "/no/such/route"):
            missing = await client.get(path)
            assert_error(missing, 401, "AUTHENTICATION_REQUIRED")
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert_error(await client.get(path, headers={"Authorization": "Bearer wrong"}), 401,
                         "INVALID_API_KEY")
            assert_error(await client.get(path, headers={"Authorization": f"Basic {KEY}"}), 401,
                         "AUTHENTICATION_REQUIRED")
        ok = await client.get("/admin/cluster/status", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        # authenticated requests to unknown routes get the honest 404
        assert_error(await client.get("/nope", headers={"Authorization": f"Bearer {KEY}"}), 404,
                     "ROUTE_NOT_FOUND")


async def test_admin_routes_exist_at_both_prefixes(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (node, client):
        for path in ("/cluster/status", "/cluster/nodes"):
            seed, sdk = await client.get("/admin" + path), await client.get("/v1/admin" + path)
            assert seed.status_code == sdk.status_code == 200
            assert seed.json() == sdk.json()
        status = (await client.get("/admin/cluster/status")).json()
        assert status["node_id"] == "node-t" and status["shard_count"] == 64
        for key in ("status", "leader", "fencing_token", "lease_remaining_ms", "nodes", "alive",
                    "replication_factor", "shard_map_version", "shard_distribution", "shard_balance",
                    "unassigned_shards"):
            assert key in status
        nodes = (await client.get("/admin/cluster/nodes")).json()
        assert [n["id"] for n in nodes] == ["node-t"] and nodes[0]["state"] == "Alive"


async def test_every_response_names_the_serving_node(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        assert (await client.get("/health")).headers["x-dakera-node"] == "node-t"
        assert (await client.get("/missing")).headers["x-dakera-node"] == "node-t"


async def test_unexpected_exception_is_a_json_500_without_traceback(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (node, client):
        @node.app.get("/boom")  # type: ignore[union-attr]
        async def boom() -> None:
            raise RuntimeError("secret internals")

        r = await client.get("/boom")
        body = assert_error(r, 500, "INTERNAL_ERROR")
        assert "secret" not in r.text and "see the node's log" in body["error"]


@pytest.mark.parametrize("garbage", [b"{", b"\xff\xfe", b"[1,2", b"nul"])
async def test_json_body_helper_rejects_malformed_json(tmp_path: Path, garbage: bytes) -> None:
    from dakera_actors.api.responses import json_body, json_response

    async with node_client(tmp_path) as (node, client):
        @node.app.post("/echo")  # type: ignore[union-attr]
        async def echo() -> Any:
            return json_response({"got": await json_body()})

        body = assert_error(await client.post("/echo", content=garbage), 400, "INVALID_REQUEST")
        assert "malformed JSON" in body["error"]
        assert (await client.post("/echo", json={"a": 1})).json() == {"got": {"a": 1}}
        assert_error(await client.post("/echo"), 400, "INVALID_REQUEST")


async def test_node_id_is_persisted_in_the_data_dir(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path / "d")
    async with open_node(cfg, serve_http=False) as first:
        generated = first.node_id
    assert generated.startswith("node-")
    async with open_node(cfg, serve_http=False) as second:
        assert second.node_id == generated


async def test_data_dir_is_locked_against_a_second_node(tmp_path: Path) -> None:
    from dakera_actors.node import DataDirLocked

    cfg = Config(data_dir=tmp_path / "d")
    async with open_node(cfg, serve_http=False):
        with pytest.raises(DataDirLocked):
            async with open_node(cfg, serve_http=False):
                pass
    async with open_node(cfg, serve_http=False):  # released on stop
        pass
