"""The L1.5 cache in a simulated three-node cluster (MockClock, memory transport, one shared
in-memory Redis model): concurrent writers update and forget memories through random nodes while
readers get and recall them through random nodes (non-owners answer from the cache); Redis is
paused, flushed, has keys evicted and goes down, and a primary is killed. The checker fails on
any read older than a write acknowledged before the read began, and on any forgotten memory read
back (by id, or in a recall)."""

from __future__ import annotations

import collections
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.cache import scripts as s
from dakera_actors.cache.model import ModelRedis
from dakera_actors.testing import Cluster, open_cluster

from ..sim.test_crash import settled
from ..waiting import eventually

CONFIG = {"shards": 8, "replication_factor": 2, "write_ack": "quorum"}
MEMORIES = 15
WRITERS = 3  # memory i is written by writer i % WRITERS only (its versions are its own order),
AGENTS = 5  # and belongs to agent i % AGENTS: every agent's memories (and shard) have every writer


def agent_of(mid: str) -> str:
    return f"agent-{int(mid[1:]) % AGENTS}"


class History:
    def __init__(self) -> None:
        self.acked: dict[str, list[tuple[int, float]]] = {}  # memory -> [(version, ack time)]
        self.forgotten: dict[str, float] = {}  # memory -> forget ack time
        self.forget_started: dict[str, float] = {}
        self.problems: list[str] = []
        self.reads = 0
        self.recalls = 0

    def check(self, mid: str, started: float, status: int, content: str | None) -> None:
        """A get of ``mid`` begun at ``started``: ``content`` (None: not found, or not answered)."""
        self.reads += 1
        self._check_one(mid, started, status, content, "read")

    def check_recall(self, agent: str, mids: list[str], started: float, status: int,
                     found: dict[str, str] | None) -> None:
        """A recall of ``agent`` begun at ``started``, asked for more memories than it has:
        every memory of ``mids`` acknowledged before it is in it, at least at that version; none
        forgotten before it is. ``found``: memory id -> content (None: not answered)."""
        self.reads += 1
        if status != 200 or found is None:
            if status not in (503, 504):
                self.problems.append(f"recall of {agent} at {started:.3f} got {status}")
            return
        for mid in mids:
            self._check_one(mid, started, 200 if mid in found else 404, found.get(mid), f"recall of {agent}")

    def _check_one(self, mid: str, started: float, status: int, content: str | None, what: str) -> None:
        gone = self.forgotten.get(mid)
        if gone is not None and gone < started:
            if status == 200:
                self.problems.append(f"{mid}: {what} at {started:.3f} found it, forgotten at {gone:.3f}")
            return
        must = max((v for v, at in self.acked.get(mid, []) if at < started), default=None)
        if must is None or mid in self.forget_started:
            return
        if status != 200 or content is None:
            if status not in (503, 504):  # unavailable during a failover: not an answer
                self.problems.append(f"{mid}: {what} at {started:.3f} got {status}, version {must} was acknowledged")
            return
        got = int(content.rsplit(" v", 1)[1])
        if got < must:
            self.problems.append(f"{mid}: {what} at {started:.3f} got v{got}, v{must} was acknowledged before")


async def writer(cluster: Cluster, history: History, rng: random.Random, stop: trio.Event, mine: list[str]) -> None:
    """Writes the memories ``mine`` (no other writer does) through random nodes."""
    versions = dict.fromkeys(mine, 0)
    while not stop.is_set():
        mid = rng.choice(mine)
        if mid in history.forget_started:
            await trio.sleep(0.01)
            continue
        node = rng.choice(list(cluster.nodes))
        agent = agent_of(mid)
        versions[mid] += 1
        v = versions[mid]
        async with cluster.client(node) as http:
            if v == 1:
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"{mid} v1", "id": mid})
            elif rng.random() < 0.03 and v > 3:
                history.forget_started[mid] = trio.current_time()
                r = await http.post("/v1/memory/forget", json={"agent_id": agent, "memory_ids": [mid]})
                if r.status_code == 200:
                    history.forgotten[mid] = trio.current_time()
                continue
            else:
                r = await http.put(f"/v1/memory/update/{mid}", params={"agent_id": agent},
                                   json={"content": f"{mid} v{v}"})
        if r.status_code == 200:
            history.acked.setdefault(mid, []).append((v, trio.current_time()))
        await trio.sleep(rng.uniform(0.005, 0.05))


