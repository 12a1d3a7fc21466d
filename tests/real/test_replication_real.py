"""Three real processes, RF=2, quorum acks: SIGKILL of any one node (the leader or not) while the
SDK writes loses no acknowledged memory; survivors serve it all after detection plus promotion;
the killed node comes back, catches up, and replication reports healthy again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from dakera import DakeraClient, DakeraError

from dakera_actors.store.shard import shard_of

from .procs import Acks, NodeProcess, Workers, cluster_processes, running, wait_for

pytestmark = pytest.mark.real

# the README documents ~3-4 s (SWIM declares Dead at ~3 s, then promotion and takeover); the
# budget leaves room for a loaded CI machine
FAILOVER_BUDGET = 20.0


def status(node: NodeProcess, path: str = "/admin/cluster/status") -> dict:
    return httpx.get(node.url + path, timeout=5).json()




def healthy(nodes: list[NodeProcess]) -> bool:
    report = status(nodes[0], "/admin/cluster/replication")
    versions = {status(n)["shard_map_version"] for n in nodes}
    return len(versions) == 1 and report["under_replicated_shards"] == 0 and not report["down"]


@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_sigkill_of_any_node_loses_no_acknowledged_memory(tmp_path: Path, victim_role: str) -> None:
    env = {"DAKERA_REPLICATION_FACTOR": "2", "DAKERA_WRITE_ACK": "quorum", "DAKERA_REREPLICATION_GRACE_SECONDS": "120"}
    with running(cluster_processes(tmp_path, 3, **env)) as nodes:
        wait_for(lambda: healthy(nodes), 30, "a healthy cluster")
        clients = [DakeraClient(n.url, max_retries=3, timeout=20) for n in nodes]
        acked: dict[str, str] = {}  # memory id -> agent
        for i in range(1000):
            agent = f"agent-{i % 100:03}"
            acked[clients[i % 3].store_memory(agent, f"memory {i} of {agent}: the sky is colour {i}")["id"]] = agent
        leader = status(nodes[0])["leader"]
        victim = next(n for n in nodes if (n.env["DAKERA_NODE_ID"] == leader) == (victim_role == "leader"))
        survivors = [n for n in nodes if n is not victim]
        # which agents have a copy on the victim: their writes need the failover to go on
        shards = status(nodes[0], "/admin/cluster/shards")["shards"]
        count = len(shards)
        victim_id = victim.env["DAKERA_NODE_ID"]
        on_victim = {f"agent-{i:03}" for i in range(100)
                     if victim_id in [shards[shard_of(f"agent-{i:03}", count)]["primary"],
                                      *shards[shard_of(f"agent-{i:03}", count)]["replicas"]]}
        assert on_victim, "no agent's shard has a copy on the victim: the failover would not be exercised"
        # keep writing through a survivor while the victim dies: what is acknowledged must stay
        during = Acks()
        workers = Workers()

        def write_on() -> None:
            client = DakeraClient(survivors[0].url, max_retries=1, timeout=20)
            n = 0
            while not workers.stop.is_set():
                agent = f"agent-{n % 100:03}"
                try:
                    during.add(client.store_memory(agent, f"written during the failover {n}")["id"], agent)
                except DakeraError:
                    pass  # refused or timed out: not acknowledged, nothing promised (any other kind fails)
                n += 1

        workers.start(write_on)
        try:
            wait_for(lambda: workers.check() or len(during) >= 20, 60, "the writer's first acknowledgements")
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            killed_at = time.monotonic()
            # the failure window lasts until the victim restarts: in it, the survivors must go on
            # acknowledging writes, among them writes to shards that had a copy on the victim (they
            # wait for its Dead verdict and, where it was primary, the promotion)
            wait_for(lambda: workers.check() or len({a for _, _, a in during.between(killed_at)} & on_victim) >= 5,
                     FAILOVER_BUDGET + 30, "writes to the victim's shards acknowledged after SIGKILL")
        finally:
            workers.finish()
        in_window = during.between(killed_at)  # the writer stopped before the victim's restart
        acked.update({mid: agent for _, mid, agent in during.snapshot()})
        # every acknowledged memory is served by the survivors once the replicas are promoted
        readers = [DakeraClient(n.url, max_retries=1, timeout=20) for n in survivors]
        missing = dict(acked)

        def all_readable() -> bool:
            for mid, agent in list(missing.items()):
                try:
                    readers[hash(mid) % 2].get_memory(agent, mid)
                except DakeraError:
                    return False
                del missing[mid]
            return True

        wait_for(all_readable, FAILOVER_BUDGET + 30, f"{len(missing)} acknowledged memories readable")
        failover = time.monotonic() - killed_at
        print(f"\n{victim_role} killed: {len(acked)} acknowledged ({len(in_window)} after the SIGKILL), all readable "
              f"through the survivors {failover:.1f}s after SIGKILL")
        # the victim restarts, rejoins as a replica and catches up; replication is healthy again
        victim.start()
        victim.wait_healthy()
        wait_for(lambda: healthy(nodes), 60, "replication healthy after the restart")
        back = DakeraClient(victim.url, max_retries=3, timeout=20)
        for mid, agent in list(acked.items())[::50]:
            assert back.get_memory(agent, mid)["id"] == mid
