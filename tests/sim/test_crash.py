"""The harness's kill is a loss of power: nothing the dead node runs while it unwinds is durable."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from dakera_actors.testing import Cluster, open_cluster
from dakera_actors.wal.actor import WalActor
from dakera_actors.wal.memory import SimDisk

from ..waiting import eventually


async def test_kill_loses_the_unsynced_tail_although_on_stop_would_sync_it(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(1, seed=7) as cluster:
        node = cluster.node("node-1")
        await eventually(lambda: node.readiness.ready, timeout=30)
        disk = cluster.slot("node-1").disk
        assert isinstance(disk, SimDisk)
        wal = next(a for a in node.actors if isinstance(a, WalActor))
        synced = disk.synced_lsn
        wal.log.append([(0, "put", {"in": "flight"}, 1.0)])  # written, its fsync not yet returned
        cluster.kill("node-1")  # WalActor.on_stop closes (syncs) the log while the node unwinds
        down = cluster.slot("node-1").down
        assert down is not None
        await down.wait()
        assert disk.synced_lsn == synced and disk.crashes == 1
        restarted = await cluster.restart("node-1")
        await eventually(lambda: restarted.readiness.ready, timeout=30)
        wal = next(a for a in restarted.actors if isinstance(a, WalActor))
        assert wal.log.last_lsn == synced


def settled(cluster: Cluster) -> bool:
    """Every node runs, ready, with one map naming them all, nothing down, no shard syncing."""
    maps = [n.shard_map.view.value for n in cluster.nodes.values()]  # type: ignore[union-attr]
    keys = {m.key if m is not None else None for m in maps}
    return (len(cluster.nodes) == len(cluster.ids) and len(keys) == 1 and None not in keys
            and maps[0] is not None and len(maps[0].members()) == len(cluster.ids) and not maps[0].down
            and all(n.readiness.ready and n.replicator is not None and not n.replicator.syncing
                    for n in cluster.nodes.values()))


async def test_every_acknowledged_write_survives_a_power_cut_of_the_whole_cluster(
        autojump_clock: trio.testing.MockClock) -> None:
    """Replication cannot hide a missing fsync here: every copy loses power at the same instant."""
    async with open_cluster(3, seed=31) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        acked: dict[str, str] = {}
        enough = trio.Event()  # writes take no simulated time: wait on the count, not the clock

        async def writer(w: int) -> None:
            for i in range(1000):
                mid, agent = f"w{w}-{i}", f"agent-{(7 * w + i) % 11}"
                try:
                    async with cluster.client(cluster.ids[w % 3]) as http:
                        r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": mid, "id": mid})
                except httpx.ConnectError:  # resumed after the power cut, before its cancellation
                    return
                if r.status_code == 200:
                    acked[mid] = agent
                if len(acked) >= 60:
                    enough.set()

        async with trio.open_nursery() as nursery:
            for w in range(6):
                nursery.start_soon(writer, w)
            with trio.fail_after(60):
                await enough.wait()
            for node_id in cluster.ids:  # no node runs between these: one instant for all
                cluster.kill(node_id)
            nursery.cancel_scope.cancel()  # writes in flight are cut, never acknowledged
        for node_id in cluster.ids:
            await cluster.restart(node_id)
        await eventually(lambda: settled(cluster), timeout=120)
        lost: list[tuple[str, int]] = []
        for mid, agent in acked.items():
            async with cluster.client(cluster.ids[len(lost) % 3]) as http:
                got = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            if got.status_code != 200 or got.json().get("content") != mid:
                lost.append((mid, got.status_code))
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"


def test_what_a_killed_node_raises_while_unwinding_is_dropped_but_an_interrupt() -> None:
    from dakera_actors.testing.cluster import _fail_unless_dead
    from dakera_actors.wal.memory import SimDiskCrashedError

    _fail_unless_dead(SimDiskCrashedError("dead disk"))
    _fail_unless_dead(ExceptionGroup("unwinding", [SimDiskCrashedError("wal"), RuntimeError("actor crashed")]))
    with pytest.raises(BaseExceptionGroup) as raised:
        _fail_unless_dead(BaseExceptionGroup("unwinding", [RuntimeError("x"), KeyboardInterrupt()]))
    assert raised.value.subgroup(KeyboardInterrupt) is not None
    with pytest.raises(SystemExit):
        _fail_unless_dead(SystemExit(1))
