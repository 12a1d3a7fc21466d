"""Replication in in-process clusters (MockClock): replicas converge, dead primaries are replaced
by promoted replicas holding every acknowledged write, returning nodes catch up."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.sharding.shardmap import ShardMap
from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster, open_cluster

from ..embedcount import count_embeddings
from ..waiting import eventually

MockClock = trio.testing.MockClock


def one_map(cluster: Cluster) -> ShardMap | None:
    maps = [n.shard_map.view.value for n in cluster.nodes.values()]  # type: ignore[union-attr]
    keys = {m.key if m else None for m in maps}
    return maps[0] if len(keys) == 1 and None not in keys else None


def settled(cluster: Cluster, members: int) -> bool:
    smap = one_map(cluster)
    return (smap is not None and len(smap.members()) == members and not smap.down
            and all(n.readiness.ready and n.replicator is not None and not n.replicator.syncing
                    for n in cluster.nodes.values()))


def image(cluster: Cluster, node_id: str, shard: int) -> tuple[tuple[int, int], dict[str, Any]]:
    held = cluster.node(node_id).memory.shards.shard(shard)  # type: ignore[union-attr]
    return held.position, {m.id: (m.content, m.importance) for a in held.agents.values() for m in a.memories.values()}


def sessions_held(cluster: Cluster, node_id: str, shard: int) -> dict[str, Any]:
    held = cluster.node(node_id).memory.shards.shard(shard)  # type: ignore[union-attr]
    return {s.id: s.to_record() for s in held.sessions.values()}


def replicas_equal_primaries(cluster: Cluster) -> bool:
    smap = one_map(cluster)
    if smap is None:
        return False
    for shard, copies in enumerate(smap.placement):
        if any(c not in cluster.nodes for c in copies):
            return False
        first = image(cluster, copies[0], shard), sessions_held(cluster, copies[0], shard)
        if any((image(cluster, c, shard), sessions_held(cluster, c, shard)) != first for c in copies[1:]):
            return False
    return True


def agent_on(smap: ShardMap, primary: str, n: int = 0) -> str:
    found = [f"agent-{i}" for i in range(5000) if smap.owner(shard_of(f"agent-{i}", smap.shards)) == primary]
    return found[n]


async def store(cluster: Cluster, via: str, agent: str, mid: str, content: str) -> int:
    async with cluster.client(via) as http:
        r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": content, "id": mid})
        return r.status_code


async def test_replicas_converge_and_report_healthy(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=11) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        for i in range(60):
            assert await store(cluster, cluster.ids[i % 3], f"agent-{i % 20}", f"m-{i}", f"fact {i}") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        # every copy of a written shard holds the same memories at the same position
        smap = one_map(cluster)
        assert smap is not None
        written = {shard_of(f"agent-{i}", 64) for i in range(20)}
        assert all(image(cluster, smap.placement[s][1], s)[1] for s in written)
        async with cluster.client("node-2") as http:
            report = (await http.get("/admin/cluster/replication")).json()
            shards = (await http.get("/v1/admin/cluster/shards")).json()["shards"]
        assert report["replication_factor"] == 2 and report["under_replicated_shards"] == 0
        assert report["healthy_replicas"] == 64 and report["lag_ms"] == 0
        assert {s["id"] for s in shards if s["memories"]} >= {s for s in written if smap.owner(s) == "node-2"}
        sent = sum(n.metrics.sample("dakera_replication_records_total", direction="sent") for n in cluster.nodes.values())
        received = sum(n.metrics.sample("dakera_replication_records_total", direction="received")
                       for n in cluster.nodes.values())
        assert sent >= 60 and received >= 60


async def test_a_dead_primary_is_replaced_by_its_replica_with_every_write(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=12, config={"rereplication_grace": 20.0}) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        victim = "node-3"
        agents = [agent_on(smap, victim, n) for n in range(5)]
        acked = {}
        for i, agent in enumerate(agents * 4):
            mid = f"m-{i}"
            assert await store(cluster, "node-1", agent, mid, f"fact {i}") == 200
            acked[mid] = agent
        # sessions and an importance change on the victim's shards, asked through other nodes
        async with cluster.client("node-2") as http:
            open_s = (await http.post("/v1/sessions/start", json={"agent_id": agents[0], "metadata": {"n": 1}})).json()
            ended = (await http.post("/v1/sessions/start", json={"agent_id": agents[1], "session_id": "e"})).json()
            r = await http.post("/v1/memory/importance", json={"agent_id": agents[0], "memory_id": "m-0",
                                                               "importance": 0.91})
            assert r.status_code == 200 and r.json()["importance"] == 0.91
        async with cluster.client("node-1") as http:
            assert (await http.post(f"/v1/sessions/{open_s['session']['id']}/touch")).json()["session_state"] == "active"
            r = await http.post(f"/v1/sessions/{ended['session']['id']}/end", json={"summary": "over"})
            assert r.status_code == 200 and r.json()["ended_reason"] == "client"
            before = {sid: (await http.get(f"/v1/sessions/{sid}")).json()
                      for sid in (open_s["session"]["id"], ended["session"]["id"])}
        cluster.kill(victim)  # no time for anything: replication is all that keeps these
        started = trio.current_time()
        await eventually(lambda: (m := one_map(cluster)) is not None and all(
            m.owner(shard_of(a, 64)) != victim for a in agents), timeout=30)
        failover = trio.current_time() - started
        promoted = one_map(cluster)
        assert promoted is not None and victim in promoted.down  # kept, marked down, within grace
        for mid, agent in acked.items():
            async with cluster.client("node-2") as http:
                got = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            assert got.status_code == 200, (mid, got.text)
        async with cluster.client("node-1") as http:  # the promoted replica answers the same sessions
            after = {sid: (await http.get(f"/v1/sessions/{sid}")).json() for sid in before}
            assert after == before
            assert (await http.get("/v1/memory/get/m-0", params={"agent_id": agents[0]})).json()["importance"] == 0.91
            touched = (await http.post(f"/v1/sessions/{open_s['session']['id']}/touch")).json()
            assert touched["session_state"] == "active"
            still = (await http.post(f"/v1/sessions/{ended['session']['id']}/touch")).json()
            assert (still["session_state"], still["session"]["summary"]) == ("ended", "over")
        # writes resume on the new primary
        assert await store(cluster, "node-1", agents[0], "after", "after the failover") == 200
        assert failover < 15  # detection (SWIM) plus promotion, in simulated seconds
        # the old primary comes back as a replica and catches up, including the new write
        await cluster.restart(victim)
        await eventually(lambda: settled(cluster, 3) and replicas_equal_primaries(cluster), timeout=60)
        back = one_map(cluster)
        assert back is not None
        # back within the re-replication grace, it still holds its copy (a precondition, asserted:
        # without it the catch-up check below would check nothing)
        assert victim in back.placement[shard_of(agents[0], 64)], back.placement[shard_of(agents[0], 64)]
        assert "after" in image(cluster, victim, shard_of(agents[0], 64))[1]


async def test_past_the_grace_period_a_new_replica_is_made(autojump_clock: MockClock) -> None:
    async with open_cluster(4, seed=13, config={"rereplication_grace": 5.0}) as cluster:
        await eventually(lambda: settled(cluster, 4), timeout=30)
        for i in range(40):
            assert await store(cluster, cluster.ids[i % 4], f"agent-{i}", f"m-{i}", f"fact {i}") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        cluster.kill("node-4")
        # back to RF copies on the three survivors, and every copy holds the data
        await eventually(lambda: settled(cluster, 3) and replicas_equal_primaries(cluster), timeout=90)
        smap = one_map(cluster)
        assert smap is not None and all(len(c) == 2 and "node-4" not in c for c in smap.placement)
        async with cluster.client("node-1") as http:
            report = (await http.get("/admin/cluster/replication")).json()
        assert report["under_replicated_shards"] == 0


async def test_quorum_writes_wait_for_the_replica_and_fail_cleanly_without_it(autojump_clock: MockClock) -> None:
    config = {"write_ack": "quorum", "request_timeout": 2.0}
    async with open_cluster(3, seed=14, config=config) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        agent = agent_on(smap, "node-1")
        replica = smap.placement[shard_of(agent, 64)][1]
        assert await store(cluster, "node-1", agent, "q-1", "acked on two") == 200
        # acknowledged means on the replica's disk too
        assert "q-1" in image(cluster, replica, shard_of(agent, 64))[1]
        cluster.cut("node-1", replica, both=True)
        started = trio.current_time()
        status = await store(cluster, "node-1", agent, "q-2", "cannot reach two copies")
        assert status == 503
        assert trio.current_time() - started < 3.0


async def test_a_replica_beyond_the_tail_gets_a_whole_copy_then_the_log(autojump_clock: MockClock) -> None:
    config = {"replication_tail_records": 16, "rereplication_grace": 120.0}
    async with open_cluster(3, seed=15, config=config) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        agent = agent_on(smap, "node-1")
        shard = shard_of(agent, 64)
        replica = smap.placement[shard][1]
        assert await store(cluster, "node-1", agent, "first", "before the replica left") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        cluster.kill(replica)
        await eventually(lambda: (m := one_map(cluster)) is not None and replica in m.down, timeout=30)
        for i in range(50):  # far more than the primary's tail keeps
            assert await store(cluster, "node-1", agent, f"while-away-{i}", f"fact {i}") == 200
        async with cluster.client("node-1") as http:  # sessions the whole copy must carry
            sid = (await http.post("/v1/sessions/start", json={"agent_id": agent})).json()["session"]["id"]
            await http.post(f"/v1/sessions/{sid}/end", json={"summary": "while away"})
        copies_before = cluster.node("node-1").metrics.sample(
            "dakera_replication_snapshots_total", direction="sent")
        await cluster.restart(replica)
        await eventually(lambda: settled(cluster, 3) and replicas_equal_primaries(cluster), timeout=60)
        assert cluster.node(replica).metrics.sample("dakera_replication_snapshots_total", direction="received") >= 1
        assert cluster.node("node-1").metrics.sample("dakera_replication_snapshots_total",
                                                     direction="sent") > copies_before
        # and the log from there: a write after the copy arrives as a record
        assert await store(cluster, "node-1", agent, "after", "after the copy") == 200
        await eventually(lambda: "after" in image(cluster, replica, shard)[1], timeout=5)
        assert len(image(cluster, replica, shard)[1]) == 52
        assert sessions_held(cluster, replica, shard)[sid]["su"] == "while away"


def vectors_held(cluster: Cluster, node_id: str, shard: int) -> dict[str, bytes]:
    held = cluster.node(node_id).memory.shards.shard(shard)  # type: ignore[union-attr]
    return {mid: v for a in held.agents.values() for mid, v in a.vectors.items()}


async def test_a_restart_and_a_whole_copy_never_re_embed(autojump_clock: MockClock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors travel with the memories (WAL records, snapshots, whole-shard copies): a replica
    that replays its log, receives a whole copy of its shard and restarts again embeds nothing,
    and holds the primary's vectors byte for byte (the default embedder: recall by meaning)."""
    calls = count_embeddings(monkeypatch)
    config = {"replication_tail_records": 16, "rereplication_grace": 120.0, "checkpoint_records": 20}
    async with open_cluster(3, seed=15, config=config) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        agent = agent_on(smap, "node-1")
        shard = shard_of(agent, 64)
        replica = smap.placement[shard][1]
        assert await store(cluster, "node-1", agent, "violin", "My daughter has started taking violin lessons") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        cluster.kill(replica)
        await eventually(lambda: (m := one_map(cluster)) is not None and replica in m.down, timeout=30)
        for i in range(50):  # beyond the primary's tail: the replica gets a whole copy
            assert await store(cluster, "node-1", agent, f"while-away-{i}", f"the quarterly report {i} is due") == 200
        embedded = sum(calls)  # texts embedded
        assert embedded == 51
        await cluster.restart(replica)  # replays its own log, then takes a whole copy
        await eventually(lambda: settled(cluster, 3) and replicas_equal_primaries(cluster), timeout=60)
        assert cluster.node(replica).metrics.sample("dakera_replication_snapshots_total", direction="received") >= 1
        await cluster.restart(replica)  # and from its own snapshot and log
        await eventually(lambda: settled(cluster, 3) and replicas_equal_primaries(cluster), timeout=60)
        assert sum(calls) == embedded  # nothing was embedded again
        copied = vectors_held(cluster, replica, shard)
        assert len(copied) == 51 and copied == vectors_held(cluster, "node-1", shard)
        async with cluster.client(replica) as http:
            recalled = await http.post("/v1/memory/recall", json={
                "agent_id": agent, "query": "what instrument is the kid learning", "consistency": "eventual"})
        assert recalled.headers["x-dakera-owner"] == f"http://{replica}"
        assert recalled.json()["memories"][0]["id"] == "violin"


