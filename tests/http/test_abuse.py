"""HTTP abuse in-process (ASGI): nested JSON, oversized bodies and text, more requests than the
limit, heavy work off the event loop, and the agent listing's pages."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio

from dakera_actors import safejson

from ..waiting import eventually
from .test_facade import assert_error
from .test_memory_api import memory_node, store


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("depth", [65, 100_000])
async def test_deeply_nested_json_is_a_400_and_changes_nothing(tmp_path: Path, depth: int) -> None:
    async with memory_node(tmp_path) as (node, client):
        body = '{"agent_id": "a1", "content": "x", "metadata": {"deep": ' + nested(depth) + "}}"
        r = await client.post("/v1/memory/store", content=body, headers={"content-type": "application/json"})
        err = assert_error(r, 400, "INVALID_REQUEST")
        assert "nested" in err["error"]
        for path in ("/v1/memory/recall", "/v1/admin/cluster/rebalance"):  # the memory API and admin
            r = await client.post(path, content=nested(depth), headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
        assert (await client.get("/v1/agents")).json() == []


def test_depth_is_measured_outside_strings() -> None:
    assert safejson.nesting_depth(b'{"a": "[[[[[[", "b": [[1]]}') == 3
    assert safejson.nesting_depth(b'["\\"[[[", [2]]') == 2
    assert safejson.loads(json.dumps({"s": "[" * 1000}).encode()) == {"s": "[" * 1000}
    assert safejson.loads(nested(safejson.MAX_DEPTH).encode())[0] is not None
    with pytest.raises(safejson.JsonInvalid, match="nested 65 levels"):
        safejson.loads(nested(65).encode())


async def test_a_body_over_the_limit_is_a_413(tmp_path: Path) -> None:
    async with memory_node(tmp_path, max_body_bytes=64 * 1024) as (_, client):
        big = json.dumps({"agent_id": "a1", "content": "x" * 100_000})
        assert_error(await client.post("/v1/memory/store", content=big,
                                       headers={"content-type": "application/json"}), 413, "PAYLOAD_TOO_LARGE")
        assert (await client.get("/v1/agents")).json() == []


async def test_text_over_the_per_request_budget_is_a_413_and_stores_nothing(tmp_path: Path) -> None:
    async with memory_node(tmp_path, max_request_text_bytes=10_000) as (node, client):
        batch = {"agent_id": "a1", "memories": [{"content": "é" * 1_000} for _ in range(6)]}  # 12 000 bytes
        err = assert_error(await client.post("/v1/memories/store/batch", json=batch), 413, "PAYLOAD_TOO_LARGE")
        assert "DAKERA_MAX_REQUEST_TEXT_BYTES" in err["error"]
        assert_error(await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "q" * 10_001}),
                     413, "PAYLOAD_TOO_LARGE")
        assert (await client.get("/v1/agents")).json() == []
        r = await client.post("/v1/memories/store/batch", json={"agent_id": "a1", "memories": batch["memories"][:4]})
        assert r.status_code == 200 and r.json()["stored_count"] == 4


class BlockingEmbedder:
    """Holds every embedding until released: shows whether the event loop stayed free meanwhile."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.identity = inner.identity
        self.entered = threading.Event()
        self.release = threading.Event()
        self.starved = False
        self.batches: list[int] = []  # texts per call

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(len(texts))
        self.entered.set()
        # on the event loop, nothing can set ``release`` while this waits: it times out
        if not self.release.wait(timeout=5):
            self.starved = True
        return self.inner.embed(texts)


