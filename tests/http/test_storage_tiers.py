"""``GET /v1/admin/storage/tiers`` read by the official SDK (its own client and models, over the
node's ASGI app), and the cold tier's states shown through a fake archiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
from dakera import AsyncDakeraClient, AuthenticationError, StorageTierOverview

from dakera_actors import Config, Node, open_node
from dakera_actors.api.admin_views import storage_tiers
from dakera_actors.api.deps import FacadeDeps
from dakera_actors.cold.stats import BEHIND_SECONDS, ColdTierStats
from dakera_actors.log import get_logger
from dakera_actors.metrics import NodeMetrics
from dakera_actors.runtime.offload import Offload
from dakera_actors.runtime.readiness import Readiness
from tests.waiting import eventually

KEY = "tiers-test-root-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@attrs.define
class FakeTier:
    figures: ColdTierStats

    def stats(self) -> ColdTierStats:
        return self.figures


@asynccontextmanager
async def node_and_sdk(tmp_path: Path, key: str = KEY, data: str = "data",
                       **config: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient, AsyncDakeraClient]]:
    cfg = Config(data_dir=tmp_path / data, node_id="node-t", root_api_key=KEY, **config)
    async with open_node(cfg, serve_http=False) as node:
        transport = httpx.ASGITransport(app=node.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=AUTH) as raw:
            sdk = AsyncDakeraClient("http://node", api_key=key, max_retries=1)
            # the SDK's own request path and models, carried in-process instead of over a socket
            sdk._client = httpx.AsyncClient(transport=transport, headers=dict(sdk._client.headers))
            try:
                yield node, raw, sdk
            finally:
                await sdk._client.aclose()


def tier(overview: StorageTierOverview, name: str) -> Any:
    [found] = [t for t in overview.architecture if t.name == name]
    return found


async def test_the_sdk_reads_every_field_of_the_three_tiers(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path) as (node, raw, sdk):
        ids = []
        for text in ("likes tea", "lives in Lyon", "plays chess"):
            r = await raw.post("/v1/memory/store", json={"agent_id": "tier-agent", "content": text})
            assert r.status_code in (200, 201), r.text
            ids.append(r.json()["memory"]["id"])
        assert (await raw.get(f"/v1/memory/get/{ids[0]}", params={"agent_id": "tier-agent"})).status_code == 200
        assert (await raw.post("/v1/memory/recall", json={"agent_id": "tier-agent", "query": "tea"})).status_code == 200
        overview = await sdk.storage_tier_overview()
        assert [t.name for t in overview.architecture] == ["hot", "warm", "cold"]
        hot, warm, cold = tier(overview, "hot"), tier(overview, "warm"), tier(overview, "cold")
        assert (hot.current_count, hot.hit_count, hot.hit_rate, hot.status) == (3, 2, 1.0, "healthy")
        assert (warm.current_count, warm.hit_rate) == (3, 0.0)
        assert overview.tiers_enabled is True and cold.status == "healthy"
        assert cold.technology == "local filesystem"
        assert overview.activity.storage_backend == "filesystem"
        assert overview.activity.demotions_to_warm == 3  # three records written to the WAL
        assert overview.config.hot_to_warm_threshold_secs == 0 and overview.config.warm_to_cold_threshold_secs == 1
        body = (await raw.get("/v1/admin/storage/tiers")).json()
        assert body["config"]["storage_location"] == str(tmp_path / "data" / "objects")
        assert body["config"]["cold_flush_ms"] == 1000 and body["config"]["cold_backlog_bytes"] == 268435456
        assert (await raw.get("/admin/storage/tiers")).json() == body  # the seed's path too
        # a failed read is not a hit
        await raw.get("/v1/memory/get/no-such-id", params={"agent_id": "tier-agent"})
        assert tier(await sdk.storage_tier_overview(), "hot").hit_count == 2


async def test_the_node_archiver_feeds_the_tiers_and_the_metrics(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path) as (node, raw, sdk):
        for text in ("likes tea", "lives in Lyon"):
            assert (await raw.post("/v1/memory/store", json={"agent_id": "arch-agent", "content": text})).is_success
        assert node.facade.cold is not None
        cold_tier = node.facade.cold

        def archived() -> bool:
            figures = cold_tier.stats()
            # every shard has its base (an empty one for a shard never written) and nothing waits
            return (figures.shards_archived == node.config.shards and figures.backlog_bytes == 0
                    and figures.lag_seconds == 0)

        await eventually(archived, timeout=20, interval=0.05)
        figures = cold_tier.stats()
        overview = await sdk.storage_tier_overview()
        cold = tier(overview, "cold")
        assert (cold.status, cold.current_count) == ("healthy", figures.shards_archived)
        assert overview.activity.demotions_to_cold == figures.objects_written
        metrics = node.metrics
        assert metrics.sample("dakera_cold_tier_uploads_total", outcome="ok") == figures.uploads_ok > 0
        assert metrics.sample("dakera_cold_tier_bytes_total", direction="up") > 0
        assert metrics.sample("dakera_cold_tier_lag_seconds") == 0 and metrics.sample("dakera_cold_tier_circuit_open") == 0


async def test_the_tiers_need_the_api_key(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path, key="wrong-key") as (_, raw, sdk):
        try:
            await sdk.storage_tier_overview()
        except AuthenticationError:
            pass
        else:
            raise AssertionError("the tiers answered without the API key")
        assert (await raw.get("/admin/storage/tiers", headers={"Authorization": ""})).status_code == 401


async def test_the_cold_tier_states_come_from_the_archiver(tmp_path: Path) -> None:
    healthy = ColdTierStats("filesystem", str(tmp_path / "objects"), 1000, 1 << 28, shards_archived=5,
                            objects_written=12, bytes_written=4096, bytes_read=512, uploads_ok=12, uploads_failed=1,
                            restores=2, lag_seconds=0.4, backlog_bytes=128, last_upload_at=1_700_000_000.0)
    fake = FakeTier(healthy)
    async with node_and_sdk(tmp_path) as (node, raw, sdk):
        node.facade.cold = fake
        overview = await sdk.storage_tier_overview()
        cold = tier(overview, "cold")
        assert overview.tiers_enabled is True and overview.config.auto_tier_enabled is True
        assert (cold.status, cold.current_count, cold.hit_count, cold.hit_rate) == ("healthy", 5, 2, 0.0)
        assert overview.activity.demotions_to_cold == 12 and overview.activity.promotions_to_hot == 2
        activity = (await raw.get("/v1/admin/storage/tiers")).json()["activity"]
        assert (activity["uploads_ok"], activity["uploads_failed"], activity["backlog_bytes"]) == (12, 1, 128)
        assert activity["last_upload_at"] == 1_700_000_000.0 and activity["behind"] is False
        assert (await raw.get("/admin/cluster/status")).json()["status"] == "healthy"

        fake.figures = attrs.evolve(healthy, lag_seconds=BEHIND_SECONDS + 5, backlog_bytes=1 << 20)
        assert tier(await sdk.storage_tier_overview(), "cold").status == "degraded"
        status = (await raw.get("/v1/admin/cluster/status")).json()
        assert status["status"] == "degraded" and status["archive_behind"] == ["node-t"]

        fake.figures = attrs.evolve(healthy, circuit_open=True)
        assert tier(await sdk.storage_tier_overview(), "cold").status == "down"
        assert (await raw.get("/v1/admin/storage/tiers")).json()["activity"]["circuit_open"] is True


def test_the_config_never_shows_credentials(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, storage="s3", s3_endpoint="http://user:pa55word@minio.local:9000/",
                    s3_access_key="AKIDNEVERSHOWN", s3_secret_key="SecretNeverShown", s3_prefix="team-a")
    deps = FacadeDeps(config, "n1", NodeMetrics(), get_logger("test"), Offload(1, inline=True), Readiness())
    view = storage_tiers(deps)
    text = repr(view)
    assert "AKIDNEVERSHOWN" not in text and "SecretNeverShown" not in text and "pa55word" not in text
    assert view["config"]["s3_endpoint"] == "http://minio.local:9000/"
    assert view["config"]["storage_location"] == "s3://dakera/team-a"
    assert tier(StorageTierOverview.from_dict(view), "cold").technology == "S3-compatible object storage"


async def test_a_node_restored_from_the_archive_counts_the_restores_as_cold_hits(tmp_path: Path) -> None:
    shared = tmp_path / "objects"  # as a bucket would be: the second node starts on an empty disk
    async with node_and_sdk(tmp_path, data="first", storage_path=shared) as (node, raw, _):
        stored = await raw.post("/v1/memory/store", json={"agent_id": "kept-agent", "content": "survives the disk"})
        memory_id = stored.json()["memory"]["id"]
        cold_tier = node.facade.cold
        assert cold_tier is not None

        def archived() -> bool:
            figures = cold_tier.stats()
            # every shard has its base (an empty one for a shard never written) and nothing waits
            return (figures.shards_archived == node.config.shards and figures.backlog_bytes == 0
                    and figures.lag_seconds == 0)

        await eventually(archived, timeout=20, interval=0.05)
    async with node_and_sdk(tmp_path, data="second", storage_path=shared) as (node, raw, sdk):
        got = await raw.get(f"/v1/memory/get/{memory_id}", params={"agent_id": "kept-agent"})
        assert got.status_code == 200 and got.json()["content"] == "survives the disk"
        cold = tier(await sdk.storage_tier_overview(), "cold")
        assert node.seeder is not None and cold.hit_count == node.seeder.counters.restores > 0
        activity = (await raw.get("/v1/admin/storage/tiers")).json()["activity"]
        assert activity["restores"] == cold.hit_count and activity["bytes_read"] > 0
        assert node.metrics.sample("dakera_cold_tier_bytes_total", direction="down") == activity["bytes_read"]
