"""The cold tier with real processes and a real S3 server (moto's): a three-node cluster that loses
every data dir comes back from the bucket alone, and a node joining empty seeds from the bucket."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from dakera import BatchRecallRequest, BatchStoreMemoryItem, BatchStoreMemoryRequest, DakeraClient

from tests.real.procs import NodeProcess, cluster_processes, running, wait_for

from .conftest import BUCKET

pytestmark = pytest.mark.real
AGENTS = 40
PER_AGENT = 250  # 10,000 memories


def env(endpoint: str, prefix: str) -> dict[str, str]:
    return {"DAKERA_STORAGE": "s3", "DAKERA_S3_ENDPOINT": endpoint, "DAKERA_S3_BUCKET": BUCKET,
            "DAKERA_S3_ACCESS_KEY": "test", "DAKERA_S3_SECRET_KEY": "test", "DAKERA_S3_PREFIX": prefix,
            "DAKERA_REPLICATION_FACTOR": "2", "DAKERA_SHARDS": "16", "DAKERA_WRITE_ACK": "quorum",
            "DAKERA_LOG_LEVEL": "info"}


def client(node: NodeProcess) -> DakeraClient:
    return DakeraClient(node.url, max_retries=3, timeout=60)


def archive_caught_up(nodes: list[NodeProcess]) -> bool:
    """Every node says its archive holds everything it acknowledged (lag and backlog 0)."""
    for node in nodes:
        text = httpx.get(node.url + "/metrics", timeout=5).text
        for name in ("dakera_cold_tier_lag_seconds", "dakera_cold_tier_backlog_bytes"):
            found = re.search(rf"^{name} (\S+)$", text, re.M)
            if found is None or float(found[1]) != 0.0:
                return False
    return True


def store_all(nodes: list[NodeProcess], agents: int, per_agent: int) -> dict[str, set[str]]:
    stored: dict[str, set[str]] = {}
    for a in range(agents):
        agent = f"agent-{a}"
        c = client(nodes[a % len(nodes)])
        items = [BatchStoreMemoryItem(f"note {i} of {agent} about topic {i % 7}", tags=[f"t{i % 7}"])
                 for i in range(per_agent)]
        resp = c.store_memories_batch(BatchStoreMemoryRequest(agent, items))
        assert resp.stored_count == per_agent
        stored[agent] = {m.id for m in resp.stored}
    return stored


def ids_through(node: NodeProcess, agent: str) -> set[str]:
    rec = client(node).batch_recall(BatchRecallRequest(agent, limit=1000))
    return {m["id"] if isinstance(m, dict) else m.id for m in rec.memories}


def wipe(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        node.stop()
        shutil.rmtree(Path(node.env["DAKERA_DATA_DIR"]), ignore_errors=True)


def test_three_nodes_that_lose_every_disk_come_back_from_the_bucket(tmp_path: Path, moto_endpoint: str) -> None:
    prefix = f"restore-{uuid.uuid4().hex[:8]}"
    first = cluster_processes(tmp_path, 3, **env(moto_endpoint, prefix))
    with running(first):
        stored = store_all(first, AGENTS, PER_AGENT)
        wait_for(lambda: archive_caught_up(first), 120, "the archive catching up")
    wipe(first)  # SIGKILL every node (running() kills), then every data dir goes
    fresh = cluster_processes(tmp_path, 3, **env(moto_endpoint, prefix))
    with running(fresh):
        for node in fresh:
            assert "archive_opened" in node.log()
            for agent, ids in stored.items():
                got = ids_through(node, agent)
                assert got == ids, f"{node.url} {agent}: {len(ids - got)} missing, {len(got - ids)} unknown"
        restored = sum(node.log().count("shard_restored_from_archive") for node in fresh)
        assert restored >= 16  # every shard with data came back from the bucket (once per copy at least)
        c = client(fresh[1])
        recalled = c.recall("agent-3", "note 17 of agent-3 about topic 3", top_k=5)
        assert recalled.memories and recalled.memories[0].id in stored["agent-3"]
        assert client(fresh[0]).get_memory("agent-3", recalled.memories[0].id)["content"] == \
            "note 17 of agent-3 about topic 3"
        new = c.store_memory("agent-3", "written after the restore")
        assert client(fresh[2]).get_memory("agent-3", new["id"])["content"] == "written after the restore"


def test_a_node_joining_empty_seeds_from_the_bucket_not_from_peers(tmp_path: Path, moto_endpoint: str) -> None:
    prefix = f"join-{uuid.uuid4().hex[:8]}"
    extra = {**env(moto_endpoint, prefix), "DAKERA_REPLICATION_TAIL_RECORDS": "16"}
    nodes = cluster_processes(tmp_path, 4, seeds=3, **extra)
    with running(nodes[:3]):
        stored = store_all(nodes[:3], 12, 200)
        wait_for(lambda: archive_caught_up(nodes[:3]), 120, "the archive catching up")
        joined = nodes[3].start()
        try:
            joined.wait_healthy(60)
            wait_for(lambda: httpx.get(joined.url + "/v1/admin/cluster/status", timeout=5).json()
                     ["shards_moving"] == 0 and "shard_restored_from_archive" in joined.log(), 120,
                     "the new node taking its copies")
            log = joined.log()
            assert "shard_copied" not in log, "a peer sent a whole copy the bucket had"
            for agent, ids in stored.items():
                assert ids_through(joined, agent) == ids
        finally:
            joined.stop()
