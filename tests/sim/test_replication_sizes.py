"""Shard copies are cut by encoded bytes: large non-ASCII memories never make a snapshot chunk over
the frame limit, a fetch reply over it, or an install's ``load`` record over the WAL record limit."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import open_cluster
from dakera_actors.wal import record as walrecord

from ..waiting import eventually
from .test_replication import image, one_map, replicas_equal_primaries, settled

MockClock = trio.testing.MockClock


async def test_a_shard_of_large_non_ascii_memories_is_copied_within_the_limits(
        autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # small limits so the test stays fast: 64 KiB frames, 128 KiB WAL records; 40 memories of
    # ~7 KiB each (3000 two-byte characters) are ~300 KiB in one shard: 256 of them a chunk or a
    # load record (the old cut) would exceed both
    monkeypatch.setattr(walrecord, "MAX_RECORD_BYTES", 128 * 1024)
    config = {"max_frame_bytes": 64 * 1024, "replication_tail_records": 16, "bootstrap_expect": 1}
    async with open_cluster(2, seed=31, start=1, config=config,
                            node_config={"node-1": {"cluster_seeds": ()}}) as cluster:
        await eventually(lambda: settled(cluster, 1), timeout=30)
        agent = "agent-big"
        async with cluster.client("node-1") as http:
            for i in range(40):
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "id": f"m-{i}",
                                                              "content": f"{i} " + "é" * 3000})
                assert r.status_code == 200, r.text
        await cluster.start("node-2")  # it needs the whole shard: the tail holds only 16 records
        await eventually(lambda: settled(cluster, 2) and one_map(cluster).counted == 2  # type: ignore[union-attr]
                         and replicas_equal_primaries(cluster), timeout=120)
        shard = shard_of(agent, 64)
        smap = one_map(cluster)
        assert smap is not None and "node-2" in smap.placement[shard]
        assert len(image(cluster, "node-2", shard)[1]) == 40
        # and the copy's WAL replays after a restart
        await cluster.restart("node-2")
        await eventually(lambda: cluster.node("node-2").readiness.ready, timeout=30)
        assert len(image(cluster, "node-2", shard)[1]) == 40
