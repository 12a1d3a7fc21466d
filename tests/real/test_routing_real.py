"""Three real processes: the dakera SDK pointed at each node in turn sees one memory server."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dakera import DakeraClient, ServiceUnavailableError

from .procs import NodeProcess, cluster_processes, running, wait_for

pytestmark = pytest.mark.real


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running(cluster_processes(tmp_path, 3)) as nodes:
        yield nodes


def same_map(nodes: list[NodeProcess]) -> bool:
    versions = {httpx.get(n.url + "/admin/cluster/status", timeout=2).json()["shard_map_version"] for n in nodes}
    return len(versions) == 1 and 0 not in versions


def test_sdk_through_every_node_stores_and_recalls_fifty_agents(cluster: list[NodeProcess]) -> None:
    wait_for(lambda: same_map(cluster), 60, "a common shard map")
    clients = [DakeraClient(n.url, max_retries=2, timeout=10) for n in cluster]
    stored = {}
    for i in range(50):
        agent = f"agent-{i:02}"
        memory = clients[i % 3].store_memory(agent, f"agent {i} prefers tea number {i}", tags=[f"t{i % 5}"])
        stored[agent] = memory["id"]
    for c in clients:
        for agent, mid in stored.items():
            assert c.get_memory(agent, mid)["id"] == mid
        assert c.recall("agent-07", "which tea does agent 7 prefer").memories[0].id == stored["agent-07"]
        assert {a["agent_id"] for a in c.list_agents()} == set(stored)
    forwarded = 0.0
    for n in cluster:
        for line in httpx.get(n.url + "/metrics").text.splitlines():
            if line.startswith("dakera_forwarded_requests_total"):
                forwarded += float(line.split()[-1])
    assert forwarded > 0


def test_a_killed_owner_gives_a_clean_503_not_a_hang(cluster: list[NodeProcess]) -> None:
    wait_for(lambda: same_map(cluster), 60, "a common shard map")
    shards = httpx.get(cluster[0].url + "/admin/cluster/shards").json()["shards"]
    from dakera_actors.store.shard import shard_of

    victim = cluster[2]
    victim_id = victim.env["DAKERA_NODE_ID"]
    agent = next(f"agent-{i}" for i in range(10_000) if shards[shard_of(f"agent-{i}", 64)]["primary"] == victim_id)
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    # a bounded answer, never a hang: the node answers 503 once its forward times out (the request
    # timeout, 5 s); a hang would end in the client's own timeout, a TimeoutError, not this
    client = DakeraClient(cluster[0].url, max_retries=1, timeout=120)
    with pytest.raises(ServiceUnavailableError):
        client.store_memory(agent, "while its owner is down")
