"""Backup jobs in a simulated cluster sharing one backup store (MockClock): a backup and a restore
asked of a node that does not lead run on the leader, and the node answers the leader's record."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.backup import jobs
from dakera_actors.backup.cluster import NodeCluster
from dakera_actors.backup.store import BackupStore
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.testing import Cluster, open_cluster

from ..sim.test_crash import settled
from ..waiting import eventually, eventually_async
from .test_schedule_sim import leader


async def ids_of(cluster: Cluster, node_id: str, agent: str) -> set[str]:
    async with cluster.client(node_id) as http:
        r = await http.get(f"/v1/agents/{agent}/memories", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()}


async def test_jobs_asked_of_a_follower_run_on_the_leader(autojump_clock: trio.testing.MockClock) -> None:
    backups = MemoryObjectStore()
    async with open_cluster(3, seed=17, config={"shards": 8}, objects=MemoryObjectStore(),
                            backup_objects=backups) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        await eventually(lambda: leader(cluster) is not None, timeout=60)
        lead = leader(cluster)
        assert lead is not None
        token = cluster.node(lead).lease.view.value.token  # type: ignore[union-attr]
        follower = next(n for n in cluster.ids if n != lead)
        async with cluster.client(follower) as http:
            for i in range(20):
                r = await http.post("/v1/memory/store", json={"agent_id": f"agent-{i % 4}", "content": f"memory {i}",
                                                              "id": f"m{i}"})
                assert r.status_code == 200, r.text
            before = {a: await ids_of(cluster, follower, f"agent-{a}") for a in range(4)}
            r = await http.post("/v1/admin/backups", json={"name": "asked-of-a-follower"})
            assert r.status_code == 201, r.text
            created = r.json()
            assert created["runner"] == lead and created["token"] == token  # the leader took the cut

            async def status(path: str) -> str:
                got = await http.get(path)
                assert got.status_code == 200, got.text
                return str(got.json()["status"])

            async def over(path: str) -> None:
                async def ended() -> bool:
                    return await status(path) != "inprogress"

                await eventually_async(ended, timeout=60)

            await over(f"/v1/admin/backups/{created['id']}")
            assert await status(f"/v1/admin/backups/{created['id']}") == "completed"
            r = await http.post("/v1/memory/store", json={"agent_id": "agent-0", "content": "late", "id": "late"})
            assert r.status_code == 200
            r = await http.post("/v1/admin/backups/restore", json={"backup_id": created["id"], "overwrite": True})
            assert r.status_code == 201, r.text
            job = r.json()
            assert job["runner"] == lead and job["token"] == token and job["status"] == "inprogress"
            await over(f"/v1/admin/backups/restore/{job['restore_id']}")
            done = (await http.get(f"/v1/admin/backups/restore/{job['restore_id']}")).json()
            assert done["status"] == "completed" and done["vectors_restored"] == 20, done
            after = {a: await ids_of(cluster, follower, f"agent-{a}") for a in range(4)}
            assert after == before and "late" not in after[0]
            # a raw bundle posted to a follower: kept in the shared store, restored by id on the leader
            bundle = (await http.get(f"/v1/admin/backups/{created['id']}/download")).content
            r = await http.post("/v1/admin/backups/restore", content=bundle,
                                headers={"Content-Type": "application/gzip"})
            assert r.status_code == 201, r.text
            assert r.json()["runner"] == lead and r.json()["backup_id"] == created["id"]  # the same bundle, kept once
            await over(f"/v1/admin/backups/restore/{r.json()['restore_id']}")
            assert await status(f"/v1/admin/backups/restore/{r.json()['restore_id']}") == "completed"


async def test_a_restore_whose_leader_dies_is_finished_by_the_next_leader(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "RESTORE_REQUEST_BYTES", 1)  # one memory a request: a long job
    real_run = NodeCluster.run

    async def slow_run(self: NodeCluster, op: str, body: bytes) -> tuple[int, Any]:
        await trio.sleep(0.5)  # simulated seconds: the leader is killed while the job is under way
        return await real_run(self, op, body)

    monkeypatch.setattr(NodeCluster, "run", slow_run)
    backups = MemoryObjectStore()
    store = BackupStore(backups, location="mem:/")
    async with open_cluster(3, seed=23, config={"shards": 8}, objects=MemoryObjectStore(),
                            backup_objects=backups) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        await eventually(lambda: leader(cluster) is not None, timeout=60)
        lead = leader(cluster)
        assert lead is not None
        follower = next(n for n in cluster.ids if n != lead)
        async with cluster.client(follower) as http:
            for i in range(60):
                r = await http.post("/v1/memory/store", json={"agent_id": f"agent-{i % 3}", "content": f"memory {i}",
                                                              "id": f"m{i}"})
                assert r.status_code == 200, r.text
            r = await http.post("/v1/admin/backups", json={})
            assert r.status_code == 201, r.text
            backup_id = r.json()["id"]

            async def backed_up() -> bool:
                info = await store.info(backup_id)
                return info is not None and info.status == "completed"

            await eventually_async(backed_up, timeout=60)
            for a in range(3):  # forgotten after the backup: the restore puts them back
                r = await http.post("/v1/memory/forget", json={
                    "agent_id": f"agent-{a}", "memory_ids": [f"m{i}" for i in range(a, 60, 6)]})
                assert r.status_code == 200, r.text
            assert sum([len(await ids_of(cluster, follower, f"agent-{a}")) for a in range(3)]) == 30
            r = await http.post("/v1/admin/backups/restore", json={"backup_id": backup_id})
            assert r.status_code == 201, r.text
            restore_id = r.json()["restore_id"]
            assert r.json()["runner"] == lead

            async def under_way() -> bool:
                job = await store.restore(restore_id)
                assert job is not None and job.status == "inprogress", job
                return job.done > 0

            await eventually_async(under_way, timeout=60)
        cluster.kill(lead)  # mid-restore: its progress is on the record, the rest is not applied
        await eventually(lambda: leader(cluster) not in (None, lead), timeout=60)
        new = leader(cluster)

        async def finished() -> bool:
            job = await store.restore(restore_id)
            return job is not None and job.status != "inprogress"

        await eventually_async(finished, timeout=300)
        job = await store.restore(restore_id)
        assert job is not None and job.status == "completed" and job.runner == new, job
        assert job.done == job.batches == 60
        claims = [k for k in backups.objects if k.startswith(f"claims/restores/{restore_id}/")]
        assert len(claims) == 1
        survivor = next(n for n in cluster.ids if n != lead)
        got = set()
        for a in range(3):
            got |= await ids_of(cluster, survivor, f"agent-{a}")
        assert got == {f"m{i}" for i in range(60)}
