"""A single node over the cold tier (MockClock, a simulated disk, an in-memory store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from dakera_actors import Config, Node, open_node
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.storage.objects import ObjectStoreUnusable
from dakera_actors.wal.memory import SimDisk

from ..embedcount import count_embeddings
from ..waiting import eventually


@asynccontextmanager
async def node_on(tmp_path: Path, bucket: MemoryObjectStore, disk: SimDisk,
                  **config: object) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    cfg = Config(data_dir=tmp_path / "data", node_id="solo", shards=4, **config)  # type: ignore[arg-type]
    async with open_node(cfg, serve_http=False, disk=disk, objects=bucket) as node:
        await eventually(lambda: node.readiness.ready, timeout=30)
        transport = httpx.ASGITransport(app=node.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            yield node, client


def caught_up(node: Node) -> bool:
    assert node.archiver is not None and node.memory is not None
    return all(node.archiver.core.shards[s].archived == shard.seq
               for s, shard in node.memory.shards.shards.items() if shard.seq)


async def test_a_single_node_on_an_empty_disk_restores_every_shard_from_the_archive(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = count_embeddings(monkeypatch)
    bucket = MemoryObjectStore()
    async with node_on(tmp_path, bucket, SimDisk("a")) as (node, client):
        for i in range(30):
            r = await client.post("/v1/memory/store", json={"agent_id": f"a{i % 5}", "content": f"c{i}", "id": f"m{i}"})
            assert r.status_code == 200
        r = await client.post("/v1/memory/forget", json={"agent_id": "a1", "memory_ids": ["m1"]})
        assert r.status_code == 200
        for agent in ("a0", "a2"):
            assert (await client.post("/v1/sessions/start", json={"agent_id": agent, "session_id": "s"})).status_code == 200
        await client.post("/v1/sessions/a2~s/end", json={"summary": "archived"})
        sessions_then = [(await client.get(f"/v1/sessions/{sid}")).json() for sid in ("a0~s", "a2~s")]
        await eventually(lambda: caught_up(node), timeout=10)
        assert node.memory is not None
        with_data = sum(1 for shard in node.memory.shards.shards.values() if shard.seq)
    (tmp_path / "data").rename(tmp_path / "lost")  # a new machine: nothing of the old data dir
    async with node_on(tmp_path, bucket, SimDisk("b")) as (node, client):
        assert node.seeder is not None and node.seeder.counters.restores == with_data > 1
        for i in range(30):
            got = await client.get(f"/v1/memory/get/m{i}", params={"agent_id": f"a{i % 5}"})
            assert got.status_code == (404 if i == 1 else 200), (i, got.text)
        assert [(await client.get(f"/v1/sessions/{sid}")).json() for sid in ("a0~s", "a2~s")] == sessions_then
        # and it archives under a newer term, which the next restore prefers
        r = await client.post("/v1/memory/store", json={"agent_id": "a0", "content": "later", "id": "later"})
        assert r.status_code == 200
        await eventually(lambda: caught_up(node), timeout=10)
    (tmp_path / "data").rename(tmp_path / "lost-again")
    async with node_on(tmp_path, bucket, SimDisk("c")) as (node, client):
        got = await client.get("/v1/memory/get/later", params={"agent_id": "a0"})
        assert got.status_code == 200
    assert sum(embedded) == 31  # the stores only: the archive carries the vectors, restores embed nothing


async def test_a_node_with_another_shard_count_refuses_the_archive(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    async with node_on(tmp_path, bucket, SimDisk("a")):
        pass
    cfg = Config(data_dir=tmp_path / "other", node_id="solo", shards=8)
    with pytest.raises(ObjectStoreUnusable, match="DAKERA_SHARDS"):
        async with open_node(cfg, serve_http=False, disk=SimDisk("b"), objects=bucket):
            pass


async def test_a_node_starts_only_once_it_can_read_the_archive_and_then_replays_its_own_wal(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    disk = SimDisk("a")
    async with node_on(tmp_path, bucket, disk) as (node, client):
        r = await client.post("/v1/memory/store", json={"agent_id": "a", "content": "kept", "id": "k"})
        assert r.status_code == 200
    bucket.faults.outage = True  # the archive is unreadable, and not needed
    with pytest.raises(ObjectStoreUnusable, match="DAKERA_STORAGE: the archive cannot be read"):
        async with node_on(tmp_path, bucket, disk):
            pass
    bucket.faults.outage = False
    async with node_on(tmp_path, bucket, disk) as (node, client):
        assert node.seeder is not None and node.seeder.counters.restores == 0
        assert (await client.get("/v1/memory/get/k", params={"agent_id": "a"})).status_code == 200
