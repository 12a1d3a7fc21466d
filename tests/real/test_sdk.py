"""The official `dakera` SDK against a real node process; kill -9 loses no acknowledged write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dakera import (
    AuthenticationError,
    BatchForgetRequest,
    BatchMemoryFilter,
    BatchRecallRequest,
    BatchStoreMemoryItem,
    BatchStoreMemoryRequest,
    DakeraClient,
    NotFoundError,
    ValidationError,
)
from dakera.models import Memory, Session, SessionTouchResponse

from .procs import Acks, NodeProcess, Workers, cluster_processes, running, wait_for

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
                except Exception:
                    # the node died under us: this write was never acknowledged (the SDK lets a
                    # connection cut mid-answer through as requests' ChunkedEncodingError)
                    if killing.is_set():
                        return
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


# -- health, ops and cluster admin as the SDK reads them (issue 21) -------------------------------

@pytest.fixture(scope="module")
def sdk_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """Three node processes behind the root key, shared by this module's cluster tests (one start, ~10 s)."""
    with running(cluster_processes(tmp_path_factory.mktemp("sdk-cluster"), 3, DAKERA_ROOT_API_KEY=KEY)) as nodes:
        def one_map() -> bool:
            versions = {httpx.get(n.url + "/admin/cluster/status", timeout=2,
                                  headers={"Authorization": f"Bearer {KEY}"}).json()["shard_map_version"]
                        for n in nodes}
            return len(versions) == 1 and 0 not in versions
        wait_for(one_map, 60, "a common shard map")
        yield nodes


def check_health(c: DakeraClient, node_id: str) -> None:
    health = c.health()
    assert health["status"] == "healthy" and health["healthy"] is True and health["node_id"] == node_id
    assert isinstance(health["uptime_seconds"], int) and health["version"]
    ready = c.health_ready()
    assert ready["ready"] is True and ready["checks"] and all(ready["checks"].values())
    live = c.health_live()
    assert live["alive"] is True and live["node_id"] == node_id


def stored_counts(c: DakeraClient, prefix: str, agents: int) -> int:
    """Store 1..3 memories for each of ``agents`` agents; the number stored."""
    total = 0
    for i in range(agents):
        for k in range(1 + i % 3):
            c.store_memory(f"{prefix}-{i}", f"fact {k} about {prefix} agent {i}")
            total += 1
    return total


def check_admin(c: DakeraClient, *, nodes: int, memories: int, agents: int) -> None:
    stats = c.ops_stats()
    assert (stats["total_vectors"], stats["namespace_count"], stats["state"]) == (memories, agents, "healthy")
    assert stats["partial"] is False and isinstance(stats["uptime_seconds"], int) and isinstance(stats["timestamp"], int)
    status = c.cluster_status()
    assert status["state"] == status["status"] == "healthy" and status["healthy"] is True
    assert status["node_count"] == status["nodes"] == nodes and status["cluster_id"]
    assert (status["total_vectors"], status["namespace_count"]) == (memories, agents)
    replication = c.admin_cluster_replication()
    assert replication["total_nodes"] == nodes and len(replication["replication_lag"]) == nodes
    assert all(e["status"] in ("healthy", "lagging") for e in replication["replication_lag"])
    shards = c.admin_list_shards()
    assert shards["total"] == 64 and [s["shard_id"] for s in shards["shards"]] == [f"shard-{n}" for n in range(64)]
    assert sum(s["vector_count"] for s in shards["shards"]) == memories
    assert all(s["primary_node"] and s["state"] == "active" for s in shards["shards"])
    plan = c.admin_rebalance_shards(shard_ids=["shard-1", "2"], dry_run=True)
    assert plan["initiated"] is False and plan["total_shards"] == 64 and isinstance(plan["planned_moves"], list)
    assert plan["operation_id"] and plan["shards_affected"] == len({m["shard_id"] for m in plan["planned_moves"]})
    maintenance = c.admin_maintenance_status()
    assert maintenance["status"] == "active" and maintenance["enabled"] is False
    assert maintenance["nodes_in_maintenance"] == [] and maintenance["rejecting_requests"] is False
    diagnostics = c.ops_diagnostics()
    assert len(diagnostics["members"]) == nodes and diagnostics["system"]["pid"] > 0
    assert diagnostics["components"]["storage"]["healthy"] is True