async def reader(cluster: Cluster, history: History, rng: random.Random, stop: trio.Event) -> None:
    """Gets one memory, or (a third of the time) recalls all of an agent's, through a random node."""
    while not stop.is_set():
        mid = f"m{rng.randrange(MEMORIES)}"
        agent = agent_of(mid)
        node = rng.choice(list(cluster.nodes))
        started = trio.current_time()
        if rng.random() < 1 / 3:
            async with cluster.client(node) as http:
                r = await http.post("/v1/memory/recall", json={"agent_id": agent, "query": "memory version",
                                                               "top_k": MEMORIES})
            found = {m["id"]: m["content"] for m in r.json()["memories"]} if r.status_code == 200 else None
            mids = [f"m{i}" for i in range(MEMORIES) if agent_of(f"m{i}") == agent]
            history.check_recall(agent, mids, started, r.status_code, found)
            history.recalls += 1
        else:
            async with cluster.client(node) as http:
                r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            content = r.json().get("content") if r.status_code == 200 else None
            history.check(mid, started, r.status_code, content)
        await trio.sleep(rng.uniform(0.001, 0.02))


def count_hits_by_op(cluster: Cluster) -> collections.Counter[str]:
    """Count every node's cache hits by operation (``get``, ``recall``) from now on."""
    ops: dict[str, str] = {}
    hits: collections.Counter[str] = collections.Counter()
    for node in cluster.nodes.values():
        cache = node.cache
        assert cache is not None
        name, lookup = cache.name, cache.lookup

        def named(op: str, *args: Any, name: Callable[..., str] = name) -> str:
            digest = name(op, *args)
            ops[digest] = op
            return digest

        async def looked(shard: int, digest: str, lookup: Callable[..., Awaitable[Any]] = lookup) -> Any:
            got = await lookup(shard, digest)
            if got is not None:
                hits[ops.get(digest, "?")] += 1
            return got

        cache.name = named  # type: ignore[method-assign]
        cache.lookup = looked  # type: ignore[method-assign]
    return hits


async def faults(cluster: Cluster, redis: ModelRedis, rng: random.Random, kill: bool) -> None:
    await trio.sleep(3)
    redis.paused_until = trio.current_time() + 2.5  # SIGSTOP: calls queue, then run late
    await trio.sleep(4)
    redis.flush()
    await trio.sleep(2)
    for key in list(redis.states):
        if rng.random() < 0.5:
            redis.evict(key)
    await trio.sleep(2)
    redis.down = True
    await trio.sleep(2)
    redis.down = False
    if kill:
        await trio.sleep(2)
        cluster.kill("node-3")


