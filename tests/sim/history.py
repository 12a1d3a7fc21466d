"""A history of client operations on a cluster, and the checker that judges it.

Clients store, update (content carrying a version number per memory id) and forget memories, and
read them, while faults happen. Every operation is recorded with its invocation and completion
times and its outcome: ``ok`` (2xx: acknowledged), ``failed`` (a 4xx that means it was not
applied) or ``unknown`` (a timeout, a 503, a connection error: it may or may not have happened).

Memory ids are unique and each belongs to one client, which issues its writes to it one after the
other (store, updates with versions 1, 2, ..., then perhaps a forget, after which the id is never
written again), and updates or forgets only ids whose store was acknowledged. So an id's writes
are totally ordered and nothing can re-create a forgotten id.

The value of an id is its version (an int) or ``ABSENT``. After the last acknowledged write on an
id, the id may hold what that write left, or what any later write of unknown outcome would leave;
nothing else. That rule judges the final reads (a lost acknowledged write or update, a forgotten
memory that comes back) and, where the README promises read-your-writes, every read made during
the run against the writes acknowledged before the read began.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster

from .. import histrule
from ..histrule import ABSENT

CONTENT = re.compile(r"^(?P<mid>\S+) version (?P<version>\d+) ")


Instant = tuple[float, int]
_ticks = itertools.count(1)
FOREVER: Instant = (float("inf"), 0)


def instant() -> Instant:
    """Now, as (time, tick): MockClock stands still while tasks run, so the tick (a counter
    across the whole run) orders what happened at one clock reading, in the order it happened."""
    return trio.current_time(), next(_ticks)


def content_of(mid: str, version: int, agent: str) -> str:
    return f"{mid} version {version} about {agent}"


def version_of(content: str, mid: str) -> int:
    match = CONTENT.match(content)
    assert match is not None and match["mid"] == mid, f"{mid}: content {content!r} was never written to it"
    return int(match["version"])


@dataclass
class Op:
    kind: str  # store, update, forget, read
    mid: str
    agent: str
    via: str
    start: Instant
    end: Instant = (0.0, 0)
    outcome: str = "unknown"  # ok, failed, unknown
    value: Any = None  # what a write leaves (version or ABSENT); what a read saw
    status: int | None = None
    owner: str = ""  # X-Dakera-Owner of the answer: who served it (set when forwarded)

    def __str__(self) -> str:
        owner = f" from {self.owner}" if self.owner else ""
        return (f"{self.kind} {self.mid}={self.value} via {self.via}{owner} [{self.start[0]:.2f}, {self.end[0]:.2f}] "
                f"{self.outcome} {self.status}")


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    #: set by the fault schedule: the next client to get a write acknowledged kills that shard's
    #: primary at once, before its replicas can fetch anything more
    kill_after_ack: bool = False

    #: (node, from, until): the node was cut off from the majority (or only just healed and not
    #: yet told the new map); reads through it in that window are not judged, see check_reads
    cut_off: list[tuple[str, Instant, Instant]] = field(default_factory=list)

    def note(self, event: str) -> None:
        self.events.append(f"t={trio.current_time():.2f} {event}")

    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind != "read"]

    def share_acknowledged(self) -> float:
        return histrule.share_acknowledged(self.writes())

    def allowed(self, mid: str, *, acked_before: Instant, invoked_before: Instant) -> set[Any]:
        """Values ``mid`` may hold for a read that began at ``acked_before`` and ended at
        ``invoked_before`` (see :func:`tests.histrule.allowed`)."""
        writes = [op for op in self.ops if op.mid == mid and op.kind != "read"]
        return histrule.allowed(writes, acked_before=acked_before, invoked_before=invoked_before)

    def check_final(self, final: dict[str, Any]) -> list[str]:
        """Problems with the final values (every write has completed, so nothing is in flight)."""
        problems = []
        for mid, value in sorted(final.items()):
            allowed = self.allowed(mid, acked_before=FOREVER, invoked_before=FOREVER)
            if value not in allowed:
                problems.append(f"{mid}: final read {value}, allowed {sorted(map(str, allowed))}: "
                                + "; ".join(str(op) for op in self.ops if op.mid == mid))
        return problems

    def excused(self, read: Op) -> bool:
        """A read through a node cut off from the majority. Such a node still serves the shards it
        was primary of from its own copy until it learns the new map, so it answers with what it
        had when it was cut off: older than what the new primaries acknowledged since (a known gap
        against SPEC section 4, pinned by
        test_a_cut_off_primary_serves_reads_older_than_acknowledged_writes)."""
        return any(node == read.via and start <= read.end and read.start <= until
                   for node, start, until in self.cut_off)

    def check_reads(self) -> list[str]:
        """Reads made during the run that returned something older than a write acknowledged before
        they began (read-your-writes through any node), except reads through a cut-off node."""
        problems = []
        for read in self.ops:
            if read.kind != "read" or read.outcome != "ok" or self.excused(read):
                continue
            allowed = self.allowed(read.mid, acked_before=read.start, invoked_before=read.end)
            if read.value not in allowed:
                problems.append(f"{read}: allowed {sorted(map(str, allowed))}: "
                                + "; ".join(str(op) for op in self.ops if op.mid == read.mid and op.kind != "read"))
        return problems


def outcome_of(status: int | None) -> str:
    if status is not None and 200 <= status < 300:
        return "ok"
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return "failed"
    return "unknown"


async def call(cluster: Cluster, via: str, method: str, url: str, timeout: float, **kwargs: Any) -> httpx.Response | None:
    """One HTTP request; None when it did not complete (node killed under it, client timeout)."""
    with trio.move_on_after(timeout):
        try:
            async with cluster.client(via) as http:
                return await http.request(method, url, **kwargs)
        except httpx.HTTPError:
            return None
    return None


def kill_primary_of(cluster: Cluster, agent: str, history: History) -> None:
    """Kill the primary of ``agent``'s shard as the node's own map names it (no await before)."""
    for node in cluster.nodes.values():
        smap = node.shard_map.view.value  # type: ignore[union-attr]
        if smap is None:
            continue
        primary = smap.owner(shard_of(agent, smap.shards))
        if primary is not None and cluster.slot(primary).running:
            history.note(f"kill {primary} right after an acknowledged write for {agent}")
            cluster.kill(primary)
            history.kill_after_ack = False
        return


@dataclass
class Client:
    """One client: a sequence of operations on its own ids, reads of anyone's."""

    cluster: Cluster
    rng: random.Random
    name: str
    history: History
    timeout: float = 15.0
    n: int = 0
    #: ids whose store was acknowledged and that were not forgotten -> (agent, next version)
    mine: dict[str, list[Any]] = field(default_factory=dict)

    async def one(self) -> None:
        live = [i for i in self.cluster.ids if self.cluster.slot(i).running]
        if not live:
            await trio.sleep(0.1)
            return
        via = self.rng.choice(live)
        roll = self.rng.random()
        if roll < 0.3 or not self.mine:
            await self.store(via)
        elif roll < 0.55:
            await self.update(via)
        elif roll < 0.65:
            await self.forget(via)
        else:
            await self.read(via)

    async def write(self, op: Op, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        self.history.ops.append(op)
        r = await call(self.cluster, op.via, method, url, self.timeout, **kwargs)
        op.end = instant()
        op.status = r.status_code if r is not None else None
        op.outcome = outcome_of(op.status)
        if op.outcome == "ok" and self.history.kill_after_ack:
            kill_primary_of(self.cluster, op.agent, self.history)
        return r

    async def store(self, via: str, agent: str | None = None) -> str:
        """Store a new id (version 0) for ``agent`` (a random one by default); return the id."""
        agent = agent or f"agent-{self.rng.randrange(24)}"
        mid = f"{self.name}-{self.n}"
        self.n += 1
        op = Op("store", mid, agent, via, instant(), value=0)
        await self.write(op, "POST", "/v1/memory/store",
                         json={"agent_id": agent, "content": content_of(mid, 0, agent), "id": mid})
        if op.outcome == "ok":
            self.mine[mid] = [agent, 1]
        return mid

    async def update(self, via: str, mid: str | None = None) -> None:
        """Update ``mid`` (a random one of ours by default) to its next version."""
        mid = mid or self.rng.choice(sorted(self.mine))
        agent, version = self.mine[mid]
        self.mine[mid][1] += 1
        op = Op("update", mid, agent, via, instant(), value=version)
        r = await self.write(op, "PUT", f"/v1/memory/update/{mid}", params={"agent_id": agent},
                             json={"content": content_of(mid, version, agent)})
        if r is not None and r.status_code == 404:
            # not applied, and a read too: the node in charge does not have the memory
            self.history.ops.append(Op("read", mid, agent, via, op.start, op.end, "ok", ABSENT, 404))

    async def forget(self, via: str) -> None:
        mid = self.rng.choice(sorted(self.mine))
        agent, _ = self.mine.pop(mid)  # never written again, whatever the outcome
        op = Op("forget", mid, agent, via, instant(), value=ABSENT)
        await self.write(op, "POST", "/v1/memory/forget", json={"agent_id": agent, "memory_ids": [mid]})

    async def read(self, via: str, mid: str | None = None) -> None:
        """Read ``mid`` (by default any id stored so far, by any client)."""
        known = [op for op in self.history.ops if op.kind == "store" and mid in (None, op.mid)]
        if not known:
            return
        target = self.rng.choice(known)
        op = Op("read", target.mid, target.agent, via, instant())
        r = await call(self.cluster, via, "GET", f"/v1/memory/get/{target.mid}", self.timeout,
                       params={"agent_id": target.agent})
        op.end = instant()
        op.status = r.status_code if r is not None else None
        op.owner = r.headers.get("X-Dakera-Owner", "") if r is not None else ""
        if r is not None and r.status_code == 200:
            op.outcome, op.value = "ok", version_of(r.json()["content"], target.mid)
        elif r is not None and r.status_code == 404:
            op.outcome, op.value = "ok", ABSENT
        self.history.ops.append(op)


async def read_final(cluster: Cluster, history: History, rng: random.Random) -> dict[str, Any]:
    """Every id ever stored, read through a random node; a 503 is "not now", so ask again."""
    final: dict[str, Any] = {}
    for op in history.ops:
        if op.kind != "store" or op.mid in final:
            continue
        r = None
        for _ in range(60):
            r = await call(cluster, rng.choice(cluster.ids), "GET", f"/v1/memory/get/{op.mid}", 15.0,
                           params={"agent_id": op.agent})
            if r is not None and r.status_code != 503:
                break
            await trio.sleep(0.5)
        assert r is not None and r.status_code in (200, 404), f"{op.mid}: final read answered {r and r.status_code}"
        final[op.mid] = version_of(r.json()["content"], op.mid) if r.status_code == 200 else ABSENT
    return final
