"""``restore_agent``: one agent's memories put back through the write path, checked first."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from dakera_actors import Config, open_node
from dakera_actors.errors import InvalidRequest


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
        assert added == {"agent_id": "a", "restored": 1, "skipped": 1, "removed": 0}
        assert svc.get("a", "keep")["content"] == "original keep"  # without overwrite, kept as it is
        replaced = await svc.restore_agent({"agent_id": "a", "memories": backup, "overwrite": True})
        # "new" is held exactly as the backup has it (added above): not written again
        assert replaced == {"agent_id": "a", "restored": 1, "skipped": 1, "removed": 1}
        assert svc.get("a", "keep")["content"] == "from the backup"
        assert sorted(shard.agents["a"].memories) == ["keep", "new"]  # "gone" was not in the backup
        seq = shard.seq
        again = await svc.restore_agent({"agent_id": "a", "memories": backup, "overwrite": True})
        assert again["removed"] == 0 and sorted(shard.agents["a"].memories) == ["keep", "new"]
        assert again["restored"] == 0 and shard.seq == seq  # the same state: nothing logged or replicated
