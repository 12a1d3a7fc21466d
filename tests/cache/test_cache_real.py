"""The L1.5 cache with real processes, a real redis-server and the official SDK: non-owners answer
repeated reads from Redis; with Redis killed, paused or flushed every node still answers, every
read right after an acknowledged update sees it, and the cache is used again once Redis is back."""

from __future__ import annotations

import httpx
import pytest
from dakera import DakeraClient

from dakera_actors.cache import scripts as s
from tests.real.procs import cluster_processes, running, wait_for

from .conftest import RedisServer

pytestmark = pytest.mark.real
AGENTS = 4
PER_AGENT = 5


def metric(url: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else "")) or (not want and line.split(" ")[0] == name):
            return float(line.split()[-1])
    return 0.0


def hits(nodes: list) -> float:
    return sum(metric(n.url, "dakera_cache_requests_total", result="hit") for n in nodes)


def read_all(nodes: list, ids: dict[str, str]) -> dict[str, str]:
    """Every memory through every node; the contents (the same from each node, or the test fails)."""
    seen: dict[str, str] = {}
    for node in nodes:
        sdk = DakeraClient(node.url, max_retries=1, timeout=30)
        for mid, agent in ids.items():
            content = sdk.get_memory(agent, mid)["content"]
            assert seen.setdefault(mid, content) == content, (node.url, mid, content, seen[mid])
    return seen


def test_non_owners_read_from_redis_and_every_read_after_an_update_sees_it_through_redis_faults(
        tmp_path, redis_server: RedisServer) -> None:
    nodes = cluster_processes(tmp_path, 3, DAKERA_REDIS_URL=redis_server.url, DAKERA_REPLICATION_FACTOR="2",
                              DAKERA_SHARDS="8", DAKERA_WRITE_ACK="quorum")
    with running(nodes):
        sdk = DakeraClient(nodes[0].url, max_retries=2, timeout=30)
        ids = {}
        for a in range(AGENTS):
            for i in range(PER_AGENT):
                ids[sdk.store_memory(f"agent-{a}", f"note {i} v0")["id"]] = f"agent-{a}"
        read_all(nodes, ids)
        read_all(nodes, ids)
        assert hits(nodes) > 0  # the second round: non-owners answered from Redis
        assert all(httpx.get(n.url + "/v1/admin/cluster/status", timeout=10).json()["redis_healthy"] for n in nodes)

        def update_and_check(round_: str) -> None:
            for n, (mid, agent) in enumerate(ids.items()):
                writer = DakeraClient(nodes[n % 3].url, max_retries=2, timeout=30)
                writer.update_memory(agent, mid, content=f"{mid} {round_}")
            assert read_all(nodes, ids) == {mid: f"{mid} {round_}" for mid in ids}  # right after the acks

        redis_server.pause()  # SIGSTOP: calls stall; writes wait out the hold, reads are forwarded
        update_and_check("paused")
        redis_server.resume()
        redis_server.kill()
        wait_for(lambda: not any(httpx.get(n.url + "/v1/admin/cluster/status", timeout=10).json()["redis_healthy"]
                                 for n in nodes), 30, "every node seeing Redis down")
        update_and_check("down")
        redis_server.start()
        wait_for(lambda: all(httpx.get(n.url + "/v1/admin/cluster/status", timeout=10).json()["redis_healthy"]
                             for n in nodes), 30, "every node seeing Redis back")
        update_and_check("back")
        before = hits(nodes)
        read_all(nodes, ids)
        read_all(nodes, ids)
        assert hits(nodes) > before  # the cache is used again
        redis_server.flushall()
        update_and_check("flushed")
        assert sum(metric(n.url, "dakera_cache_generation_waits_total") for n in nodes) > 0


MEMORIES = 16


