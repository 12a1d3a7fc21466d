"""The memory API over HTTP, in-process: every route, and bad input that changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dakera_actors import Config, Node, open_node
from dakera_actors.wal import scan

from ..waiting import eventually
from .test_facade import assert_error


class FakeWallClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def memory_node(tmp_path: Path, clock: FakeWallClock | None = None, *, crash: bool = False,
                      **config: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    """A node over ``tmp_path/data``; ``crash``: it ends cancelled, as a killed node does (no
    clean-stop checkpoint: the next start replays its log)."""
    cfg = Config(data_dir=tmp_path / "data", node_id="node-m", **config)
    with trio.CancelScope() as scope:
        async with open_node(cfg, serve_http=False, wall_clock=clock or FakeWallClock()) as node:
            transport = httpx.ASGITransport(app=node.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
                yield node, client
            if crash:
                scope.cancel()
                await trio.lowlevel.checkpoint()


async def store(client: httpx.AsyncClient, agent: str, content: str, **extra: Any) -> dict[str, Any]:
    r = await client.post("/v1/memory/store", json={"agent_id": agent, "content": content, **extra})
    assert r.status_code == 200, r.text
    return r.json()["memory"]


async def test_store_get_update_forget(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (_, client):
        r = await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "likes tea", "tags": ["drink"],
                                                        "importance": 0.7, "metadata": {"src": "chat"}})
        body = r.json()
        assert r.status_code == 200 and isinstance(body["embedding_time_ms"], int)
        m = body["memory"]
        assert (m["agent_id"], m["content"], m["tags"], m["importance"], m["memory_type"]) == \
            ("a1", "likes tea", ["drink"], 0.7, "episodic")
        assert m["created_at"] == 1_800_000_000 and m["metadata"] == {"src": "chat"}
        got = await client.get(f"/v1/memory/get/{m['id']}", params={"agent_id": "a1"})
        assert got.status_code == 200 and got.json() == m
        clock.now += 5
        up = await client.put(f"/v1/memory/update/{m['id']}", params={"agent_id": "a1"},
                              json={"content": "likes green tea", "importance": 0.9})
        assert up.status_code == 200
        assert (up.json()["content"], up.json()["importance"], up.json()["created_at"], up.json()["updated_at"]) == \
            ("likes green tea", 0.9, 1_800_000_000, 1_800_000_005)
        gone = await client.post("/v1/memory/forget", json={"agent_id": "a1", "memory_ids": [m["id"]]})
        assert gone.json() == {"deleted_count": 1, "memory_ids": [m["id"]]}
        assert_error(await client.get(f"/v1/memory/get/{m['id']}", params={"agent_id": "a1"}), 404, "NOT_FOUND")
        assert_error(await client.put(f"/v1/memory/update/{m['id']}", params={"agent_id": "a1"},
                                      json={"importance": 0.1}), 404, "NOT_FOUND")
        # the same id under another agent is another memory
        assert_error(await client.get(f"/v1/memory/get/{m['id']}", params={"agent_id": "a2"}), 404, "NOT_FOUND")


async def test_client_chosen_id_is_an_upsert(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (_, client):
        first = await store(client, "a1", "v1", id="fixed-1")
        clock.now += 10
        second = await store(client, "a1", "v2", id="fixed-1")
        assert second["id"] == "fixed-1" and second["content"] == "v2"
        assert second["created_at"] == first["created_at"]
        assert len((await client.get("/v1/agents/a1/memories")).json()) == 1


async def test_recall_puts_the_best_match_first_and_reports_both_scores(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (_, client):
        for text in ("The user prefers dark mode in every editor", "The user lives in Berlin",
                     "Dark chocolate is the user's favourite snack", "Meeting with Bob on Tuesday"):
            await store(client, "a1", text)
        await store(client, "a2", "dark mode editor")  # another agent: never recalled for a1
        for routing in ("hybrid", "bm25", "vector"):
            r = await client.post("/v1/memory/recall", json={
                "agent_id": "a1", "query": "which editor theme does the user prefer? dark mode",
                "top_k": 3, "routing": routing})
            memories = r.json()["memories"]
            assert memories[0]["content"] == "The user prefers dark mode in every editor", routing
            assert all(m["agent_id"] == "a1" for m in memories) and len(memories) <= 3
            assert memories == sorted(memories, key=lambda m: -m["score"])
        hybrid = (await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "dark mode editor"})).json()
        assert hybrid["memories"][0]["vector_score"] > 0 and hybrid["memories"][0]["text_score"] > 0
        rrf = (await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "dark mode editor",
                                                             "fusion": "rrf"})).json()
        assert rrf["memories"][0]["content"].startswith("The user prefers dark mode")
        search = (await client.post("/v1/memory/search", json={"agent_id": "a1", "query": "user"})).json()
        assert len(search["memories"]) == 4  # search's default top_k is 10
        empty = await client.post("/v1/memory/recall", json={"agent_id": "nobody", "query": "x"})
        assert empty.status_code == 200 and empty.json()["memories"] == []


async def test_recall_filters(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (_, client):
        await store(client, "a1", "dark mode old", memory_type="semantic", importance=0.9)
        clock.now += 100
        await store(client, "a1", "dark mode new", importance=0.1, tags=["ui"])
        q = {"agent_id": "a1", "query": "dark mode"}
        only = (await client.post("/v1/memory/recall", json={**q, "memory_type": "semantic"})).json()["memories"]
        assert [m["content"] for m in only] == ["dark mode old"]
        imp = (await client.post("/v1/memory/recall", json={**q, "min_importance": 0.5})).json()["memories"]
        assert [m["content"] for m in imp] == ["dark mode old"]
        since = (await client.post("/v1/memory/recall", json={**q, "since": 1_800_000_050})).json()["memories"]
        assert [m["content"] for m in since] == ["dark mode new"]
        tags = (await client.post("/v1/memory/recall", json={**q, "tags": ["ui"]})).json()["memories"]
        assert [m["content"] for m in tags] == ["dark mode new"]


async def test_batch_store_recall_and_forget(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (node, client):
        items = [{"content": f"fact number {i}", "importance": (i % 10) / 10, "tags": ["even" if i % 2 == 0 else "odd"]}
                 for i in range(1000)]
        r = await client.post("/v1/memories/store/batch", json={"agent_id": "bulk", "memories": items})
        body = r.json()
        assert r.status_code == 200 and body["stored_count"] == 1000 and len(body["stored"]) == 1000
        assert set(body["stored"][0]) >= {"id", "content", "agent_id", "tags", "importance", "created_at"}
        rec = (await client.post("/v1/memories/recall/batch", json={
            "agent_id": "bulk", "filter": {"tags": ["even"], "min_importance": 0.5}, "limit": 50})).json()
        assert (rec["total"], rec["filtered"], len(rec["memories"]), rec["truncated"]) == (1000, 200, 50, True)  # i % 10 in (6, 8)
        assert all("even" in m["tags"] and m["importance"] >= 0.5 for m in rec["memories"])
        gone = await client.request("DELETE", "/v1/memories/forget/batch",
                                    json={"agent_id": "bulk", "filter": {"tags": ["odd"]}})
        assert gone.json() == {"deleted_count": 500}
        stats = (await client.get("/v1/agents/bulk/stats")).json()
        assert stats["total_memories"] == 500 and stats["memories_by_type"] == {"episodic": 500}
        # one batch is one group commit: far fewer fsyncs than records
        assert node.metrics.sample("dakera_wal_batch_records_count") < 10


async def test_agents_listing_and_paging(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (_, client):
        for i in range(7):
            clock.now += 1
            await store(client, "pager", f"memory {i}", memory_type="working" if i % 2 else "episodic",
                        session_id="s1")
        await store(client, "other", "x")
        agents = (await client.get("/v1/agents")).json()
        assert [a["agent_id"] for a in agents] == ["other", "pager"]
        assert agents[1]["memory_count"] == 7 and agents[1]["session_count"] == 1
        page = (await client.get("/v1/agents/pager/memories", params={"limit": 3, "offset": 2})).json()
        assert [m["content"] for m in page] == ["memory 4", "memory 3", "memory 2"]  # newest first
        working = (await client.get("/v1/agents/pager/memories", params={"memory_type": "working"})).json()
        assert [m["content"] for m in working] == ["memory 5", "memory 3", "memory 1"]
        stats = (await client.get("/v1/agents/pager/stats")).json()
        assert stats["memories_by_type"] == {"episodic": 4, "working": 3} and stats["total_sessions"] == 1
        assert stats["oldest_memory_at"] < stats["newest_memory_at"]


async def test_ttl_hides_at_once_and_purges_through_the_log(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (node, client):
        m = await store(client, "a1", "ephemeral", ttl_seconds=30)
        await store(client, "a1", "lasting")
        assert m["expires_at"] == 1_800_000_030
        clock.now += 31
        assert_error(await client.get(f"/v1/memory/get/{m['id']}", params={"agent_id": "a1"}), 404, "NOT_FOUND")
        listed = (await client.get("/v1/agents/a1/memories")).json()
        assert [x["content"] for x in listed] == ["lasting"]
        recalled = (await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "ephemeral"})).json()
        assert [x["content"] for x in recalled["memories"]] == ["lasting"]
        # the owner's purge timer writes a purge record; wait for it (bounded), it runs every second
        shard = str(node.memory.shards.shard_of("a1"))
        await eventually(lambda: node.metrics.sample("dakera_shard_memories", shard=shard) == 1)
        assert_error(await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "x",
                                                                 "expires_at": 1_000}), 400, "INVALID_REQUEST")


BAD_REQUESTS = [
    ("POST", "/v1/memory/store", b"{not json", "malformed JSON"),
    ("POST", "/v1/memory/store", b"[1, 2]", "body"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1"}', "content"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": 5}', "content"),
    ("POST", "/v1/memory/store", b'{"agent_id": "bad id!", "content": "x"}', "agent_id"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "importance": 7}', "importance"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "memory_type": "dream"}', "memory_type"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "favourite": true}', "favourite"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "' + b"x" * 100_001 + b'"}', "content"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "importance": NaN}', "NaN"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "metadata": {"n": 1e999}}', "Infinity"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "metadata": {"n": [123456789012345678901234567890]}}',
     "metadata.n[0]"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
     "nested"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "bad \\ud800 half"}', "surrogate"),
    ("POST", "/v1/memory/store", b'{"agent_id": "a1", "content": "x", "tags": ["\\udfff"]}', "surrogate"),
    ("POST", "/v1/memories/store/batch", b'{"agent_id": "a1", "memories": []}', "memories"),
    ("POST", "/v1/memories/store/batch", b'{"agent_id": "a1", "memories": [{"content": "ok"}, {"content": 1}]}',
     "memories[1].content"),
    ("POST", "/v1/memory/recall", b'{"agent_id": "a1", "query": "q", "top_k": -1}', "top_k"),
    ("POST", "/v1/memory/recall", b'{"agent_id": "a1", "query": "q", "routing": "magic"}', "routing"),
    ("POST", "/v1/memory/forget", b'{"agent_id": "a1", "memory_ids": "m1"}', "memory_ids"),
    ("DELETE", "/v1/memories/forget/batch", b'{"agent_id": "a1", "filter": {}}', "filter"),
    ("DELETE", "/v1/memories/forget/batch", b'{"agent_id": "a1"}', "filter"),
    ("POST", "/v1/memories/recall/batch", b'{"agent_id": "a1", "filter": {"min_importance": "x"}}',
     "filter.min_importance"),
    ("PUT", "/v1/memory/update/m1?agent_id=a1", b"{}", "body"),
    ("PUT", "/v1/memory/update/m1", b'{"importance": 0.5}', "agent_id"),
    ("GET", "/v1/memory/get/m1", b"", "agent_id"),
    ("GET", "/v1/agents/bad%20agent/stats", b"", "agent_id"),
    ("GET", "/v1/agents/a1/memories?limit=5000", b"", "limit"),
]


@pytest.mark.parametrize("method,path,body,mention", BAD_REQUESTS)
async def test_bad_input_is_a_400_naming_the_problem_and_changes_nothing(
        tmp_path: Path, method: str, path: str, body: bytes, mention: str) -> None:
    async with memory_node(tmp_path) as (node, client):
        kept = await store(client, "a1", "keep me")
        before = node.metrics.sample("dakera_wal_records_total")
        r = await client.request(method, path, content=body, headers={"content-type": "application/json"})
        err = assert_error(r, 400, "INVALID_REQUEST")
        assert mention in err["error"]
        assert node.metrics.sample("dakera_wal_records_total") == before  # nothing was written
        listed = (await client.get("/v1/agents/a1/memories")).json()
        assert [m["id"] for m in listed] == [kept["id"]]


async def test_known_sdk_extras_are_ignored_with_a_warning(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (_, client):
        r = await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "x", "lang": "en"})
        assert r.status_code == 200 and r.json()["warnings"]
        r = await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "x", "rerank": False})
        assert r.status_code == 200 and "rerank" in r.json()["warnings"][0]


async def test_restart_replays_everything_acknowledged(tmp_path: Path) -> None:
    async with memory_node(tmp_path, crash=True) as (_, client):
        ids = [(await store(client, f"agent-{i % 5}", f"memory {i}"))["id"] for i in range(40)]
        await client.post("/v1/memory/forget", json={"agent_id": "agent-0", "memory_ids": [ids[0]]})
    async with memory_node(tmp_path) as (node, client):
        total = 0
        for i in range(5):
            total += len((await client.get(f"/v1/agents/agent-{i}/memories")).json())
        assert total == 39
        assert node.metrics.sample("dakera_wal_replayed_records") == 41


async def test_snapshots_bound_the_log_and_restore_the_same_state(tmp_path: Path) -> None:
    async with memory_node(tmp_path, checkpoint_records=20, wal_segment_bytes=64 * 1024) as (node, client):
        for i in range(120):
            await store(client, f"agent-{i % 7}", f"memory number {i} " + "padding " * 100)
        await eventually(lambda: node.metrics.sample("dakera_wal_segments_deleted_total") >= 1)
        before = {f"agent-{i}": (await client.get(f"/v1/agents/agent-{i}/memories", params={"limit": 1000})).json()
                  for i in range(7)}
    assert list((tmp_path / "data" / "snapshots").iterdir())
    async with memory_node(tmp_path) as (node, client):
        after = {f"agent-{i}": (await client.get(f"/v1/agents/agent-{i}/memories", params={"limit": 1000})).json()
                 for i in range(7)}
        assert after == before and sum(len(v) for v in after.values()) == 120
        assert node.metrics.sample("dakera_wal_replayed_records") < 120  # the snapshots carried the rest


async def test_concurrent_writers_share_fsyncs(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (node, client):
        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(store, client, f"agent-{i % 8}", f"concurrent memory {i}")
        fsyncs = node.metrics.sample("dakera_wal_batch_records_count")
        assert node.metrics.sample("dakera_wal_batch_records_sum") == 64
        assert fsyncs < 64  # group commit: writers that waited together shared a flush


def _segment(tmp_path: Path) -> Path:
    (segment,) = sorted((tmp_path / "data" / "wal").glob("*.wal"))
    return segment


@pytest.mark.parametrize("damage", ["cut_mid_record", "cut_mid_header", "flip_last_record", "garbage_tail"])
async def test_node_starts_after_a_damaged_tail_with_everything_before_it(tmp_path: Path, damage: str) -> None:
    async with memory_node(tmp_path, crash=True) as (_, client):
        stored = [await store(client, "a1", f"memory {i}") for i in range(10)]
    segment = _segment(tmp_path)
    data = bytearray(segment.read_bytes())
    last_start = scan(bytes(data)[: len(data) - 1]).end  # the last record is the one cut here
    if damage == "cut_mid_record":
        data = data[: len(data) - 5]
    elif damage == "cut_mid_header":
        data = data[: last_start + 3]
    elif damage == "flip_last_record":
        data[-3] ^= 0x40
    else:
        data += b"\x00\x13garbage"
    segment.write_bytes(bytes(data))
    async with memory_node(tmp_path) as (node, client):
        listed = (await client.get("/v1/agents/a1/memories", params={"limit": 100})).json()
        ids = {m["id"] for m in listed}
        survivors = 10 if damage == "garbage_tail" else 9
        assert ids == {m["id"] for m in stored[:survivors]}
        # and the repaired log takes new writes that survive the next restart
        await store(client, "a1", "after repair")
    async with memory_node(tmp_path) as (_, client):
        assert len((await client.get("/v1/agents/a1/memories", params={"limit": 100})).json()) == survivors + 1


async def test_memory_routes_answer_503_with_retry_after_until_storage_is_ready(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (node, client):
        node.readiness.close("storage")  # as while the WAL is being replayed
        r = await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "x"})
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert r.headers["retry-after"] == "1"
        assert (await client.get("/health/ready")).status_code == 503
        node.readiness.open("storage")
        assert (await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "x"})).status_code == 200
