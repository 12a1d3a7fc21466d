"""The L1.5 cache with real processes, a real redis-server and the official SDK: non-owners answer
repeated reads from Redis; with Redis killed, paused or flushed every node still answers, every
read right after an acknowledged update sees it, and the cache is used again once Redis is back."""

from __future__ import annotations

import httpx
import pytest
from dakera import DakeraClient

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