def test_concurrent_reads_through_every_node_are_never_older_than_an_acked_write_across_a_failover(
        tmp_path, redis_server: RedisServer) -> None:
    """One writer updates (and now and then forgets) memories through random nodes while readers
    read them through random nodes; Redis is paused, killed and restarted empty, a node is SIGKILLed (its shards fail over to
    their replicas, which lead them under a new term) and started again on its disk, and Redis is
    flushed. The checker (the simulation's) fails on any read older than a write acknowledged
    before the read began, and on any forgotten memory read back."""
    import random
    import threading
    import time

    from tests.real.procs import Workers

    from .test_cache_cluster_sim import History

    nodes = cluster_processes(tmp_path, 3, DAKERA_REDIS_URL=redis_server.url, DAKERA_REPLICATION_FACTOR="2",
                              DAKERA_SHARDS="8", DAKERA_WRITE_ACK="quorum")
    history = History()
    lock = threading.Lock()
    phases = ["start"]
    names = {n.url: n.env["DAKERA_NODE_ID"] for n in nodes}
    up = list(nodes)  # the nodes clients may use (the killed one left out while it is down)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        http = {n.url: httpx.Client(base_url=n.url, timeout=10) for n in nodes}
        versions = dict.fromkeys((f"m{i}" for i in range(MEMORIES)), 0)
        while not workers.stop.is_set():
            mid = f"m{rng.randrange(MEMORIES)}"
            if mid in history.forget_started:
                continue
            agent = f"agent-{int(mid[1:]) % 5}"
            versions[mid] += 1
            v = versions[mid]
            client = http[rng.choice(up).url]
            try:
                if v == 1:
                    r = client.post("/v1/memory/store", json={"agent_id": agent, "content": f"{mid} v1", "id": mid})
                elif rng.random() < 0.02 and v > 3:
                    with lock:
                        history.forget_started[mid] = time.monotonic()
                    r = client.post("/v1/memory/forget", json={"agent_id": agent, "memory_ids": [mid]})
                    if r.status_code == 200:
                        with lock:
                            history.forgotten[mid] = time.monotonic()
                    continue
                else:
                    r = client.put(f"/v1/memory/update/{mid}", params={"agent_id": agent},
                                   json={"content": f"{mid} v{v}"})
            except httpx.HTTPError:
                continue  # no answer: the write may or may not have been applied, never acknowledged
            if r.status_code == 200:
                with lock:
                    history.acked.setdefault(mid, []).append((v, time.monotonic()))
            time.sleep(rng.uniform(0.002, 0.02))

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        http = {n.url: httpx.Client(base_url=n.url, timeout=10) for n in nodes}
        while not workers.stop.is_set():
            mid = f"m{rng.randrange(MEMORIES)}"
            agent = f"agent-{int(mid[1:]) % 5}"
            started = time.monotonic()
            try:
                r = http[rng.choice(up).url].get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
            except httpx.HTTPError:
                continue
            content = r.json().get("content") if r.status_code == 200 else None
            with lock:
                before = len(history.problems)
                history.check(mid, started, r.status_code, content)
                if len(history.problems) > before:
                    history.problems[-1] += (f" (through {r.headers.get('X-Dakera-Node')}, owner "
                                             f"{names.get(r.headers.get('X-Dakera-Owner', ''), r.headers.get('X-Dakera-Owner'))}, phase {phases[-1]})")

    with running(nodes):
        workers = Workers()
        workers.start(writer, 1)
        for n in range(2):
            workers.start(reader, 10 + n)
        def meanwhile(reads: int) -> None:
            """Let the workload go on for ``reads`` more reads (a phase of the run)."""
            target = history.reads + reads
            wait_for(lambda: workers.check() or history.reads >= target, 60, f"{reads} more reads")

        try:
            meanwhile(100)
            phases.append("paused")
            redis_server.pause()  # SIGSTOP: writes wait out their hold, reads are forwarded
            meanwhile(60)
            redis_server.resume()
            phases.append("resumed")
            meanwhile(100)
            phases.append("redis killed")
            redis_server.kill()  # reads forwarded, writes wait out their hold
            meanwhile(60)
            redis_server.start()  # empty: every generation starts over
            phases.append("redis restarted")
            meanwhile(100)
            phases.append("killing")
            victim = nodes[1]
            up.remove(victim)
            victim.stop()  # SIGKILL: its shards fail over to their replicas under new terms
            wait_for(lambda: not any(_owns_any(n.url, victim) for n in up), 60, "the shards failing over")
            phases.append("failed over")
            meanwhile(100)
            phases.append("restarting")
            victim.start()
            victim.wait_healthy(60)
            up.append(victim)
            phases.append("restarted")
            meanwhile(100)
            phases.append("flushed")
            redis_server.flushall()
            meanwhile(100)
        finally:
            workers.finish()
        hit_count = hits(nodes)
    assert not history.problems, history.problems[:5]
    assert history.reads > 300 and hit_count > 0, (history.reads, hit_count)


