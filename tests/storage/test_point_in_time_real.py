"""A point-in-time restore of a wiped cluster, with real processes, a real S3 server (moto's) and
the official SDK: three nodes write, a second is noted, more writes and forgets follow, every data
directory is wiped, a new cluster starts on the same bucket (the cold tier brings back its newest
state), and a restore to the noted second brings back exactly what was there then."""

from __future__ import annotations

import math
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from dakera import BatchStoreMemoryItem, BatchStoreMemoryRequest

from tests.real.procs import cluster_processes, running, wait_for

from .test_backup_real import client, ids_of
from .test_backup_real import env as backup_env

pytestmark = pytest.mark.real
AGENTS = 6
PER_AGENT = 40


def env(endpoint: str, prefix: str) -> dict[str, str]:
    """The backup test's cluster on the bucket, with fewer shards and a shorter flush."""
    return {**backup_env(endpoint, prefix), "DAKERA_SHARDS": "8", "DAKERA_COLD_FLUSH_MS": "200"}


def archive_lag(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("dakera_cold_tier_lag_seconds"):
            return float(line.split()[-1])
    raise AssertionError("no dakera_cold_tier_lag_seconds")


def test_a_wiped_cluster_is_restored_to_a_point_in_time(tmp_path: Path, moto_endpoint: str) -> None:
    prefix = f"pitr-{uuid.uuid4().hex[:8]}"
    first = cluster_processes(tmp_path, 3, **env(moto_endpoint, prefix))
    with running(first):
        for a in range(AGENTS):
            items = [BatchStoreMemoryItem(f"note {i} of agent-{a}") for i in range(PER_AGENT)]
            assert client(first[a % 3].url).store_memories_batch(BatchStoreMemoryRequest(f"agent-{a}", items)) \
                .stored_count == PER_AGENT
        at_t1 = {f"agent-{a}": ids_of(first[0].url, f"agent-{a}") for a in range(AGENTS)}
        assert all(len(ids) == PER_AGENT for ids in at_t1.values())
        t1 = math.ceil(time.time())  # the SDK sends whole seconds
        time.sleep(max(t1 + 0.05 - time.time(), 0))  # the wall clock past t1 before anything else is written
        later = {f"agent-{a}": client(first[(a + 1) % 3].url).store_memory(f"agent-{a}", "after t1")["id"]
                 for a in range(AGENTS)}
        forgotten = sorted(at_t1["agent-0"])[:10]
        for mid in forgotten:
            client(first[1].url).forget("agent-0", mid)
        client(first[2].url).store_memory("born-later", "an agent that did not exist at t1")
        assert forgotten[0] not in ids_of(first[0].url, "agent-0")
        # everything acknowledged reaches the archive within the flush interval: no node lags
        wait_for(lambda: all(archive_lag(n.url) == 0 for n in first), 30, "the archive catching up")
    for node in first:
        shutil.rmtree(Path(node.env["DAKERA_DATA_DIR"]), ignore_errors=True)
    # new machines, empty disks, the same bucket: the cold tier restores the newest state
    fresh = cluster_processes(tmp_path, 3, **env(moto_endpoint, prefix))
    with running(fresh):
        wait_for(lambda: later["agent-3"] in ids_of(fresh[0].url, "agent-3"), 120, "the newest state restored")
        job = client(fresh[1].url).admin_restore_backup("", point_in_time=t1)
        restore_id = job["restore_id"]
        wait_for(lambda: client(fresh[1].url).admin_get_restore_status(restore_id)["status"] != "inprogress", 180,
                 "the point-in-time restore finishing")
        done = client(fresh[1].url).admin_get_restore_status(restore_id)
        assert done["status"] == "completed", done
        for node in fresh:
            for agent, ids in at_t1.items():
                assert ids_of(node.url, agent) == ids, (node.url, agent)
            assert ids_of(node.url, "born-later") == set()