def test_sdk_health_ops_and_admin_on_one_node(node: NodeProcess) -> None:
    c = client(node)
    node_id = c.health()["node_id"]
    check_health(c, node_id)
    stored = stored_counts(c, "solo", 5)
    check_admin(c, nodes=1, memories=stored, agents=5)
    with pytest.raises(ValidationError) as bad:
        c.admin_rebalance_shards(shard_ids=["shard-x"])
    assert "shard_ids" in str(bad.value)


def test_sdk_health_ops_and_admin_through_every_node_of_a_cluster(sdk_cluster: list[NodeProcess]) -> None:
    clients = [client(n) for n in sdk_cluster]

    def settled() -> bool:  # one map everywhere and every shard counted (primaries done taking over)
        return all(not c.ops_stats()["partial"] for c in clients) and len(
            {c.cluster_status()["shard_map_version"] for c in clients}) == 1

    wait_for(settled, 60, "every node counting every shard on one map")
    base = clients[0].ops_stats()
    stored = sum(stored_counts(c, f"via{i}", 4) for i, c in enumerate(clients))
    version = clients[0].cluster_status()["shard_map_version"]
    for n, c in zip(sdk_cluster, clients, strict=True):
        check_health(c, n.env["DAKERA_NODE_ID"])
        check_admin(c, nodes=3, memories=base["total_vectors"] + stored, agents=base["namespace_count"] + 12)
        with pytest.raises(ValidationError) as bad:
            c.admin_rebalance_shards(shard_ids=["shard-64"])
        assert "shard_ids" in str(bad.value)
    assert {c.cluster_status()["cluster_id"] for c in clients} == {clients[0].cluster_status()["cluster_id"]}
    assert clients[0].cluster_status()["shard_map_version"] == version  # dry runs and refusals moved nothing

# -- importance and sessions: one node, and every node of one shared three-process cluster -------
def _sessions_and_importance(c: DakeraClient, agent: str) -> None:
    """Every session method and both importance methods through ``c``, on the parsed results."""
    started = c.start_session(agent, metadata={"topic": "tea"}, idle_timeout_secs=3600)
    sid = started["id"]
    assert started["session_id"] == sid and started["agent_id"] == agent and sid.startswith(agent + "~")
    assert started["idle_timeout_secs"] == 3600 and started["metadata"] == {"topic": "tea"}
    stored = c.store_memory(agent, "green tea in the morning", session_id=sid, importance=0.3)
    assert stored["session_state"] == "active" and stored["session_id"] == sid
    touched = c.touch_session(sid)
    assert isinstance(touched, SessionTouchResponse) and touched.is_active
    assert touched.session.session_id == sid and touched.idle_deadline_at is not None
    got = c.get_session(sid)
    assert Session.from_dict(got).memory_count == 1 and got["session_state"] == "active"
    assert [s["id"] for s in c.list_sessions(agent_id=agent)] == [sid]
    assert [s["id"] for s in c.list_sessions(agent_id=agent, active_only=True, limit=5, offset=0)] == [sid]
    assert [s["id"] for s in c.agent_sessions(agent, active_only=True, limit=10)] == [sid]
    memories = c.session_memories(sid, limit=10, content_preview_chars=5)
    assert [(m["id"], m["content"], m["content_truncated"]) for m in memories] == [(stored["id"], "green", True)]
    updated = c.update_importance(agent, [stored["id"]], 0.9)
    assert isinstance(updated, dict) and updated["importance"] == 0.9 and updated["memory_id"] == stored["id"]
    patched = c.patch_memory_importance(stored["id"], agent, 0.75)
    assert isinstance(patched, Memory) and (patched.id, patched.importance) == (stored["id"], 0.75)
    assert c.get_memory(agent, stored["id"])["importance"] == 0.75
    ended = c.end_session(sid, summary="talked tea")
    assert (ended["session_state"], ended["ended_reason"], ended["summary"]) == ("ended", "client", "talked tea")
    assert not c.touch_session(sid).is_active  # never re-opened
    assert c.list_sessions(agent_id=agent, active_only=True) == []
    assert c.end_session(sid, summary="again")["summary"] == "talked tea"
    # bad input: clear errors, nothing changed
    with pytest.raises(NotFoundError):
        c.get_session(agent + "~nope")
    with pytest.raises(NotFoundError):
        c.touch_session(agent + "~nope")
    with pytest.raises(ValidationError):
        c.get_session("not-a-session-id")
    with pytest.raises(NotFoundError):
        c.update_importance(agent, ["no-such-memory"], 0.5)
    with pytest.raises(ValidationError):
        c.update_importance(agent, [stored["id"]], 2.0)
    with pytest.raises(ValidationError):
        c.patch_memory_importance(stored["id"], agent, "high")  # type: ignore[arg-type]
    assert c.get_memory(agent, stored["id"])["importance"] == 0.75


