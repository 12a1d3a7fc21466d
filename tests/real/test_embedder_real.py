"""Real processes: a node whose DAKERA_EMBEDDER differs from the cluster's refuses to join, exiting
2 with one line naming the variable and the cluster's embedder; the cluster goes on serving."""

from __future__ import annotations

from pathlib import Path

import httpx

from .procs import cluster_processes, running


def test_a_node_with_another_embedder_is_refused(tmp_path: Path) -> None:
    first, second, odd = cluster_processes(tmp_path, 3, seeds=2)  # the first two: the default embedder
    odd.env["DAKERA_EMBEDDER"] = "hashing:256"
    with running([first, second]):
        try:
            odd.start()
            code = odd.wait(60)
        finally:
            odd.stop()
        lines = [line for line in odd.log().splitlines() if line.startswith("dakera_actors: ")]
        assert code == 2, odd.log()
        assert len(lines) == 1 and "refusing to join" in lines[0] and "DAKERA_EMBEDDER" in lines[0], odd.log()
        assert "'hashing:256'" in lines[0] and "the cluster embeds with '" in lines[0]
        for node in (first, second):
            assert httpx.get(node.url + "/health/ready").status_code == 200
        r = httpx.post(first.url + "/v1/memory/store", json={"agent_id": "a", "content": "still serving"})
        assert r.status_code == 200, r.text
