"""A restore job's plan and its bookkeeping (pure: no I/O, no Trio).

A restore writes the memories of its parts back one request (a *batch*) at a time. The plan is a
deterministic function of the parts and the target agents, so a runner that takes a job over
(after a leader change or a restart) recomputes the same plan and goes on from the record's
``done`` (the number of batches applied). Re-applying a batch is harmless: restore writes are
idempotent. An agent whose memories do not fit one request is spread over several batches: its
first carries every id of its restore (``retain``), so with ``overwrite`` it deletes only the
memories the backup does not have; the others replace their memories and delete nothing
(``prune`` false), so no batch deletes what another batch of the same agent put back. (Each
batch carrying the whole list would cost the agent's ids once per batch: quadratic.) A runner
resuming at a later batch of an agent finds the first applied: ``done`` counts it.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

import attrs

from .bundle import Part

RESTORE_REQUEST_BYTES = 4 * 1024 * 1024  # memories per restore_agent request, by encoded size
SAVE_EVERY_BATCHES = 8  # a runner saves its progress (``done``) after this many batches...
SAVE_EVERY_SECONDS = 5.0  # ...or this long, whichever comes first


@attrs.frozen
class Batch:
    """One ``restore_agent`` request of a plan: some memories of one agent (``[record, base64
    vector]`` pairs); when the agent is spread over several batches, its first has all its
    restored ids (``retain``) and the agent's sessions, and the others ``prune`` nothing."""

    agent: str
    memories: list[list[Any]]
    retain: list[str] = attrs.Factory(list)
    prune: bool = True
    sessions: list[dict[str, Any]] | None = None  # the first batch's: the agent's session records

    def request(self, overwrite: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": self.agent, "overwrite": overwrite, "memories": self.memories}
        if self.retain:
            body["retain"] = self.retain
        if not self.prune:
            body["prune"] = False
        if self.sessions is not None:
            body["sessions"] = self.sessions
        return body


def plan_batches(parts: list[Part], agents: set[str] | None, limit: int | None = None) -> list[Batch]:
    """The batches restoring ``parts`` (only ``agents``' memories when given): shard by shard,
    agent by agent (sorted), each at most ``limit`` bytes of memories (RESTORE_REQUEST_BYTES)."""
    limit = RESTORE_REQUEST_BYTES if limit is None else limit
    plan: list[Batch] = []
    for part in sorted(parts, key=lambda p: p.shard):
        by_agent: dict[str, list[list[Any]]] = defaultdict(list)
        sessions_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record, vector in part.memories:
            if agents is None or record.get("a") in agents:
                by_agent[record["a"]].append([record, base64.b64encode(vector).decode()])
        for session in part.sessions:
            if agents is None or session.get("a") in agents:
                sessions_of[session["a"]].append(session)
                by_agent.setdefault(session["a"], [])  # an agent with sessions only is restored too
        for agent in sorted(by_agent):
            items = by_agent[agent]
            groups: list[list[list[Any]]] = []
            group: list[list[Any]] = []
            size = 0
            for item in items:
                cost = len(item[1]) + len(json.dumps(item[0])) + 16
                if group and size + cost > limit:
                    groups.append(group)
                    group, size = [], 0
                group.append(item)
                size += cost
            groups.append(group)
            retain = sorted({item[0]["id"] for item in items}) if len(groups) > 1 else []
            plan.append(Batch(agent, groups[0], retain, sessions=sessions_of.get(agent, [])))
            plan.extend(Batch(agent, g, prune=False) for g in groups[1:])
    return plan


def memories_in(plan: list[Batch], done: int | None = None) -> int:
    """How many memories the plan's first ``done`` batches (all when None) write."""
    return sum(len(b.memories) for b in (plan if done is None else plan[:done]))


def progress_percent(plan: list[Batch], done: int) -> float:
    """The share of the plan's memories in its first ``done`` batches, 0-100."""
    total = memories_in(plan)
    if total == 0 or done >= len(plan):
        return 100.0
    return round(100.0 * memories_in(plan, done) / total, 1)


def take_over(record_token: int | None, record_runner: str | None, token: int, node_id: str,
              running_here: bool) -> bool:
    """Whether the leader of ``token`` (``node_id``) should take an inprogress job over: not while
    it runs here; yes when its runner led with an older token (or with none), or is this node
    without the job running (a restart, a failed task)."""
    if running_here:
        return False
    if record_token is None or record_token < token:
        return True
    return record_runner == node_id