async def test_embedding_runs_off_the_event_loop(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (node, client):
        assert node.memory is not None
        blocking = BlockingEmbedder(node.memory.embedder)
        node.memory.embedder = blocking
        results: list[httpx.Response] = []
        batch = {"agent_id": "a1", "memories": [{"content": f"fact {i} " * 2_000} for i in range(10)]}

        async def send() -> None:
            results.append(await client.post("/v1/memories/store/batch", json=batch))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await eventually(blocking.entered.is_set)
            # the batch is being embedded: the loop still answers
            assert (await client.get("/health")).status_code == 200
            blocking.release.set()
        assert not blocking.starved, "the embedding held the event loop"
        assert results[0].status_code == 200 and results[0].json()["stored_count"] == 10
        assert blocking.batches == [10]  # the whole batch in one call to the (default) embedder
        assert node.config.embedder == "wordllama" and blocking.inner.identity == "wordllama:256"


async def test_more_requests_than_the_limit_get_503_with_retry_after(tmp_path: Path) -> None:
    async with memory_node(tmp_path, max_concurrent_requests=2) as (node, client):
        assert node.router is not None
        entered = 0
        gate = trio.Event()
        real_run = node.router.run

        async def held_run(*args: Any, **kwargs: Any) -> Any:
            nonlocal entered
            entered += 1
            await gate.wait()
            return await real_run(*args, **kwargs)

        node.router.run = held_run  # type: ignore[method-assign]
        held: list[httpx.Response] = []

        async def send(i: int) -> None:
            held.append(await client.post("/v1/memory/store", json={"agent_id": f"held-{i}", "content": "x"}))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(2):
                    nursery.start_soon(send, i)
                await eventually(lambda: entered == 2)
                over = await client.post("/v1/memory/store", json={"agent_id": "over", "content": "x"})
                err = assert_error(over, 503, "SERVICE_UNAVAILABLE")
                assert over.headers["retry-after"] == "1" and "DAKERA_MAX_CONCURRENT_REQUESTS" in err["error"]
                assert node.metrics.sample("dakera_http_shed_total", reason="requests") == 1
                # health and metrics are exempt
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
                gate.set()
        assert [r.status_code for r in held] == [200, 200]
        assert entered == 2  # the refused request never reached the router
        assert [a["agent_id"] for a in (await client.get("/v1/agents")).json()] == ["held-0", "held-1"]
        # the slots are free again
        assert (await client.post("/v1/memory/store", json={"agent_id": "after", "content": "x"})).status_code == 200


async def test_the_agent_listing_is_paged(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (_, client):
        for i in range(5):
            await store(client, f"agent-{i}", "x")
        first = await client.get("/v1/agents", params={"limit": 2})
        assert [a["agent_id"] for a in first.json()] == ["agent-0", "agent-1"]
        assert first.headers["link"] == '</v1/agents?limit=2&offset=2>; rel="next"'
        last = await client.get("/v1/agents", params={"limit": 2, "offset": 4})
        assert [a["agent_id"] for a in last.json()] == ["agent-4"] and "link" not in last.headers
        everything = await client.get("/v1/agents")  # what the SDK sends: the default page
        assert len(everything.json()) == 5 and "link" not in everything.headers
        assert_error(await client.get("/v1/agents", params={"limit": 0}), 400, "INVALID_REQUEST")
        assert_error(await client.get("/v1/agents", params={"limit": 10_001}), 400, "INVALID_REQUEST")
        assert_error(await client.get("/v1/agents", params={"offset": "x"}), 400, "INVALID_REQUEST")


async def test_the_default_agent_page_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dakera_actors.store import validation

    monkeypatch.setattr(validation, "AGENT_PAGE", 3)
    async with memory_node(tmp_path) as (_, client):
        for i in range(5):
            await store(client, f"agent-{i}", "x")
        page = await client.get("/v1/agents")
        assert [a["agent_id"] for a in page.json()] == ["agent-0", "agent-1", "agent-2"]
        assert page.headers["link"] == '</v1/agents?limit=3&offset=3>; rel="next"'


async def test_stored_text_is_tokenized_off_the_event_loop(tmp_path: Path) -> None:
    # tokenizing a 2 MB batch for the index took most of a second on the loop when it was applied
    async with memory_node(tmp_path) as (node, client):
        assert node.memory is not None
        shards = node.memory.shards
        real = shards.tokenize
        on_loop: list[str] = []

        def watched(text: str) -> list[str]:
            if threading.current_thread() is threading.main_thread() and text.startswith("stored "):
                on_loop.append(text)
            return real(text)

        shards.tokenize = watched
        # large enough to be worth a thread (small requests stay on the loop: a hop costs more)
        filler = " ".join(f"word{n}" for n in range(300))
        batch = {"agent_id": "a1", "memories": [{"content": f"stored fact {i} {filler}"} for i in range(50)]}
        assert (await client.post("/v1/memories/store/batch", json=batch)).status_code == 200
        assert on_loop == []
        hits = (await client.post("/v1/memory/recall", json={"agent_id": "a1", "query": "fact 7"})).json()
        assert hits["memories"][0]["content"].startswith("stored fact 7 ")  # the index got the same tokens


async def test_applying_a_big_batch_lets_other_tasks_run_between_slices(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (node, client):
        assert node.memory is not None
        shards = node.memory.shards
        real_apply = shards.apply
        events: list[str] = []

        def apply(*args: Any, **kwargs: Any) -> Any:
            events.append("apply")
            return real_apply(*args, **kwargs)

        shards.apply = apply  # type: ignore[method-assign]
        batch = {"agent_id": "a1", "memories": [{"content": f"fact {i} " + "word " * 400} for i in range(200)]}

        async def ticker() -> None:  # what the lease timer needs: a turn now and then
            while True:
                events.append("tick")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            assert (await client.post("/v1/memories/store/batch", json=batch)).status_code == 200
            nursery.cancel_scope.cancel()
        first, last = events.index("apply"), len(events) - 1 - events[::-1].index("apply")
        assert events[first:last + 1].count("apply") == 200
        assert "tick" in events[first:last], "the whole batch was applied without a break"
