"""The chaos workload against three real loopback processes (quorum acks, RF=3) and no faults:
every kind of operation is acknowledged, the final reads agree, and the checker passes; the
fencing tokens sampled meanwhile pass their checker too."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ..real.procs import cluster_processes, running, wait_for
from .checker import Sample, check, check_tokens
from .history import History
from .workload import Workload

pytestmark = pytest.mark.real

RUN_SECONDS = 3.0


def test_the_workload_on_a_healthy_cluster_checks_clean(tmp_path: Path) -> None:
    with running(cluster_processes(tmp_path, 3, DAKERA_WRITE_ACK="quorum", DAKERA_REPLICATION_FACTOR="3")) as nodes:
        urls = [n.url for n in nodes]
        samples: list[Sample] = []

        def sample_tokens() -> list[dict]:
            answers = [httpx.get(u + "/admin/cluster/status", timeout=2).json() for u in urls]
            samples.extend((time.monotonic(), a["node_id"], a["leader"], a["fencing_token"]) for a in answers)
            return answers

        wait_for(lambda: all(a["leader"] for a in sample_tokens()), 30, "a leader known to every node")
        history = History()
        workload = Workload(lambda: urls, agents=4, clients=4, history=history, seed=20)
        started = time.monotonic()
        workload.start()
        try:
            # the workload runs its few seconds while the tokens are sampled
            wait_for(lambda: bool(sample_tokens()) and time.monotonic() - started > RUN_SECONDS,
                     RUN_SECONDS + 30, "the run's seconds")
        finally:
            workload.stop()
        final = workload.final_reads(urls)
        report = check(history.ops(), final)
        assert report.ok(), report.render()
        kinds = {(op.kind, op.outcome) for op in history.ops()}
        assert {("store", "ok"), ("forget", "ok"), ("read", "ok")} <= kinds, report.render()
        assert report.stores_checked >= 10 and min(report.final_memories.values()) > 0, report.render()
        assert len(samples) > len(urls) and check_tokens(samples) == []
