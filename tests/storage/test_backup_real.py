"""Backups with real processes, a real S3 server (moto's) and the official SDK: a backup of a
three-node cluster taken under concurrent writes, downloaded, the whole cluster wiped, a new one
started, the bundle uploaded to /admin/backups/restore: every memory of the cut is back and
nothing after it."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from dakera import BatchRecallRequest, BatchStoreMemoryItem, BatchStoreMemoryRequest, DakeraClient

from dakera_actors.backup.bundle import open_bundle
from tests.real.procs import cluster_processes, running, wait_for

from .conftest import BUCKET

pytestmark = pytest.mark.real
AGENTS = 20
PER_AGENT = 250  # 5,000 memories


def env(endpoint: str, prefix: str) -> dict[str, str]:
    return {"DAKERA_STORAGE": "s3", "DAKERA_S3_ENDPOINT": endpoint, "DAKERA_S3_BUCKET": BUCKET,
            "DAKERA_S3_ACCESS_KEY": "test", "DAKERA_S3_SECRET_KEY": "test", "DAKERA_S3_PREFIX": f"{prefix}/cold",
            "DAKERA_BACKUP_STORAGE": "s3", "DAKERA_BACKUP_S3_ENDPOINT": endpoint, "DAKERA_BACKUP_S3_BUCKET": BUCKET,
            "DAKERA_BACKUP_S3_PREFIX": f"{prefix}/backups", "DAKERA_REPLICATION_FACTOR": "2",
            "DAKERA_SHARDS": "16", "DAKERA_WRITE_ACK": "quorum"}


def client(url: str) -> DakeraClient:
    return DakeraClient(url, max_retries=3, timeout=60)


def ids_of(url: str, agent: str) -> set[str]:
    rec = client(url).batch_recall(BatchRecallRequest(agent, limit=1000))
    return {m["id"] if isinstance(m, dict) else m.id for m in rec.memories}


def test_a_backup_under_writes_restores_a_wiped_cluster_to_its_cut(tmp_path: Path, moto_endpoint: str) -> None:
    prefix = f"backup-{uuid.uuid4().hex[:8]}"
    first = cluster_processes(tmp_path, 3, **env(moto_endpoint, prefix))
    with running(first):
        for a in range(AGENTS):
            items = [BatchStoreMemoryItem(f"note {i} of agent-{a}") for i in range(PER_AGENT)]
            assert client(first[a % 3].url).store_memories_batch(BatchStoreMemoryRequest(f"agent-{a}", items)) \
                .stored_count == PER_AGENT
        before = {f"agent-{a}": ids_of(first[0].url, f"agent-{a}") for a in range(AGENTS)}
        stop = threading.Event()
        during: list[tuple[str, str]] = []

        def writer() -> None:  # concurrent writes while the backup runs
            c, n = client(first[1].url), 0
            while not stop.is_set():
                agent = f"agent-{n % AGENTS}"
                during.append((agent, c.store_memory(agent, f"written during the backup {n}")["id"]))
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            created = client(first[2].url).admin_create_backup("under-load")
            backup_id = created["id"]
            wait_for(lambda: client(first[2].url).admin_get_backup(backup_id)["status"] != "inprogress", 120,
                     "the backup finishing")
        finally:
            stop.set()
            thread.join(30)
        info = client(first[0].url).admin_get_backup(backup_id)  # any node lists it: the backup bucket is shared
        assert info["status"] == "completed", info
        assert backup_id in {b["backup_id"] for b in client(first[1].url).admin_list_backups()["backups"]}
        bundle = client(first[2].url).download_backup(backup_id)
        after_id = client(first[0].url).store_memory("agent-0", "after the backup")["id"]
    cut: dict[str, set[str]] = {}
    for part in open_bundle(bundle, limit=1 << 30).parts:
        for record, _vector in part.memories:
            cut.setdefault(record["a"], set()).add(record["id"])
    assert sum(map(len, cut.values())) == info["vector_count"] >= AGENTS * PER_AGENT
    for agent, ids in before.items():
        assert ids <= cut[agent]  # everything acknowledged before the backup began is in the cut
    for node in first:
        shutil.rmtree(Path(node.env["DAKERA_DATA_DIR"]), ignore_errors=True)
    # a brand-new cluster (its own cold-tier prefix), the bundle uploaded as the seed describes
    fresh = cluster_processes(tmp_path, 3, **{**env(moto_endpoint, prefix + "-new")})
    with running(fresh):
        r = httpx.post(fresh[0].url + "/v1/admin/backups/restore", content=bundle,
                       headers={"Content-Type": "application/gzip"}, timeout=60)
        assert r.status_code == 201, r.text
        restore_id = r.json()["restore_id"]
        wait_for(lambda: client(fresh[0].url).admin_get_restore_status(restore_id)["status"] != "inprogress", 180,
                 "the restore finishing")
        job = client(fresh[0].url).admin_get_restore_status(restore_id)
        assert job["status"] == "completed" and job["vectors_restored"] == info["vector_count"], job
        for node in fresh:
            for agent in sorted(cut):
                assert ids_of(node.url, agent) == cut[agent], (node.url, agent)
        assert after_id not in cut["agent-0"]
