"""A restore job's plan and bookkeeping (pure): the same parts and targets give the same batches,
every memory once, an agent spread over batches retains all its ids in its first, and who takes a job over."""

from __future__ import annotations

import base64
import random
from typing import Any

from dakera_actors.backup.bundle import Part
from dakera_actors.backup.jobs import Batch, memories_in, plan_batches, progress_percent, take_over


def memory(mid: str, agent: str, size: int = 10) -> list[Any]:
    return [{"id": mid, "a": agent, "c": "x" * size}, b"\x01" * 8]


def parts() -> list[Part]:
    rng = random.Random(3)
    return [Part(0, 1, 9, [memory(f"a{i}", "a", rng.randrange(5, 200)) for i in range(40)]
                 + [memory("b0", "b")]),
            Part(1, 1, 4, [memory(f"c{i}", "c", rng.randrange(5, 200)) for i in range(7)])]


def ids(batch: Batch) -> list[str]:
    return [m[0]["id"] for m in batch.memories]


def test_the_plan_is_a_deterministic_function_of_the_parts_and_targets() -> None:
    plan = plan_batches(parts(), None, limit=1000)
    assert plan == plan_batches(list(reversed(parts())), None, limit=1000)  # the parts' order does not matter
    assert [b.agent for b in plan] == sorted(b.agent for b in plan)  # shard by shard, agent by agent
    written = [i for b in plan for i in ids(b)]
    assert sorted(written) == sorted(m[0]["id"] for p in parts() for m in p.memories)  # every memory once
    assert len(written) == len(set(written)) == memories_in(plan)
    for batch in plan:
        size = sum(len(m[1]) + len(str(m[0])) for m in batch.memories)
        assert len(batch.memories) == 1 or size <= 1000 + 200
        assert base64.b64decode(batch.memories[0][1]) == b"\x01" * 8
    assert [b.agent for b in plan_batches(parts(), {"b", "c"}, limit=1000)] == ["b"] + ["c"] * sum(
        b.agent == "c" for b in plan)


def test_an_agent_over_several_batches_retains_all_its_ids_in_the_first_and_one_batch_needs_none() -> None:
    plan = plan_batches(parts(), None, limit=1000)
    of_a = [b for b in plan if b.agent == "a"]
    assert len(of_a) >= 3
    every_a = sorted(f"a{i}" for i in range(40))
    first, *rest = of_a
    assert first.retain == every_a and first.prune and first.request(True)["retain"] == every_a
    assert "prune" not in first.request(True)
    # the others replace their memories and delete nothing (no quadratic lists of ids)
    assert all(b.retain == [] and not b.prune and b.request(True)["prune"] is False for b in rest)
    assert all(b.request(True)["overwrite"] is True and "retain" not in b.request(True) for b in rest)
    only_b = [b for b in plan if b.agent == "b"]
    assert len(only_b) == 1 and only_b[0].retain == [] and "retain" not in only_b[0].request(True)
    assert plan_batches(parts(), None) == [b for b in plan_batches(parts(), None) if not b.retain]  # 4 MiB: one each


def test_progress_counts_memories_of_the_applied_batches() -> None:
    plan = plan_batches(parts(), None, limit=1000)
    assert progress_percent(plan, 0) == 0.0 and progress_percent(plan, len(plan)) == 100.0
    steps = [progress_percent(plan, d) for d in range(len(plan) + 1)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    half = len(plan) // 2
    assert progress_percent(plan, half) == round(100.0 * memories_in(plan, half) / memories_in(plan), 1)
    assert plan[half:] == plan_batches(parts(), None, limit=1000)[half:]  # a later runner goes on from done
    assert progress_percent([], 0) == 100.0


def test_who_takes_a_job_over() -> None:
    assert take_over(1, "n1", 2, "n2", running_here=False)  # a runner of an older lease
    assert take_over(None, None, 2, "n2", running_here=False)  # a record of no lease at all
    assert not take_over(2, "n2", 2, "n2", running_here=True)  # it runs here
    assert take_over(2, "n2", 2, "n2", running_here=False)  # this node's, but no task runs it
    assert not take_over(2, "n3", 2, "n2", running_here=False)  # another node of the same lease (its claim)
    assert not take_over(3, "n3", 2, "n2", running_here=False)  # a newer leader's
