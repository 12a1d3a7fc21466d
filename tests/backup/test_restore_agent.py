"""``restore_agent``: one agent's memories put back through the write path, checked first."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from dakera_actors import Config, open_node
from dakera_actors.errors import InvalidRequest

from ..embedcount import count_embeddings


def b64(vector: bytes) -> str:
    return base64.b64encode(vector).decode()


async def test_overwrite_or_add_missing_and_nothing_written_for_a_bad_memory(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path / "d", node_id="n", shards=4)
    async with open_node(cfg, serve_http=False) as node:
        svc = node.memory
        assert svc is not None
        for mid in ("keep", "gone"):
            await svc.store({"agent_id": "a", "content": f"original {mid}", "id": mid})
        shard = svc.shards.shard(svc.shards.shard_of("a"))
        vec = shard.agents["a"].vectors["keep"]
        record = shard.agents["a"].memories["keep"].to_record()
        backup: list[list[Any]] = [[{**record, "c": "from the backup"}, b64(vec)],
                                   [{**record, "id": "new", "c": "only in the backup"}, b64(vec)]]
        seq = shard.seq
        with pytest.raises(InvalidRequest, match=r"memories\[1\]"):
            await svc.restore_agent({"agent_id": "a", "memories": [backup[0], [record, "not base64!"]]})
        with pytest.raises(InvalidRequest, match="belongs to agent"):
            await svc.restore_agent({"agent_id": "b", "memories": backup[:1]})
        assert shard.seq == seq  # refused whole: nothing logged
        added = await svc.restore_agent({"agent_id": "a", "memories": backup})
        assert added == {"agent_id": "a", "restored": 1, "skipped": 1, "unchanged": 0, "removed": 0}
        assert svc.get("a", "keep")["content"] == "original keep"  # without overwrite, kept as it is
        replaced = await svc.restore_agent({"agent_id": "a", "memories": backup, "overwrite": True})
        # "new" is held exactly as the backup has it (added above): not written again
        assert replaced == {"agent_id": "a", "restored": 1, "skipped": 1, "unchanged": 1, "removed": 1}
        assert svc.get("a", "keep")["content"] == "from the backup"
        assert sorted(shard.agents["a"].memories) == ["keep", "new"]  # "gone" was not in the backup
        seq = shard.seq
        again = await svc.restore_agent({"agent_id": "a", "memories": backup, "overwrite": True})
        assert again["removed"] == 0 and sorted(shard.agents["a"].memories) == ["keep", "new"]
        assert again["restored"] == 0 and shard.seq == seq  # the same state: nothing logged or replicated
        # one agent in two requests: the first retains the second's ids, the second prunes nothing
        await svc.store({"agent_id": "a", "content": "not in the backup", "id": "extra"})
        first = await svc.restore_agent({"agent_id": "a", "memories": backup[:1], "overwrite": True,
                                         "retain": ["keep", "new"]})
        assert first["removed"] == 1 and sorted(shard.agents["a"].memories) == ["keep", "new"]
        second = await svc.restore_agent({"agent_id": "a", "memories": backup[1:], "overwrite": True, "prune": False})
        assert second == {"agent_id": "a", "restored": 0, "skipped": 1, "unchanged": 1, "removed": 0}  # "new" held as it is
        assert sorted(shard.agents["a"].memories) == ["keep", "new"]
        with pytest.raises(InvalidRequest, match="retain"):
            await svc.restore_agent({"agent_id": "a", "memories": backup, "retain": "keep"})


async def test_an_agent_spread_over_several_requests_keeps_every_memory_with_overwrite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each overwrite request deletes what the agent holds outside it, unless the restore's other
    requests' ids are retained: without ``retain`` the third request would delete the first two's."""
    from dakera_actors.backup import jobs

    embedded = count_embeddings(monkeypatch)
    cfg = Config(data_dir=tmp_path / "d", node_id="n", shards=4, backup_path=tmp_path / "b")
    async with open_node(cfg, serve_http=False) as node:
        svc, backups = node.memory, node.backups
        assert svc is not None and backups is not None
        for i in range(30):
            await svc.store({"agent_id": "a", "content": f"memory number {i}", "id": f"m{i}"})
        info = await backups.create({})
        with trio.fail_after(30):
            while (await backups.get(info.backup_id)).status == "inprogress":
                await backups.finished.wait()
        await svc.store({"agent_id": "a", "content": "after the backup", "id": "late"})
        shard = svc.shards.shard(svc.shards.shard_of("a"))
        one = len(json.dumps(shard.agents["a"].memories["m0"].to_record())) + 4 * svc.shards.dim + 40
        monkeypatch.setattr(jobs, "RESTORE_REQUEST_BYTES", one * 10)  # ten memories a request
        job = await backups.restore({"backup_id": info.backup_id, "overwrite": True})
        with trio.fail_after(30):
            while (job := await backups.restore_status(job.restore_id)).status == "inprogress":
                await backups.finished.wait()
        assert job.status == "completed" and job.batches is not None and job.batches >= 3, job
        assert sorted(shard.agents["a"].memories) == sorted(f"m{i}" for i in range(30))  # and "late" is gone
        assert sum(embedded) == 31  # the stores only: the bundle carries the vectors
