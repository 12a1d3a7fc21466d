"""Re-embedding a node's data: memories written with hashing:256, the node restarted with
hashing:384 re-embeds every shard in the background; recall works before, during and after;
progress (``/ops/diagnostics`` ``embedding``, ``dakera_reembed_*``) reaches zero; a restart in
the middle goes on from where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from dakera_actors.node import Node
from dakera_actors.search import make_embedder
from dakera_actors.store import reembed
from dakera_actors.store.model import Memory

from ..waiting import eventually, eventually_async
from .test_memory_api import memory_node, store

AGENTS = {"ann": ["my daughter takes violin lessons", "we moved to Lisbon in May", "allergic to peanuts"],
          "bob": ["prefers dark mode in every editor", "runs a marathon each spring"],
          "cy": ["drinks green tea at four", "the cat is called Miso", "works on a compiler", "plays chess"]}
TOTAL = sum(len(v) for v in AGENTS.values())


async def top(client: httpx.AsyncClient, agent: str, query: str) -> tuple[str, list[str]]:
    r = await client.post("/v1/memory/recall", json={"agent_id": agent, "query": query, "top_k": 1,
                                                      "routing": "vector"})
    assert r.status_code == 200, r.text
    return r.json()["memories"][0]["content"], r.json().get("warnings", [])


async def recalls_everything(client: httpx.AsyncClient) -> None:
    for agent, contents in AGENTS.items():
        for content in contents:
            assert (await top(client, agent, content))[0] == content


def metric(node: Node, name: str) -> float:
    return node.metrics.sample(name)


async def embedding(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/ops/diagnostics")
    assert r.status_code == 200, r.text
    return r.json()["embedding"]


async def test_a_node_restarted_with_another_embedder_reembeds_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with memory_node(tmp_path, embedder="hashing:256") as (node, client):
        for agent, contents in AGENTS.items():
            for content in contents:
                await store(client, agent, content)
        assert (await embedding(client))["shards_remaining"] == 0
    # restarted with hashing:384, throttled so hard it stops after its first batch
    monkeypatch.setattr(reembed, "BATCH", 2)
    monkeypatch.setattr(reembed, "PAUSE", 10_000.0)
    async with memory_node(tmp_path, embedder="hashing:384") as (node, client):
        assert node.reembedder is not None
        await eventually(lambda: node.reembedder is not None and node.reembedder.done == 2, timeout=20)
        during = await embedding(client)
        assert during["embedder"] == "hashing:384" and during["shards_remaining"] == len(AGENTS)
        assert during["memories_remaining"] == TOTAL - 2 and during["memories_reembedded"] == 2
        assert metric(node, "dakera_reembed_shards_remaining") == len(AGENTS)
        await recalls_everything(client)  # queries of the old shards are embedded with hashing:256
        # an old embedder this node cannot build (a model gone): that shard's recall is BM25 only, said
        assert node.memory is not None
        node.memory.old_embedders["hashing:256"] = None
        found, warnings = await top(client, "cy", "the cat is called Miso")
        assert found == "the cat is called Miso" and any("BM25 only" in w for w in warnings)
        assert (await embedding(client))["bm25_only_shards"] == sorted(
            {node.memory.shards.shard_of(a) for a in AGENTS})
        del node.memory.old_embedders["hashing:256"]
        # a write now lands in its shard's old space, and is re-embedded like the rest
        await store(client, "bob", "keeps bees on the roof")
        AGENTS["bob"].append("keeps bees on the roof")
    monkeypatch.setattr(reembed, "PAUSE", 0.0)
    async with memory_node(tmp_path, embedder="hashing:384") as (node, client):
        async def done() -> bool:
            return (await embedding(client))["shards_remaining"] == 0

        await eventually_async(done, timeout=30)
        assert node.reembedder is not None
        assert node.reembedder.done == TOTAL + 1 - 2  # resumed: the two staged before were not redone
        after = await embedding(client)
        assert after["memories_remaining"] == 0 and metric(node, "dakera_reembed_memories_remaining") == 0
        assert metric(node, "dakera_reembed_memories_total") == TOTAL - 1
        assert node.memory is not None
        for agent in AGENTS:
            assert node.memory.shards.embedder_of(node.memory.shards.shard_of(agent)) == ("hashing:384", 384)
        await recalls_everything(client)


async def test_a_late_write_of_the_old_space_gets_a_real_vector_after_the_switch(tmp_path: Path) -> None:
    """A store embedded by the old embedder that commits just after its shard switched is kept with
    an all-zero stand-in; the re-embedder's next look replaces it with a real vector."""
    async with memory_node(tmp_path, embedder="hashing:384") as (node, client):
        await store(client, "ann", "my daughter takes violin lessons")
        assert node.memory is not None and node.reembedder is not None
        service = node.memory
        sid = service.shards.shard_of("ann")
        old = make_embedder("hashing:256")
        late = Memory(id="late", agent_id="ann", content="we moved to Lisbon in May", created_at=1.0, updated_at=1.0)
        body = {"m": late.to_record(), "v": old.embed([late.content])[0].tobytes(), "e": old.identity}
        await service.commit_records(sid, [(sid, "put", body)], service.wall_clock())
        assert service.shards.shard(sid).stand_ins == {("ann", "late")}
        assert await node.reembedder.stand_ins() == 1
        assert not service.shards.shard(sid).stand_ins
        assert (await top(client, "ann", "we moved to Lisbon in May"))[0] == "we moved to Lisbon in May"
