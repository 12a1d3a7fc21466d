"""What the L1.5 cache stores, in a simulated three-node cluster sharing one in-memory Redis model
(MockClock): the TTL of a fill (``DAKERA_CACHE_TTL_SECONDS``, cut at the first ``expires_at`` in
the answer), the entry-size bound (a bigger answer is answered, never stored), and a backup
restore, which writes through the shards' primaries like any write: it advances the generation,
so a read cached before it is never answered after it."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from dakera_actors.cache.facade import MAX_ENTRY_BYTES
from dakera_actors.cache.model import ModelRedis
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.testing import Cluster, open_cluster

from ..backup.test_schedule_sim import leader
from ..sim.test_crash import settled
from ..waiting import eventually, eventually_async

CONFIG = {"shards": 8, "replication_factor": 2, "write_ack": "quorum"}


async def stored(cluster: Cluster, node: str, body: dict[str, Any]) -> tuple[str, str]:
    """Store through ``node`` (``body`` names the id): the id and the API address of its shard's owner."""
    async with cluster.client(node) as http:
        r = await http.post("/v1/memory/store", json=body)
    assert r.status_code == 200, r.text
    return str(body["id"]), r.headers["X-Dakera-Owner"]


def other_than(cluster: Cluster, owner: str) -> str:
    return next(n for n in cluster.ids if cluster.node(n).api_address != owner)


def entries(redis: ModelRedis) -> int:
    return sum(len(e) for e in redis.entries.values())


