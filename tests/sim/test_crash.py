"""The harness's kill is a loss of power: nothing the dead node runs while it unwinds is durable."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.testing import open_cluster
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
