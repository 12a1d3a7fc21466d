"""Three real node processes agree on one leader; SIGKILL of the leader elects another with a
higher fencing token, which a restarted node does not forget."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .procs import NodeProcess, cluster_processes, running

pytestmark = pytest.mark.real


def wait_for(condition: Callable[[], Any], deadline: float, what: str) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def status(node: NodeProcess) -> dict[str, Any]:
    try:
        return httpx.get(node.url + "/admin/cluster/status", timeout=1).json()
    except httpx.HTTPError:
        return {}


def agreed(nodes: list[NodeProcess]) -> tuple[str, int] | None:
    views = {(s.get("leader"), s.get("fencing_token")) for s in map(status, nodes)}
    if len(views) == 1:
        leader, token = views.pop()
        if leader is not None:
            return leader, token
    return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running(cluster_processes(tmp_path, 3)) as nodes:
        yield nodes


def test_one_leader_and_failover_with_a_higher_token(cluster: list[NodeProcess]) -> None:
    leader, token = wait_for(lambda: agreed(cluster), 60, "one agreed leader")
    roles = {m["id"]: m["role"] for m in httpx.get(cluster[0].url + "/admin/cluster/nodes").json()}
    assert [i for i, r in roles.items() if r == "leader"] == [leader]
    victim = next(n for n in cluster if n.env["DAKERA_NODE_ID"] == leader)
    survivors = [n for n in cluster if n is not victim]
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    new_leader, new_token = wait_for(lambda: (a := agreed(survivors)) and a[0] != leader and a,
                                     60, "a new agreed leader")
    assert new_token > token
    victim.start()  # it rejoins as a follower and learns the newer token
    victim.wait_healthy()
    wait_for(lambda: agreed(cluster) == (new_leader, new_token), 60, "the restarted node to follow")
