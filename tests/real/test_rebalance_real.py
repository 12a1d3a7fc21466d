"""Real processes on loopback, the seed's scaling procedures: a fourth node joins from seeds and
receives shards; maintenance drains it to shards_remaining 0; it is stopped and started (the
rolling-upgrade steps) and brought back; an SDK client reading and writing all along sees no
error and loses nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from dakera import DakeraClient, DakeraError

from .procs import Acks, Workers, cluster_processes, start_all, wait_for

pytestmark = pytest.mark.real


def get(node, path: str) -> dict:  # type: ignore[no-untyped-def]
    return httpx.get(node.url + path, timeout=5).json()




def balanced(nodes, members: int) -> bool:  # type: ignore[no-untyped-def]
    status = get(nodes[0], "/admin/cluster/status")
    versions = {get(n, "/admin/cluster/status")["shard_map_version"] for n in nodes}
    return (len(versions) == 1 and len(status["shard_distribution"]) == members and status["shards_moving"] == 0
            and status["shard_balance"] < 0.1)


def test_join_drain_restart_and_rejoin_with_no_client_error(tmp_path: Path) -> None:
    nodes = cluster_processes(tmp_path, 4, seeds=3, DAKERA_REPLICATION_FACTOR="2", DAKERA_REBALANCE_CONCURRENCY="16")
    first, fourth = nodes[:3], nodes[3]
    try:
        start_all(first)
        wait_for(lambda: balanced(first, 3), 30, "a balanced three-node cluster")
        seed_client = DakeraClient(first[0].url, max_retries=5, timeout=30)
        acked: dict[str, str] = {}
        for i in range(300):
            agent = f"agent-{i % 60:03}"
            acked[seed_client.store_memory(agent, f"memory {i} of {agent}")["id"]] = agent
        errors: list[str] = []
        written = Acks()
        workers = Workers()

        def client_load(k: int) -> None:
            # a client behind a load balancer over the three original nodes; the SDK retries 503s
            clients = [DakeraClient(n.url, max_retries=5, timeout=30) for n in first]
            n = 0
            while not workers.stop.is_set():
                client = clients[n % 3]
                agent = f"agent-{(n * 7 + k) % 60:03}"
                try:
                    if n % 2:
                        latest = written.snapshot()[-1:]
                        mid, owner = next(iter(acked.items())) if n % 4 == 1 or not latest else latest[0][1:]
                        client.get_memory(owner, mid)
                    else:
                        written.add(client.store_memory(agent, f"written during the procedure {k}-{n}")["id"], agent)
                except DakeraError as exc:  # a client error fails the test; any other kind too (Workers)
                    errors.append(f"{time.monotonic():.1f} {type(exc).__name__}: {exc}")
                n += 1
                time.sleep(0.01)

        def writes_in(phase: str, start: float) -> None:
            # the clients were really working during the phase: "no client error" then means something
            workers.check()
            assert written.between(start, time.monotonic()), f"no write acknowledged while {phase}"

        for k in range(2):
            workers.start(client_load, k)
        try:
            wait_for(lambda: workers.check() or len(written) >= 10, 60, "the clients' first writes")
            # 1. adding a node: it joins from the seeds and shards rebalance onto it
            phase = time.monotonic()
            fourth.start()
            fourth.wait_healthy()
            joined = wait_for(lambda: balanced(nodes, 4), 120, "shards rebalanced onto the fourth node")
            writes_in("the fourth node joined", phase)
            four = get(fourth, "/admin/maintenance/status")
            assert four["status"] == "active" and four["shards_remaining"] > 0
            # 2. removing it: maintenance drains it
            phase = time.monotonic()
            r = httpx.post(fourth.url + "/admin/maintenance/enable", timeout=10)
            assert r.status_code == 200 and r.json()["status"] in ("draining", "drained"), r.text
            drained = wait_for(lambda: get(fourth, "/admin/maintenance/status") == {
                **get(fourth, "/admin/maintenance/status"), "status": "drained", "shards_remaining": 0}, 120, "drained")
            writes_in("the fourth node drained", phase)
            # 3. the rolling upgrade's steps: stop, start, health, rejoin
            phase = time.monotonic()
            fourth.signal(signal.SIGTERM)
            assert fourth.wait(30) == 0
            fourth.start()
            fourth.wait_healthy()
            assert httpx.get(fourth.url + "/health", timeout=5).json()["status"] == "healthy"
            # restarted, it is still in maintenance (the flag is persisted): no shard comes back to it
            # until the operator's step 5
            after = get(fourth, "/admin/maintenance/status")
            assert after["maintenance"] and after["status"] == "drained", after
            assert fourth.env["DAKERA_NODE_ID"] not in get(first[0], "/admin/cluster/status")["shard_distribution"]
            r = httpx.post(first[0].url + "/v1/admin/cluster/maintenance/disable", json={"node_ids": [
                fourth.env["DAKERA_NODE_ID"]]}, timeout=10)
            assert r.status_code == 200, r.text
            back = wait_for(lambda: balanced(nodes, 4), 120, "shards back on the fourth node")
            writes_in("the fourth node restarted and rejoined", phase)
        finally:
            workers.finish()
        acked.update({mid: agent for _, mid, agent in written.snapshot()})
        print(f"\njoin balanced in {joined:.1f}s, drained in {drained:.1f}s, rejoined in {back:.1f}s; "
              f"{len(acked)} acknowledged, {len(errors)} client errors")
        assert not errors, errors[:10]
        reader = DakeraClient(fourth.url, max_retries=5, timeout=30)
        for mid, agent in list(acked.items()):
            assert reader.get_memory(agent, mid)["id"] == mid
    finally:
        for n in nodes:
            n.stop()


def test_rolling_upgrade_of_every_node_with_no_client_error(tmp_path: Path) -> None:
    """The seed's rolling upgrade, node by node through the whole cluster, the leader included."""
    nodes = cluster_processes(tmp_path, 3, DAKERA_REPLICATION_FACTOR="2", DAKERA_REBALANCE_CONCURRENCY="16")
    try:
        start_all(nodes)
        wait_for(lambda: balanced(nodes, 3), 30, "a balanced cluster")
        errors: list[str] = []
        written = Acks()
        workers = Workers()
        upgrading: list[str] = []
        rounds = [0]  # the client's iterations begun, each choosing its node after counting itself

        def client_load() -> None:
            # behind a load balancer that skips the node being upgraded (its /health/ready is
            # what an operator's balancer would watch; the drained node would still forward)
            clients = {n.url: DakeraClient(n.url, max_retries=5, timeout=30) for n in nodes}
            i = 0
            while not workers.stop.is_set():
                rounds[0] += 1
                usable = [n for n in nodes if n.url not in upgrading]
                client = clients[usable[i % len(usable)].url]
                agent = f"agent-{i % 40:03}"
                try:
                    mid = client.store_memory(agent, f"written during the rolling upgrade {i}")["id"]
                    written.add(mid, agent)
                    client.get_memory(agent, mid)
                except DakeraError as exc:  # a client error fails the test; any other kind too (Workers)
                    errors.append(f"{type(exc).__name__}: {exc}")
                i += 1
                time.sleep(0.01)

        workers.start(client_load)
        try:
            wait_for(lambda: workers.check() or len(written) >= 10, 60, "the client's first writes")
            admin = DakeraClient(nodes[0].url, max_retries=5, timeout=30)
            for node in nodes:
                phase = time.monotonic()
                # the SDK's call, naming the node (forwarded by nodes[0] when it is another one)
                answer = admin.admin_enable_maintenance("rolling upgrade", node_ids=[node.env["DAKERA_NODE_ID"]])
                assert answer["maintenance"] and answer["reason"] == "rolling upgrade", answer
                wait_for(lambda node=node: get(node, "/admin/maintenance/status")["status"] == "drained", 120, "drained")
                upgrading.append(node.url)
                # like a balancer draining its backend: the round that may have chosen this node
                # before it left the pool finishes before the node is stopped
                begun = rounds[0]
                wait_for(lambda begun=begun: workers.check() or rounds[0] > begun, 60, "the client's round to end")
                node.signal(signal.SIGTERM)
                assert node.wait(30) == 0
                node.start()
                node.wait_healthy()
                assert httpx.post(node.url + "/admin/maintenance/disable", timeout=10).status_code == 200
                upgrading.remove(node.url)
                wait_for(lambda: balanced(nodes, 3), 120, "shards back after the upgrade")
                # the client was really working while this node was upgraded
                workers.check()
                assert written.between(phase, time.monotonic()), f"no write acknowledged while {node.url} upgraded"
        finally:
            workers.finish()
        assert not errors, errors[:10]
        acked = {mid: agent for _, mid, agent in written.snapshot()}
        reader = DakeraClient(nodes[0].url, max_retries=5, timeout=30)
        for mid, agent in list(acked.items()):
            assert reader.get_memory(agent, mid)["id"] == mid
        print(f"\nrolling upgrade of 3 nodes: {len(acked)} writes acknowledged and read back, no client error")
    finally:
        for n in nodes:
            n.stop()