async def test_eventual_reads_are_served_by_a_replica_strong_ones_by_the_primary(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=16) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        agent = agent_on(smap, "node-1")
        replica = smap.placement[shard_of(agent, 64)][1]
        assert await store(cluster, "node-1", agent, "m", "green tea in the morning") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        async with cluster.client(replica) as http:
            strong = await http.get("/v1/memory/get/m", params={"agent_id": agent})
            eventual = await http.get("/v1/memory/get/m", params={"agent_id": agent, "consistency": "eventual"})
            recalled = await http.post("/v1/memory/recall", json={"agent_id": agent, "query": "tea",
                                                                  "consistency": "eventual"})
            bad = await http.get("/v1/memory/get/m", params={"agent_id": agent, "consistency": "sometimes"})
        assert strong.status_code == eventual.status_code == recalled.status_code == 200
        assert strong.headers["x-dakera-owner"] == "http://node-1"
        assert eventual.headers["x-dakera-owner"] == f"http://{replica}"
        assert recalled.headers["x-dakera-owner"] == f"http://{replica}"
        assert recalled.json()["memories"][0]["id"] == "m"
        assert bad.status_code == 400 and bad.json()["code"] == "INVALID_REQUEST"


async def test_the_leader_promotes_the_replica_with_the_newest_history(autojump_clock: MockClock) -> None:
    async with open_cluster(4, seed=17, config={"replication_factor": 3}) as cluster:
        await eventually(lambda: settled(cluster, 4), timeout=30)
        smap = one_map(cluster)
        assert smap is not None
        leader = cluster.node("node-1").lease.view.value.leader  # type: ignore[union-attr]
        # a shard whose primary is not the leader, and whose first replica (the one the map's
        # order alone would promote) is kept from fetching, so it falls behind the second
        shard = next(s for s, c in enumerate(smap.placement) if leader not in c[:1])
        primary, behind, ahead = smap.placement[shard]
        agent = next(f"agent-{i}" for i in range(5000) if shard_of(f"agent-{i}", 64) == shard)
        assert await store(cluster, primary, agent, "m0", "seen by both") == 200
        await eventually(lambda: replicas_equal_primaries(cluster), timeout=10)
        cluster.cut(behind, primary)  # its fetches no longer arrive
        for i in range(1, 6):
            assert await store(cluster, primary, agent, f"m{i}", f"fact {i}") == 200
        await eventually(lambda: image(cluster, ahead, shard)[0] == image(cluster, primary, shard)[0], timeout=10)
        assert image(cluster, behind, shard)[0] < image(cluster, ahead, shard)[0]
        cluster.heal()
        cluster.cut(behind, primary)  # still cut while the primary dies
        cluster.kill(primary)
        await eventually(lambda: (m := one_map(cluster)) is not None and m.owner(shard) != primary, timeout=30)
        promoted = one_map(cluster)
        assert promoted is not None and promoted.owner(shard) == ahead
        async with cluster.client(behind) as http:
            for i in range(6):
                r = await http.get(f"/v1/memory/get/m{i}", params={"agent_id": agent})
                assert r.status_code == 200, r.text
