"""The cold tier in simulated clusters (MockClock, memory transport, simulated disks, one shared
in-memory object store with injectable faults)."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.testing import Cluster, open_cluster

from ..sim.test_crash import settled
from ..waiting import eventually

CONFIG = {"shards": 8, "replication_factor": 2, "write_ack": "quorum"}


def archived_up_to_date(cluster: Cluster) -> bool:
    """Every running node's archive holds every shard it is primary of, up to its position."""
    for node in cluster.nodes.values():
        archiver, replicator, memory = node.archiver, node.replicator, node.memory
        if archiver is None or replicator is None or memory is None:
            return False
        for shard in replicator.core.live:
            arch = archiver.core.shards.get(shard)
            seq = memory.shards.shard(shard).seq
            if seq and (arch is None or arch.archived != seq):
                return False
    return True


async def store_many(cluster: Cluster, n: int, *, prefix: str = "m") -> dict[str, str]:
    acked: dict[str, str] = {}
    for i in range(n):
        mid, agent = f"{prefix}{i}", f"agent-{i % 13}"
        async with cluster.client(cluster.ids[i % len(cluster.ids)]) as http:
            r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"memory {mid}", "id": mid})
        assert r.status_code == 200, r.text
        acked[mid] = agent
    return acked


async def missing(cluster: Cluster, acked: dict[str, str]) -> list[tuple[str, str, int]]:
    lost = []
    for node_id in cluster.ids:
        for mid, agent in acked.items():
            async with cluster.client(node_id) as http:
                got = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            if got.status_code != 200 or got.json().get("content") != f"memory {mid}":
                lost.append((node_id, mid, got.status_code))
    return lost


async def test_a_cluster_that_loses_every_disk_comes_back_from_the_bucket(
        autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    async with open_cluster(3, seed=11, config=CONFIG, objects=bucket) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        acked = await store_many(cluster, 120)
        async with cluster.client("node-1") as http:
            gone = await http.post("/v1/memory/forget", json={"agent_id": acked["m5"], "memory_ids": ["m5"]})
        assert gone.status_code == 200, gone.text
        del acked["m5"]
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        tokens = {n.lease.view.value.token for n in cluster.nodes.values() if n.lease}
        for node_id in cluster.ids:
            cluster.kill(node_id)
        for node_id in cluster.ids:
            await cluster.slot(node_id).down.wait()  # type: ignore[union-attr]
            cluster.wipe(node_id)
        for node_id in cluster.ids:
            await cluster.start(node_id)
        await eventually(lambda: settled(cluster), timeout=120)
        assert not await missing(cluster, acked)
        async with cluster.client("node-2") as http:
            got = await http.get("/v1/memory/get/m5", params={"agent_id": "agent-5"})
            assert got.status_code == 404  # a forget acknowledged before the kill stays forgotten
            recalled = await http.post("/v1/memory/recall", json={"agent_id": "agent-3", "query": "memory m3"})
            assert recalled.status_code == 200 and "m3" in [m["id"] for m in recalled.json()["memories"]]
            new = await http.post("/v1/memory/store", json={"agent_id": "agent-1", "content": "after", "id": "after"})
            assert new.status_code == 200
        # the restored cluster elected above every token the archived one held
        leader_tokens = {n.lease.view.value.token for n in cluster.nodes.values() if n.lease}
        assert min(leader_tokens) > max(tokens)
