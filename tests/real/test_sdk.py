"""The official `dakera` SDK against a real node process; kill -9 loses no acknowledged write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dakera import (
    AuthenticationError,
    BatchForgetRequest,
    BatchMemoryFilter,
    BatchRecallRequest,
    BatchStoreMemoryItem,
    BatchStoreMemoryRequest,
    DakeraClient,
    DakeraError,
    NotFoundError,
    ValidationError,
)

from .procs import Acks, NodeProcess, Workers, wait_for

pytestmark = pytest.mark.real
KEY = "sdk-test-root-key"
# note: the SDK's max_retries counts attempts; 1 means "try once"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, DAKERA_ROOT_API_KEY=KEY).start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def client(node: NodeProcess, key: str = KEY) -> DakeraClient:
    return DakeraClient(node.url, api_key=key, max_retries=1, timeout=10)


def test_sdk_store_get_update_recall_search_forget(node: NodeProcess) -> None:
    c = client(node)
    stored = c.store_memory("agent-sdk", "The user prefers dark mode in every editor", importance=0.8,
                            tags=["ui"], metadata={"source": "chat"})
    c.store_memory("agent-sdk", "The user lives in Berlin", memory_type="semantic")
    c.store_memory("agent-sdk", "Dark chocolate is the user's favourite snack")
    got = c.get_memory("agent-sdk", stored["id"])
    assert got["content"] == stored["content"] and got["tags"] == ["ui"] and got["metadata"] == {"source": "chat"}
    updated = c.update_memory("agent-sdk", stored["id"], importance=0.95, tags=["ui", "prefs"])
    assert updated["importance"] == 0.95 and updated["tags"] == ["ui", "prefs"]
    recalled = c.recall("agent-sdk", "which editor theme does the user prefer? dark mode", top_k=3)
    assert recalled.memories[0].id == stored["id"]
    assert recalled.memories[0].vector_score is not None and recalled.memories[0].text_score is not None
    assert recalled.memories == sorted(recalled.memories, key=lambda m: -m.score)
    for routing in ("vector", "bm25", "hybrid"):
        assert c.recall("agent-sdk", "dark mode editor", routing=routing).memories[0].id == stored["id"]
    found = c.search_memories("agent-sdk", "Berlin")
    assert found[0]["content"] == "The user lives in Berlin"
    c.forget("agent-sdk", stored["id"])
    with pytest.raises(NotFoundError):
        c.get_memory("agent-sdk", stored["id"])


def test_sdk_batches_agents_and_stats(node: NodeProcess) -> None:
    c = client(node)
    items = [BatchStoreMemoryItem(f"note {i} about topic {i % 4}", importance=0.2 + (i % 2) * 0.6,
                                  tags=[f"topic-{i % 4}"]) for i in range(40)]
    resp = c.store_memories_batch(BatchStoreMemoryRequest("agent-batch", items))
    assert resp.stored_count == 40 and len({m.id for m in resp.stored}) == 40
    rec = c.batch_recall(BatchRecallRequest("agent-batch", filter=BatchMemoryFilter(tags=["topic-1"]), limit=100))
    assert rec.total == 40 and rec.filtered == 10 and len(rec.memories) == 10
    gone = c.batch_forget(BatchForgetRequest("agent-batch", filter=BatchMemoryFilter(max_importance=0.5)))
    assert gone.deleted_count == 20
    c.store_memory("agent-other", "x")
    agents = {a["agent_id"]: a for a in c.list_agents()}
    assert agents["agent-batch"]["memory_count"] == 20 and "agent-other" in agents
    stats = c.agent_stats("agent-batch")
    assert stats["total_memories"] == 20 and stats["memories_by_type"] == {"episodic": 20}
    listed = c.agent_memories("agent-batch", limit=5)
    assert len(listed) == 5


def test_sdk_raises_the_right_exceptions(node: NodeProcess) -> None:
    c = client(node)
    with pytest.raises(ValidationError) as bad:
        c.store_memory("bad agent id!", "x")
    assert "agent_id" in str(bad.value)
    with pytest.raises(ValidationError):
        c.store_memory("agent-x", "x", importance=3.0)
    with pytest.raises(ValidationError):
        c.batch_forget(BatchForgetRequest("agent-x"))  # no filter: refused, nothing deleted
    with pytest.raises(NotFoundError):
        c.get_memory("agent-x", "no-such-memory")
    with pytest.raises(AuthenticationError):
        client(node, "wrong-key").store_memory("agent-x", "x")
    with pytest.raises(AuthenticationError):
        DakeraClient(node.url, max_retries=1).list_agents()


def test_sdk_reads_the_storage_tiers(node: NodeProcess) -> None:
    c = client(node)
    c.store_memory("agent-tiers", "The cold tier keeps every shard's history")
    overview = c.storage_tier_overview()
    hot, warm, cold = overview.architecture
    assert (hot.name, warm.name, cold.name) == ("hot", "warm", "cold")
    assert hot.current_count == 1 and cold.technology == "local filesystem"
    assert overview.activity.storage_backend == "filesystem" and overview.activity.demotions_to_warm == 1
    with pytest.raises(AuthenticationError):
        client(node, "wrong-key").storage_tier_overview()


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    proc = NodeProcess(tmp_path, name="crash").start()
    acked = Acks()
    workers = Workers()
    killing = threading.Event()
    try:
        proc.wait_healthy()

        def writer(w: int) -> None:
            c = DakeraClient(proc.url, max_retries=1, timeout=5)
            i = 0
            while not workers.stop.is_set():
                try:
                    m = c.store_memory(f"agent-{w}", f"writer {w} memory {i}")
                except DakeraError:
                    if killing.is_set():
                        return  # the node died under us: this write was never acknowledged
                    raise  # before the kill nothing may fail (re-raised in the test by Workers)
                acked.add(m["id"], f"agent-{w}")
                i += 1

        for w in range(4):
            workers.start(writer, w)
        wait_for(lambda: workers.check() or len(acked) >= 300, 60, "300 acknowledged writes")
        killing.set()
        proc.signal(signal.SIGKILL)  # mid-stream: writers are still sending
        proc.wait(10)
        workers.finish()
        n = len(acked)
        proc.start()
        proc.wait_healthy()
        c = DakeraClient(proc.url, max_retries=3, timeout=30)
        problems = []
        for _, mid, agent in acked.snapshot():
            try:
                assert c.get_memory(agent, mid)["id"] == mid
            except Exception as exc:  # collect them all: the kind of failure is the diagnosis
                problems.append(f"{agent}/{mid}: {type(exc).__name__}: {exc}")
        assert not problems, f"{len(problems)} of {n} acknowledged writes unreadable: {problems[:5]}\n" + proc.log()[-3000:]
        assert "storage_recovered" in proc.log()
    finally:
        workers.stop.set()
        proc.stop()
