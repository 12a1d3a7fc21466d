"""The chart's lifecycle script (deploy/helm/dakera-actors/files/lifecycle.py, what preStop and
postStart run in each pod) against a real three-node cluster on loopback: preStop drains the
node through the maintenance routes and returns only once it reports drained; after the
"upgrade" (SIGTERM, start again on the same data dir) postStart brings it back and its shards
return; maintenance an operator enabled is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..real.procs import NodeProcess, cluster_processes, start_all, wait_for

pytestmark = pytest.mark.real

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "dakera-actors" / "files" / "lifecycle.py"
KEY = "hook-test-root-key"


def get(node: NodeProcess, path: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(node.url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def balanced(nodes: list[NodeProcess]) -> bool:
    status = get(nodes[0], "/admin/cluster/status")
    return (len(status["shard_distribution"]) == len(nodes) and status["shards_moving"] == 0
            and status["shard_balance"] < 0.1)


def hook(node: NodeProcess, phase: str, log: Path) -> subprocess.CompletedProcess[str]:
    """Run the script as the pod would: its own node's port, the root key, the pod's name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAKERA_", "HOOK_"))}
    env.update(DAKERA_PORT=str(node.port), DAKERA_ROOT_API_KEY=KEY, POD_NAME=node.env["DAKERA_NODE_ID"],
               HOOK_SETTLE_TIMEOUT_SECONDS="60", HOOK_DRAIN_TIMEOUT_SECONDS="120",
               HOOK_START_TIMEOUT_SECONDS="60", HOOK_LOG_PATH=str(log))
    return subprocess.run([sys.executable, str(SCRIPT), phase], env=env, capture_output=True, text=True,
                          timeout=300)


def test_prestop_drains_and_poststart_brings_the_node_back(tmp_path: Path) -> None:
    nodes = cluster_processes(tmp_path, 3, DAKERA_REPLICATION_FACTOR="2", DAKERA_ROOT_API_KEY=KEY,
                              DAKERA_REBALANCE_CONCURRENCY="16")
    log = tmp_path / "hooks.log"
    try:
        start_all(nodes)
        wait_for(lambda: balanced(nodes), 60, "a balanced cluster")
        last = nodes[2]
        assert get(last, "/admin/maintenance/status")["shards_remaining"] > 0
        # preStop: returns 0 only once the node says drained
        done = hook(last, "prestop", log)
        assert done.returncode == 0, done.stderr
        status = get(last, "/admin/maintenance/status")
        assert (status["status"], status["shards_remaining"]) == ("drained", 0), status
        assert status["reason"].startswith("kubernetes preStop:")
        assert "event=drained" in done.stderr and "event=drained" in log.read_text()
        # Kubernetes sends SIGTERM; the new container starts on the same volume, still drained
        last.signal(signal.SIGTERM)
        assert last.wait(30) == 0
        last.start()
        last.wait_healthy()
        assert get(last, "/admin/maintenance/status")["status"] == "drained"
        # postStart: maintenance off again, and the shards come back
        back = hook(last, "poststart", log)
        assert back.returncode == 0, back.stderr
        assert get(last, "/admin/maintenance/status")["maintenance"] is False
        wait_for(lambda: balanced(nodes), 120, "shards back on the restarted node")
        # maintenance an operator enabled survives a restart's postStart
        r = httpx.post(nodes[1].url + "/admin/maintenance/enable", json={"reason": "removing this node"},
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert r.status_code == 200, r.text
        kept = hook(nodes[1], "poststart", log)
        assert kept.returncode == 0 and "event=maintenance_kept" in kept.stderr, kept.stderr
        assert get(nodes[1], "/admin/maintenance/status")["maintenance"] is True
    finally:
        for node in nodes:
            node.stop()
