"""The cold tier in simulated clusters (MockClock, memory transport, simulated disks, one shared
in-memory object store with injectable faults)."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.cold.format import parse_key
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


def assert_tokens_cover_the_archive(bucket: MemoryObjectStore) -> None:
    """Every epoch inside any archived object is under a token the archive records: a cluster
    restored from it elects above all of them."""
    from dakera_actors.cold.format import decode_chunk, decode_snapshot, parse_token_key

    recorded = max((t for k in bucket.objects if (t := parse_token_key(k)) is not None), default=0)
    assert recorded > 0
    for key, data in bucket.objects.items():
        obj = parse_key(key)
        if obj is None:
            continue
        epochs = ([decode_snapshot(data, obj).epoch] if obj.snapshot else [r.epoch for r in decode_chunk(data, obj)])
        assert max([obj.chain, *epochs]) >> 32 <= recorded, key


async def store_many(cluster: Cluster, n: int, *, prefix: str = "m") -> dict[str, str]:
    acked: dict[str, str] = {}
    running = list(cluster.nodes)
    for i in range(n):
        mid, agent = f"{prefix}{i}", f"agent-{i % 13}"
        async with cluster.client(running[i % len(running)]) as http:
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
        assert_tokens_cover_the_archive(bucket)
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


async def restart_from_bucket(cluster: Cluster) -> None:
    """Kill every node, wipe every disk, start them all again: only the bucket remains."""
    for node_id in cluster.ids:
        if cluster.slot(node_id).running:
            cluster.kill(node_id)
    for node_id in cluster.ids:
        down = cluster.slot(node_id).down
        if down is not None:
            await down.wait()
        cluster.wipe(node_id)
    cluster.heal()
    for node_id in cluster.ids:
        await cluster.start(node_id)
    await eventually(lambda: settled(cluster), timeout=180)


async def test_archive_lag_stays_under_the_flush_interval_without_faults(
        autojump_clock: trio.testing.MockClock) -> None:
    """Writes spread over simulated time; the worst lag any archiver reports stays under the
    flush interval (1 s by default), and everything written is archived at the end."""
    bucket = MemoryObjectStore()
    async with open_cluster(3, seed=12, config=CONFIG, objects=bucket) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        worst = 0.0
        done = trio.Event()

        async def sample() -> None:
            nonlocal worst
            while not done.is_set():
                for node in cluster.nodes.values():
                    if node.archiver is not None:
                        worst = max(worst, node.archiver.tier_stats().lag_seconds)
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            for i in range(200):
                await store_many(cluster, 1, prefix=f"t{i}-")
                await trio.sleep(0.03)  # ~30 writes a second for six simulated seconds
            await eventually(lambda: archived_up_to_date(cluster), timeout=30)
            done.set()
        uploads = sum(n.archiver.counters.uploads_ok for n in cluster.nodes.values() if n.archiver)
        assert 0 < worst <= 1.0, worst
        assert uploads < 200  # records are batched into chunks, not one object per write


async def test_an_outage_of_five_minutes_loses_nothing_and_drains_after(
        autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    async with open_cluster(3, seed=13, config=CONFIG, objects=bucket) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        acked = await store_many(cluster, 40, prefix="before")
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        bucket.faults.outage = True
        calls = bucket.faults.calls
        started = trio.current_time()
        during: dict[str, str] = {}
        while trio.current_time() - started < 300:
            during.update(await store_many(cluster, 1, prefix=f"out{len(during)}-"))  # writes go on
            await trio.sleep(5)
        stats = [n.archiver.tier_stats() for n in cluster.nodes.values() if n.archiver]
        assert any(s.circuit_open for s in stats) and max(s.lag_seconds for s in stats) > 60
        assert any(s.behind for s in stats)
        # the circuit breaker keeps a dead endpoint from being hammered: a few calls a minute
        assert bucket.faults.calls - calls < 300
        bucket.faults.outage = False
        await eventually(lambda: archived_up_to_date(cluster), timeout=120)
        assert not any(n.archiver.tier_stats().circuit_open for n in cluster.nodes.values() if n.archiver)
        await restart_from_bucket(cluster)
        assert not await missing(cluster, {**acked, **during})


async def test_a_node_joining_empty_seeds_its_copies_from_the_bucket(
        autojump_clock: trio.testing.MockClock) -> None:
    bucket = MemoryObjectStore()
    # a tail of a few records: a new copy of any shard with data needs a whole copy (as with big shards)
    config = {**CONFIG, "replication_tail_records": 16}
    async with open_cluster(4, seed=14, config=config, objects=bucket, start=3) as cluster:
        def three_settled() -> bool:
            return len(cluster.nodes) == 3 and all(n.readiness.ready and n.replicator is not None
                                                   and not n.replicator.syncing for n in cluster.nodes.values())

        await eventually(three_settled, timeout=60)
        acked = await store_many(cluster, 400)  # 50 records a shard: more than a tail keeps
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        joined = await cluster.start("node-4")
        await eventually(lambda: settled(cluster), timeout=180)
        assert joined.seeder is not None and joined.seeder.counters.restores > 0
        received = joined.metrics.replication_snapshots.labels("received")._value.get()
        assert received == 0, "a peer sent a whole copy that the bucket had"
        held = [s for s, shard in joined.memory.shards.shards.items() if shard.agents]  # type: ignore[union-attr]
        assert held
        assert not await missing(cluster, acked)


async def test_a_cut_off_primary_still_uploading_never_wins_a_restore(
        autojump_clock: trio.testing.MockClock) -> None:
    """The old primary of a shard is cut off from the others but not from the bucket: it keeps
    taking writes (never acknowledged: no quorum) and archiving them under its old term, while
    the majority's new primary acknowledges a newer value and a forget. A restore from the
    bucket alone brings back the acknowledged history, not the stale one."""
    from dakera_actors.store.shard import shard_of

    bucket = MemoryObjectStore()
    config = {**CONFIG, "replication_factor": 3, "request_timeout": 2.0}
    async with open_cluster(3, seed=15, config=config, objects=bucket) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        agent = "agent-x"
        shard = shard_of(agent, CONFIG["shards"])
        smap = cluster.node("node-1").shard_map.view.value  # type: ignore[union-attr]
        old = smap.placement[shard][0]
        others = [i for i in cluster.ids if i != old]

        async def store(node_id: str, mid: str, content: str) -> int:
            async with cluster.client(node_id) as http:
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": content, "id": mid})
            return r.status_code

        assert await store(old, "x", "v1") == 200 and await store(old, "d", "d1") == 200
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        cluster.partition([old], others)
        stale = cluster.node(old)

        def moved() -> bool:
            m = cluster.node(others[0]).shard_map.view.value  # type: ignore[union-attr]
            new = m.placement[shard][0] if m is not None else old
            rep = cluster.node(new).replicator if new != old else None
            return rep is not None and shard in rep.core.live

        await eventually(moved, timeout=120)
        assert await store(others[0], "x", "fresh") == 200
        async with cluster.client(others[1]) as http:
            gone = await http.post("/v1/memory/forget", json={"agent_id": agent, "memory_ids": ["d"]})
        assert gone.status_code == 200, gone.text
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)  # the new term's chain is up
        # now the stale primary writes (never acknowledged: no quorum) and archives, a whole
        # snapshot too, under its old term: the newest objects in the bucket are the stale ones
        stale_arch = stale.archiver.core.shards[shard]  # type: ignore[union-attr]
        stale_arch.needs_snapshot = True  # its next upload is a whole snapshot
        for mid, content in (("x", "stale"), ("d", "stale-d"), ("s1", "stale-only")):
            assert await store(old, mid, content) != 200
        seq_stale = stale.memory.shards.shard(shard).seq  # type: ignore[union-attr]
        await eventually(lambda: stale_arch.archived == seq_stale and not stale_arch.needs_snapshot, timeout=60)
        chains = {o.chain for k in bucket.objects if (o := parse_key(k)) is not None and o.shard == shard and o.snapshot}
        assert len(chains) >= 2, "both terms' chains must be in the bucket for this test to mean anything"
        await restart_from_bucket(cluster)
        async with cluster.client(others[0]) as http:
            x = await http.get("/v1/memory/get/x", params={"agent_id": agent})
            d = await http.get("/v1/memory/get/d", params={"agent_id": agent})
        assert x.status_code == 200 and x.json()["content"] == "fresh"
        assert d.status_code == 404, d.text  # the acknowledged forget is not undone


async def test_the_agent_listing_of_a_cluster_restoring_from_the_bucket_is_whole_or_refused(
        autojump_clock: trio.testing.MockClock) -> None:
    """While primaries are still installing their shards from a slow bucket, listing the agents
    answers 503 or every agent: never a partial list (a point-in-time restore empties the agents
    the listing names and the point did not hold: one missing would come back)."""
    bucket = MemoryObjectStore()
    async with open_cluster(3, seed=15, config=CONFIG, objects=bucket) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        acked = await store_many(cluster, 60)
        await eventually(lambda: archived_up_to_date(cluster), timeout=30)
        agents = set(acked.values())
        for node_id in cluster.ids:
            cluster.kill(node_id)
        for node_id in cluster.ids:
            await cluster.slot(node_id).down.wait()  # type: ignore[union-attr]
            cluster.wipe(node_id)
        bucket.faults.delay = 0.5  # every read of the bucket is slow: the takeovers last seconds
        for node_id in cluster.ids:
            await cluster.start(node_id)
        answers: list[int] = []
        with trio.fail_after(300):
            while not settled(cluster):
                async with cluster.client("node-2") as http:
                    got = await http.get("/v1/agents", params={"limit": 100})
                answers.append(got.status_code)
                if got.status_code == 200:
                    assert {a["agent_id"] for a in got.json()} == agents
                else:
                    assert got.status_code == 503, got.text
                await trio.sleep(0.2)
        assert 503 in answers  # the listing was asked while shards were being restored
