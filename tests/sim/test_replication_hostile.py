"""What a primary sends is checked before a replica logs it: a record or snapshot part it cannot
apply is refused and counted, never written to the WAL, so the replica lives on and restarts."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import open_cluster
from dakera_actors.wal.record import WalRecord

from ..waiting import eventually
from .test_replication import agent_on, image, one_map, replicas_equal_primaries, settled, store

MockClock = trio.testing.MockClock


def refused(cluster: object, node_id: str) -> float:
    return cluster.node(node_id).metrics.sample("dakera_wire_rejected_total", reason="bad_record")  # type: ignore[attr-defined]


async def test_a_record_with_an_unknown_op_is_refused_before_the_wal(autojump_clock: MockClock) -> None:
    async with open_cluster(2, seed=21) as cluster:
        await eventually(lambda: settled(cluster, 2), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        agent = agent_on(smap, "node-1")
        shard = shard_of(agent, 64)
        replica = smap.placement[shard][1]
        assert await store(cluster, "node-1", agent, "m-1", "before") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        # "the primary" hands out whatever its tail holds: here a record no node can apply
        primary = cluster.node("node-1")
        tail = primary.memory.owner.tails[shard]  # type: ignore[union-attr]
        epoch, seq = tail.last
        tail.append(WalRecord(0, shard, "bogus", {"x": 1}, 0.0, seq + 1, epoch), trio.current_time())
        tail.append(WalRecord(0, shard, "put", {"m": {}, "v": b""}, 0.0, seq + 2, epoch), trio.current_time())
        primary.replicator._notify()  # type: ignore[union-attr]
        await eventually(lambda: refused(cluster, replica) >= 1, timeout=10)
        assert image(cluster, replica, shard)[0] == (epoch, seq)  # neither applied nor logged
        # the replica serves on, and its WAL replays cleanly after a restart
        await cluster.restart(replica)
        await eventually(lambda: cluster.node(replica).readiness.ready, timeout=30)
        position, memories = image(cluster, replica, shard)
        assert position == (epoch, seq) and "m-1" in memories