@pytest.mark.parametrize("seed", [3, 8])
async def test_no_read_through_any_node_is_older_than_an_acknowledged_write(
        autojump_clock: trio.testing.MockClock, seed: int) -> None:
    redis = ModelRedis(latency=(0.0005, 0.03), seed=seed)  # some calls answer after the timeout
    rng = random.Random(seed)
    history = History()
    async with open_cluster(3, seed=seed, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        hits_by_op = count_hits_by_op(cluster)
        every_node = list(cluster.nodes.values())  # the one killed too
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for w in range(WRITERS):
                mine = [f"m{i}" for i in range(MEMORIES) if i % WRITERS == w]
                nursery.start_soon(writer, cluster, history, random.Random(seed * 7 + w), stop, mine)
            for n in range(3):
                nursery.start_soon(reader, cluster, history, random.Random(seed * 11 + n), stop)
            await faults(cluster, redis, rng, kill=True)
            await trio.sleep(5)
            stop.set()
        hits = sum(node.cache.counters.hits for node in cluster.nodes.values())
        writes = sum(len(v) for v in history.acked.values())
        waits = sum(node.metrics.sample("dakera_cache_generation_waits_total") for node in every_node)
    assert not history.problems, history.problems[:5]
    assert history.reads > 200 and hits > 20, (history.reads, hits)  # the cache answered reads
    assert history.recalls > 50 and writes > 100, (history.recalls, writes)
    assert hits_by_op["get"] > 10 and hits_by_op["recall"] > 5, hits_by_op  # both kinds of read were cached
    assert waits > 0  # while Redis was paused or down, writes waited out the hold (and were then acknowledged)


async def test_without_redis_faults_non_owners_answer_repeated_reads_from_the_cache(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    async with open_cluster(3, seed=5, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        async with cluster.client("node-1") as http:
            r = await http.post("/v1/memory/store", json={"agent_id": "a1", "content": "hello v1", "id": "x"})
            assert r.status_code == 200
        owner = r.headers.get("X-Dakera-Owner", "")
        others = [n for n in cluster.ids if cluster.node(n).api_address != owner]
        for _ in range(5):
            for node in others:
                async with cluster.client(node) as http:
                    got = await http.get("/v1/memory/get/x", params={"agent_id": "a1"})
                assert got.status_code == 200 and got.json()["content"] == "hello v1"
        hits = sum(cluster.node(n).cache.counters.hits for n in others)
        assert hits >= 5, hits
        async with cluster.client(others[0]) as http:
            r = await http.put("/v1/memory/update/x", params={"agent_id": "a1"}, json={"content": "hello v2"})
            assert r.status_code == 200
        for node in cluster.ids:  # read-your-writes through every node, right after the ack
            async with cluster.client(node) as http:
                got = await http.get("/v1/memory/get/x", params={"agent_id": "a1"})
            assert got.json()["content"] == "hello v2"
        assert any(key.startswith(s.shard_tag(cluster.node("node-1").cache.cluster, 0)[:3]) for key in redis.states)


async def test_the_sdk_reads_the_cache_stats_and_clears_an_agents_answers(
        autojump_clock: trio.testing.MockClock) -> None:
    import httpx
    from dakera import AsyncDakeraClient

    redis = ModelRedis()
    async with open_cluster(3, seed=9, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        async with cluster.client("node-1") as http:
            for i in range(6):  # two agents
                r = await http.post("/v1/memory/store", json={"agent_id": f"a{i % 2}", "content": f"c{i}",
                                                             "id": f"x{i}"})
                assert r.status_code == 200
        for node in cluster.ids:  # every node reads every memory twice: owners fill, others hit
            for _ in range(2):
                for i in range(6):
                    async with cluster.client(node) as http:
                        got = await http.get(f"/v1/memory/get/x{i}", params={"agent_id": f"a{i % 2}"})
                    assert got.status_code == 200
        owners = {r.headers.get("X-Dakera-Owner")}
        reader = next(n for n in cluster.ids if cluster.node(n).api_address not in owners)
        node = cluster.node(reader)
        transport = httpx.ASGITransport(app=node.app)
        sdk = AsyncDakeraClient(f"http://{reader}", max_retries=1)
        sdk._client = httpx.AsyncClient(transport=transport, headers=dict(sdk._client.headers))
        try:
            stats = await sdk.cache_stats()
            assert stats["enabled"] is True and stats["cache_type"] == "redis"
            assert set(stats) >= {"entries", "size_bytes", "hits", "misses", "hit_rate", "evictions",
                                  "total_entries", "memory_bytes"}
            assert stats["hits"] > 0 and 0 < stats["hit_rate"] <= 1 and stats["entries"] > 0
            assert node.metrics.sample("dakera_cache_requests_total", result="hit") == stats["hits"]
            not_answered = sum(node.metrics.sample("dakera_cache_requests_total", result=r)
                               for r in ("miss", "stale", "error"))
            assert not_answered == stats["misses"]  # every lookup not answered from the cache
            before = sum(len(e) for e in redis.entries.values())
            cleared = await sdk.cache_clear("a0")
            assert cleared["success"] is True and 0 < cleared["entries_cleared"] < before
            assert cleared["cleared"] == cleared["entries_cleared"] == cleared["entries_evicted"]
            everything = await sdk.cache_clear()
            assert everything["entries_cleared"] == before - cleared["entries_cleared"]
            status = (await sdk._client.get(f"http://{reader}/v1/admin/cluster/status")).json()
            assert status["redis_healthy"] is True
        finally:
            await sdk._client.aclose()


async def test_recall_answers_are_cached_and_a_new_memory_shows_up_at_once_through_every_node(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis(latency=(0.0005, 0.01))
    async with open_cluster(3, seed=6, config=CONFIG, cache=redis) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        async with cluster.client("node-1") as http:
            r = await http.post("/v1/memory/store", json={"agent_id": "r1", "content": "the violin lesson"})
            assert r.status_code == 200
        owner = r.headers.get("X-Dakera-Owner", "")
        other = next(n for n in cluster.ids if cluster.node(n).api_address != owner)
        query = {"agent_id": "r1", "query": "violin", "top_k": 10}
        for _ in range(3):
            async with cluster.client(other) as http:
                got = await http.post("/v1/memory/recall", json=query)
            assert got.status_code == 200 and len(got.json()["memories"]) == 1
        assert cluster.node(other).cache.counters.hits >= 1
        async with cluster.client(other) as http:
            r = await http.post("/v1/memory/store", json={"agent_id": "r1", "content": "violin strings"})
            assert r.status_code == 200
        for node in cluster.ids:  # the same recall right after the ack: the new memory is in it
            async with cluster.client(node) as http:
                got = await http.post("/v1/memory/recall", json=query)
            assert len(got.json()["memories"]) == 2, (node, got.json())