def test_sdk_sessions_and_importance_on_one_node(node: NodeProcess) -> None:
    _sessions_and_importance(client(node), "agent-sessions")


def test_sdk_sessions_and_importance_through_every_node_of_a_cluster(sdk_cluster: list[NodeProcess]) -> None:
    clients = [client(n) for n in sdk_cluster]
    for i, c in enumerate(clients):  # each node on agents whose shards live on every node
        for n in range(4):
            _sessions_and_importance(c, f"agent-c{i}-{n}")
    # a session started through one node is the same session through every other
    sid = clients[0].start_session("agent-shared")["id"]
    clients[1].touch_session(sid)
    clients[2].end_session(sid, summary="seen by all")
    for c in clients:
        got = Session.from_dict(c.get_session(sid))
        assert (got.session_id, got.ended_reason, got.summary) == (sid, "client", "seen by all")
        assert [s["id"] for s in c.agent_sessions("agent-shared")] == [sid]
        # without an agent: every agent's sessions from every member, newest first, paged
        everyone = c.list_sessions(limit=1000)
        assert len(everyone) == len({s["id"] for s in everyone}) == 13 and everyone[0]["id"] == sid
        assert c.list_sessions(limit=2, offset=1) == everyone[1:3]
    forwarded = sum(float(line.split()[-1]) for n in sdk_cluster
                    for line in httpx.get(n.url + "/metrics", timeout=5,
                                          headers={"Authorization": f"Bearer {KEY}"}).text.splitlines()
                    if line.startswith("dakera_forwarded_requests_total"))
    assert forwarded > 0  # some of it went through a node that does not own the agent


# -- recall by meaning with the default embedder (issue 22) ---------------------------------------
#: (memory, question) sharing no content word; hashing puts none of these memories first
PARAPHRASES = [
    ("My grandfather fought in the Korean war", "which conflict was grandpa a soldier in"),
    ("I hate cilantro, it tastes like soap to me", "which herb do I dislike"),
    ("My flight to Tokyo leaves on the 14th", "when do I travel to Japan"),
    ("I switched my phone plan to a cheaper carrier", "did I change mobile providers"),
    ("I get migraines when I don't sleep enough", "what causes my headaches"),
    ("I play guitar in a jazz band on Fridays", "what music group am I part of"),
    ("I take my blood pressure medication every evening", "when do I swallow my hypertension pills"),
    ("The dentist appointment is Thursday at 4pm", "when is my next teeth checkup"),
    ("We adopted a golden retriever puppy last month", "what kind of dog do we have"),
    ("My daughter has started taking violin lessons", "what instrument is the kid learning"),
]
NEAR_TOPIC = [
    "My son plays football every Saturday morning", "I bought a new piano bench for the living room",
    "The neighbour's cat keeps sleeping on our porch", "My brother is a firefighter in Denver",
    "We visited Porto for a long weekend", "The bike needs new tyres before summer",
    "I walk to the office when it is not raining", "I drink sparkling water with lunch",
    "The conference in Osaka was cancelled", "I bake sourdough bread on Sunday evenings",
    "The quarterly review is on the last Friday of the month", "My colleague speaks fluent German",
    "My father retired from the post office", "The garage door makes a grinding noise",
    "The electricity bill doubled this winter", "I sprained my ankle playing tennis years ago",
]


def test_sdk_recalls_paraphrases_through_every_node_with_the_default_embedder(sdk_cluster: list[NodeProcess]) -> None:
    assert all("DAKERA_EMBEDDER" not in n.env for n in sdk_cluster)  # the default: wordllama
    clients = [client(n) for n in sdk_cluster]
    agents = [f"agent-meaning-{i}" for i in range(3)]  # shards on different primaries, most likely
    for agent, c in zip(agents, clients, strict=True):
        items = [BatchStoreMemoryItem(text) for text, _ in PARAPHRASES] + [BatchStoreMemoryItem(t) for t in NEAR_TOPIC]
        stored = c.store_memories_batch(BatchStoreMemoryRequest(agent, items))
        assert stored.stored_count == len(items)
    for agent in agents:
        for c in clients:  # each question through each node, whichever owns the agent
            for text, question in PARAPHRASES:
                first = c.recall(agent, question, top_k=3).memories[0]
                assert first.content == text, (agent, question, first.content)