async def get(cluster: Cluster, node: str, mid: str, agent: str) -> dict[str, Any]:
    async with cluster.client(node) as http:
        r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_fills_live_the_configured_ttl_or_until_the_first_memory_in_them_expires(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    async with open_cluster(3, seed=4, config={**CONFIG, "cache_ttl_seconds": 120}, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        assert {cluster.node(n).cache.ttl for n in cluster.ids} == {120}  # type: ignore[union-attr]
        mid, owner = await stored(cluster, "node-1", {"agent_id": "t1", "content": "kept a while", "id": "keep"})
        reader = other_than(cluster, owner)
        assert (await get(cluster, reader, mid, "t1"))["content"] == "kept a while"  # a miss: the owner fills
        await eventually(lambda: redis.fill_ttls == [120], timeout=5)
        assert (await get(cluster, reader, mid, "t1"))["content"] == "kept a while"
        assert cluster.node(reader).cache.counters.hits == 1  # type: ignore[union-attr]

        redis.fill_ttls.clear()
        mid, owner = await stored(cluster, "node-1", {"agent_id": "t2", "content": "gone soon", "id": "brief",
                                                      "ttl_seconds": 40})
        reader = other_than(cluster, owner)
        memory = await get(cluster, reader, mid, "t2")
        assert memory["expires_at"] is not None
        await eventually(lambda: len(redis.fill_ttls) == 1, timeout=5)
        [ttl] = redis.fill_ttls
        left = memory["expires_at"] - cluster.wall_clock()
        assert 0 < ttl <= left < 41, (ttl, left)  # cut at its expiry (a whole second), not the configured 120 s


async def test_an_answer_bigger_than_the_entry_bound_is_answered_but_never_stored(
        autojump_clock: trio.testing.MockClock) -> None:
    """Three memories of 100,000 characters: their recall is over the 256 KiB bound (the get of
    one is under it, and is cached, so the bound is what keeps the recall out)."""
    redis = ModelRedis()
    async with open_cluster(3, seed=2, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        contents = [f"big {i} " + "x" * (100_000 - 6) for i in range(3)]
        owner = ""
        for i, content in enumerate(contents):
            _, owner = await stored(cluster, "node-1", {"agent_id": "big", "content": content, "id": f"b{i}"})
        reader = other_than(cluster, owner)
        cache = cluster.node(reader).cache
        assert cache is not None and cache.max_entry == MAX_ENTRY_BYTES == 256 * 1024
        query = {"agent_id": "big", "query": "big", "top_k": 3}
        for _ in range(3):
            async with cluster.client(reader) as http:
                got = await http.post("/v1/memory/recall", json=query)
            assert got.status_code == 200
            assert sorted(m["content"] for m in got.json()["memories"]) == sorted(contents)
            await trio.sleep(1)  # room for a background fill, had one been sent
        assert entries(redis) == 0 and redis.fill_ttls == [] and cache.counters.hits == 0
        assert (await get(cluster, reader, "b0", "big"))["content"] == contents[0]  # 100 KB: under the bound
        await eventually(lambda: entries(redis) == 1, timeout=5)
        assert (await get(cluster, reader, "b0", "big"))["content"] == contents[0]
        assert cache.counters.hits == 1


async def test_a_restored_backup_advances_the_generation_so_no_read_before_it_is_answered_after_it(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    async with open_cluster(3, seed=12, config=CONFIG, objects=MemoryObjectStore(), backup_objects=MemoryObjectStore(),
                            cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        await eventually(lambda: leader(cluster) is not None, timeout=60)
        mid, owner = await stored(cluster, "node-1", {"agent_id": "r1", "content": "as backed up", "id": "m"})
        reader = other_than(cluster, owner)
        async with cluster.client(reader) as http:
            r = await http.post("/v1/admin/backups", json={"name": "before the change"})
            assert r.status_code == 201, r.text
            backup = r.json()["id"]

            async def ended(path: str) -> bool:
                got = await http.get(path)
                assert got.status_code == 200, got.text
                return bool(got.json()["status"] != "inprogress")

            await eventually_async(lambda: ended(f"/v1/admin/backups/{backup}"), timeout=60)
            r = await http.put(f"/v1/memory/update/{mid}", params={"agent_id": "r1"}, json={"content": "changed"})
            assert r.status_code == 200
        cache = cluster.node(reader).cache
        assert cache is not None
        for _ in range(2):  # the second read is answered from Redis
            assert (await get(cluster, reader, mid, "r1"))["content"] == "changed"
            await trio.sleep(0.5)
        assert cache.counters.hits >= 1
        gen_before = {k: (st.inc, st.gen) for k, st in redis.states.items()}
        async with cluster.client(reader) as http:
            r = await http.post("/v1/admin/backups/restore", json={"backup_id": backup, "overwrite": True})
            assert r.status_code == 201, r.text
            job = r.json()["restore_id"]
            await eventually_async(lambda: ended(f"/v1/admin/backups/restore/{job}"), timeout=60)
            done = (await http.get(f"/v1/admin/backups/restore/{job}")).json()
            assert done["status"] == "completed", done
        hits = cache.counters.hits
        assert (await get(cluster, reader, mid, "r1"))["content"] == "as backed up"  # not the cached "changed"
        assert cache.counters.hits == hits and cache.counters.stale >= 1  # the cached entry was there, behind
        assert any(redis.states[k].gen > gen for k, (_inc, gen) in gen_before.items() if k in redis.states)


async def test_a_wiped_cluster_started_again_under_the_same_namespace_is_cached_again(
        autojump_clock: trio.testing.MockClock) -> None:
    """Every disk wiped, the cluster started again with the same gossip key (so the same
    namespace in Redis): its leader tokens, so its shard terms, start from 1, below those of the
    old cluster (raised here as after a long life). Its primaries take the old keys over (none is
    fenced for good), never answer an old entry, and non-owners answer from the cache again."""
    import attrs

    redis = ModelRedis()
    async with open_cluster(3, seed=21, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        _, owner = await stored(cluster, "node-1", {"agent_id": "w1", "content": "before the wipe", "id": "w"})
        reader = other_than(cluster, owner)
        for _ in range(2):
            assert (await get(cluster, reader, "w", "w1"))["content"] == "before the wipe"
            await trio.sleep(0.5)
        assert cluster.node(reader).cache.counters.hits == 1  # type: ignore[union-attr]
    old = (1000 << 32) | 7
    redis.states = {k: attrs.evolve(st, term=old) for k, st in redis.states.items()}
    async with open_cluster(3, seed=21, config=CONFIG, cache=redis) as cluster:  # new data dirs: wiped
        await eventually(lambda: settled(cluster), timeout=60)
        _, owner = await stored(cluster, "node-1", {"agent_id": "w1", "content": "after the wipe", "id": "w"})
        reader = other_than(cluster, owner)
        for _ in range(2):
            assert (await get(cluster, reader, "w", "w1"))["content"] == "after the wipe"
            await trio.sleep(0.5)
        assert cluster.node(reader).cache.counters.hits == 1  # type: ignore[union-attr]
        fenced = [(n, sh) for n in cluster.ids for sh, state in cluster.node(n).cache.generations.shards.items()  # type: ignore[union-attr]
                  if state.core.fenced]
        assert not fenced, fenced
        assert all(st.term < old for st in redis.states.values())  # every shard's key taken over
