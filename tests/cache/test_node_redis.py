"""``node.redis``: opened at start from DAKERA_REDIS_URL, never fatal when Redis is not there (the
node serves without the cache and says so), reported as ``dakera_redis_connected``, closed on stop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from tests.cache.conftest import RedisServer, refused_port
from tests.http.test_memory_api import memory_node, store
from tests.waiting import eventually


async def test_a_node_with_an_unreachable_redis_starts_serves_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        async with memory_node(tmp_path, redis_url=f"redis://127.0.0.1:{refused_port()}/0") as (node, client):
            assert node.redis is not None and not node.redis.healthy.value
            assert node.metrics.sample("dakera_redis_connected") == 0
            memory = await store(client, "a1", "likes tea")
            got = await client.get(f"/v1/memory/get/{memory['id']}", params={"agent_id": "a1"})
            assert got.status_code == 200 and got.json()["content"] == "likes tea"
            assert (await client.get("/health/ready")).status_code == 200
    [warning] = [r for r in caplog.records if r.getMessage() == "redis_unavailable"]
    assert warning.levelno == logging.WARNING and warning.node == "node-m"  # type: ignore[attr-defined]


async def test_a_node_without_a_url_has_no_client(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (node, _client):
        assert node.redis is None
        assert node.metrics.sample("dakera_redis_connected") == 0


@pytest.mark.real
async def test_a_node_connects_reports_it_and_closes_the_client_on_stop(tmp_path: Path,
                                                                        redis_server: RedisServer) -> None:
    async with memory_node(tmp_path, redis_url=redis_server.url, redis_timeout_ms=200) as (node, _client):
        redis = node.redis
        assert redis is not None and redis.healthy.value and redis.timeout == 0.2
        assert node.metrics.sample("dakera_redis_connected") == 1
        await redis.set("k", b"v", ttl=node.config.cache_ttl_seconds)
        assert redis_server.sync().ttl("k") == 300
        redis_server.kill()
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)
        assert node.metrics.sample("dakera_redis_connected") == 0
        redis_server.start()
        with trio.fail_after(5):
            await redis.healthy.wait_for(bool)
        assert node.metrics.sample("dakera_redis_connected") == 1
        clients_before = len(redis_server.sync().client_list())
        assert clients_before >= 2  # the node's pooled connection and this look
    assert node.metrics.sample("dakera_redis_connected") == 0
    # only this look's own connection: the node's pool is closed (the server sees it soon after)
    await eventually(lambda: len(redis_server.sync().client_list()) == 1, timeout=5)