def _owns_any(url: str, victim) -> bool:
    """Whether the map ``url`` holds still names ``victim`` as a shard's primary."""
    shards = httpx.get(url + "/v1/admin/cluster/shards", timeout=5).json()
    victim_id = victim.env["DAKERA_NODE_ID"]
    return any(s.get("primary") == victim_id for s in shards.get("shards", []))


def _answers(nodes: list, ids: dict[str, str]) -> list:
    """What the SDK reads through every node: each memory, and each agent's recall, search, listing
    and stats; without the fields that time the request itself."""
    from dakera import DakeraClient

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in sorted(value.items()) if not k.endswith("_ms") and k != "took"}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return plain(vars(value)) if hasattr(value, "__dict__") else value  # the SDK's objects too

    out: list = []
    agents = sorted(set(ids.values()))
    for node in nodes:
        sdk = DakeraClient(node.url, max_retries=1, timeout=30)
        out += [plain(sdk.get_memory(agent, mid)) for mid, agent in sorted(ids.items())]
        for agent in agents:
            out.append(plain(sdk.recall(agent, "note about the topic", top_k=3)))
            out.append(plain(sdk.search_memories(agent, "note", top_k=4)))
            out.append(plain(sdk.agent_memories(agent)))
            out.append(plain(sdk.agent_stats(agent)))
        out.append(plain(sdk.list_agents()))
    return out


def _same(got: list, want: list) -> None:
    """Assert two :func:`_answers` lists are equal, naming each differing answer in full."""
    assert len(got) == len(want)
    diffs = [f"answer {i}:\n  got  {g!r}\n  want {w!r}" for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not diffs, "\n".join(diffs)


def test_the_sdk_gets_the_same_answers_through_every_node_with_redis_on_and_off(
        tmp_path, redis_server: RedisServer) -> None:
    nodes = cluster_processes(tmp_path, 3, DAKERA_REDIS_URL=redis_server.url, DAKERA_REPLICATION_FACTOR="2",
                              DAKERA_SHARDS="8", DAKERA_WRITE_ACK="quorum")
    with running(nodes):
        sdk = DakeraClient(nodes[0].url, max_retries=2, timeout=30)
        ids = {}
        for a in range(AGENTS):
            for i in range(PER_AGENT):
                ids[sdk.store_memory(f"agent-{a}", f"note {i} about the topic of agent {a}")["id"]] = f"agent-{a}"
        on = _answers(nodes, ids)
        before = hits(nodes)
        _same(_answers(nodes, ids), on)  # the repeat: non-owners answer from Redis
        assert hits(nodes) > before
        # the sync SDK clears with a body: POST /v1/admin/cache/clear {"namespace": agent} (or none)
        r = redis_server.sync()

        def cached(agent: str | None = None) -> int:
            return sum(1 for _ in r.scan_iter(match=s.agent_pattern("*", agent), count=1000))

        mine, everyone = cached("agent-0"), cached()
        assert 0 < mine < everyone
        cleared = sdk.cache_clear("agent-0")
        assert cleared["success"] is True and cleared["entries_cleared"] == mine, cleared
        assert cached("agent-0") == 0 and cached() == everyone - mine
        assert sdk.cache_clear()["entries_cleared"] == everyone - mine and cached() == 0
        _same(_answers(nodes, ids), on)  # cleared: owners answer (and fill) again, the same answers
        redis_server.kill()
        wait_for(lambda: not any(httpx.get(n.url + "/v1/admin/cluster/status", timeout=10).json()["redis_healthy"]
                                 for n in nodes), 30, "every node seeing Redis down")
        _same(_answers(nodes, ids), on)  # without Redis: forwarded, the same answers
