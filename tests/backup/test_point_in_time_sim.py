"""Point-in-time restores in a simulated three-node cluster (MockClock, memory transport, one shared
in-memory bucket): a point before a primary's crash is rebuilt from the dead primary's archived
term, a point after it from the new primary's, and each restore gives exactly the state at its
point, through every node."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from dakera_actors.cold.format import parse_key
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.testing import Cluster, open_cluster

from ..cold.test_cluster_sim import archived_up_to_date
from ..sim.test_crash import settled
from ..waiting import eventually

CONFIG = {"shards": 8, "replication_factor": 2, "write_ack": "quorum", "cold_flush_ms": 200}
AGENTS = 7


async def post(cluster: Cluster, node: str, path: str, body: dict[str, Any]) -> Any:
    """A write through ``node``, retried while the cluster fails over (a deadline, no fixed waits)."""
    with trio.fail_after(60):
        while True:
            async with cluster.client(node) as http:
                r = await http.post(path, json=body)
            if r.status_code in (200, 201):
                return r.json()
            assert r.status_code in (503, 504, 421, 409), r.text
            await trio.sleep(0.2)


async def write(cluster: Cluster, nodes: list[str], prefix: str, n: int) -> dict[str, str]:
    done = {}
    for i in range(n):
        mid, agent = f"{prefix}{i}", f"agent-{i % AGENTS}"
        await post(cluster, nodes[i % len(nodes)], "/v1/memory/store",
                   {"agent_id": agent, "content": f"memory {mid}", "id": mid})
        done[mid] = agent
    return done


async def forget(cluster: Cluster, node: str, held: dict[str, str], ids: list[str]) -> None:
    for mid in ids:
        await post(cluster, node, "/v1/memory/forget", {"agent_id": held.pop(mid), "memory_ids": [mid]})


async def state(cluster: Cluster, node: str) -> dict[str, str]:
    found = {}
    for a in range(AGENTS):
        async with cluster.client(node) as http:
            r = await http.get(f"/v1/agents/agent-{a}/memories", params={"limit": 1000})
        assert r.status_code == 200, r.text
        found.update({m["id"]: f"agent-{a}" for m in r.json()})
    return found


async def restore_to(cluster: Cluster, node: str, at: float) -> dict[str, Any]:
    job = await post(cluster, node, "/v1/admin/backups/restore", {"backup_id": "", "point_in_time": at})
    with trio.fail_after(120):
        while True:
            async with cluster.client(node) as http:
                got = (await http.get(f"/v1/admin/backups/restore/{job['restore_id']}")).json()
            if got["status"] != "inprogress":
                return got
            await trio.sleep(0.5)


async def test_points_before_and_after_a_primary_crash_restore_exactly_their_state(
        autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    async with open_cluster(3, seed=17, config=CONFIG, objects=bucket, backup_objects=MemoryObjectStore()) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        everyone = list(cluster.ids)
        held = await write(cluster, everyone, "x", 40)
        await trio.sleep(1.0)
        t1 = cluster.wall_clock()
        at_t1 = dict(held)
        await trio.sleep(1.0)
        held.update(await write(cluster, everyone, "y", 40))
        await forget(cluster, "node-2", held, [f"x{i}" for i in range(5)])
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        smap = cluster.node("node-2").shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None and any(copies[0] == "node-1" for copies in smap.placement)
        cluster.kill("node-1")  # a primary of some shards: its replicas take them over in new terms
        survivors = ["node-2", "node-3"]
        held.update(await write(cluster, survivors, "z", 40))
        await forget(cluster, "node-3", held, [f"y{i}" for i in range(5)])
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        await trio.sleep(1.0)
        t2 = cluster.wall_clock()
        at_t2 = dict(held)
        await trio.sleep(1.0)
        held.update(await write(cluster, survivors, "w", 20))
        await forget(cluster, "node-2", held, [f"z{i}" for i in range(5)])
        assert await state(cluster, "node-3") == held
        # some shard's history is in two terms: the dead primary's and its successor's
        terms: dict[int, set[int]] = {}
        for key in bucket.objects:
            if (o := parse_key(key)) is not None:
                terms.setdefault(o.shard, set()).add(o.chain)
        assert max(len(t) for t in terms.values()) >= 2

        done = await restore_to(cluster, "node-2", t1)
        assert done["status"] == "completed", done
        for node in survivors:
            assert await state(cluster, node) == at_t1
        done = await restore_to(cluster, "node-3", t2)
        assert done["status"] == "completed", done
        for node in survivors:
            assert await state(cluster, node) == at_t2
