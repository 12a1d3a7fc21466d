"""Every dakera_* metric the alert rules and the Grafana dashboard query exists in a real node's
/metrics: a cluster-mode node process (the mode the Compose stack and the Helm chart run),
scraped once it leads its one-node cluster and has taken a write."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.real.procs import cluster_processes, running, wait_for

from .monitoring import missing_from, used_metric_names

pytestmark = pytest.mark.real


def sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_metric_the_alerts_and_dashboard_use_is_exported(tmp_path: Path) -> None:
    key = "metrics-test-root-key"
    headers = {"Authorization": f"Bearer {key}"}
    with running(cluster_processes(tmp_path, 1, DAKERA_ROOT_API_KEY=key)) as (node,):
        def leads() -> bool:
            status = httpx.get(node.url + "/admin/cluster/status", headers=headers, timeout=2).json()
            return bool(status.get("leader"))

        wait_for(leads, 20, "the one-node cluster elects itself leader")
        # a write, so the WAL has fsynced and the latency histogram has a route
        stored = httpx.post(node.url + "/v1/memory/store", headers=headers, timeout=5,
                            json={"agent_id": "metrics-check", "content": "scraped"})
        assert stored.status_code in (200, 201), stored.text
        scrape = httpx.get(node.url + "/metrics", headers=headers, timeout=5)
        assert scrape.status_code == 200, scrape.text
        names = sample_names(scrape.text)

    used = used_metric_names()
    assert not missing_from(names, used), (
        f"used by deploy/prometheus/alerts.yml or deploy/grafana/dakera-actors.json but not exported by a "
        f"cluster node: {sorted(missing_from(names, used))}")
    # the scrape is a real one: the seed's metrics are there
    assert {"dakera_gossip_members", "dakera_leader_lease_remaining_ms", "dakera_shard_balance"} <= names
