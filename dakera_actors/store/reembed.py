"""Re-embedding: a node whose shards' vectors were made by another embedder than its own gives
every memory a new vector, in the background, and switches each shard when all are there.

How (see the ``revec`` and ``reembed`` records in :mod:`.shard`):

* only a shard's primary re-embeds it; its records go through the WAL and replication like any
  write, so every copy stages the same vectors and switches at the same record (replicas never
  embed: they end with exactly the primary's vectors);
* a batch of memories without a current staged vector is embedded off the event loop (the node's
  :class:`~dakera_actors.runtime.offload.Offload`) and logged as one ``revec`` record; then the
  task pauses (``pause`` seconds), so serving goes on;
* when none is left, a ``reembed`` record switches the shard: its indexes are rebuilt from the
  staged vectors, in one step. Until then queries of the shard are embedded with its old embedder
  (:meth:`~.service.MemoryService.embedder_of`) and search the old vectors;
* staged vectors are state like any other: a snapshot carries them and the log replays them, so a
  restart goes on from where it was (:func:`~.shard.pending` lists only what is still missing).

:func:`progress` is the pure reading of what is left; :class:`Reembedder` is the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import trio

from ..errors import ServiceError
from ..log import EventLogger
from ..metrics import NodeMetrics
from .service import MemoryService
from .shard import ShardSet, content_hash, pending

__all__ = ["Progress", "Reembedder", "progress"]

BATCH = 64  # memories per revec record
PAUSE = 0.05  # seconds between two batches: the throttle
IDLE = 2.0  # seconds between looks when nothing is to do


@attrs.frozen
class Progress:
    """What is left to re-embed on this node (shards it leads), to the node's embedder."""

    embedder: str
    shards_remaining: int
    memories_remaining: int
    memories_done: int
    #: shards whose old embedder cannot be built here (their recall is BM25 only meanwhile)
    bm25_only: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "shards_remaining": self.shards_remaining,
                "memories_remaining": self.memories_remaining, "memories_reembedded": self.memories_done,
                "bm25_only_shards": list(self.bm25_only)}


def progress(shards: ShardSet, led: Callable[[int], bool], done: int = 0,
             unavailable: frozenset[str] = frozenset()) -> Progress:
    """Shards ``led`` here whose vectors are not of ``shards.embedder`` yet, and their memories
    still without a new vector."""
    remaining, memories, bm25 = 0, 0, []
    for sid, shard in sorted(shards.shards.items()):
        if not led(sid) or (shard.embedder == shards.embedder and shard.dim == shards.dim):
            continue
        remaining += 1
        memories += len(pending(shard, shards.embedder, shards.dim))
        if shard.embedder in unavailable:
            bm25.append(sid)
    return Progress(shards.embedder, remaining, memories, done, tuple(bm25))


class Reembedder:
    """The background loop (see the module doc); ``progress()`` for the admin API."""

    def __init__(self, service: MemoryService, metrics: NodeMetrics, log: EventLogger, *,
                 batch: int | None = None, pause: float | None = None, idle: float | None = None,
                 allowed: Callable[[], bool] = lambda: True) -> None:
        self.service, self.metrics, self.log = service, metrics, log
        #: whether the node may re-embed now (a cluster node: once ready, and not refusing to join)
        self.allowed = allowed
        self.batch = batch if batch is not None else BATCH
        self.pause = pause if pause is not None else PAUSE
        self.idle = idle if idle is not None else IDLE
        self.done = 0
        self._last = Progress(service.shards.embedder, 0, 0, 0)

    @property
    def shards(self) -> ShardSet:
        return self.service.shards

    def led(self, shard: int) -> bool:
        """Whether this node writes the shard (a single node: every shard)."""
        hooks = self.service.owner.hooks
        return hooks is None or hooks.writable(shard)

    def progress(self) -> Progress:
        """What is left, as of the loop's last batch (reading it anew scans every memory)."""
        unavailable = {k for k, v in self.service.old_embedders.items() if v is None}
        bm25 = tuple(sid for sid, shard in sorted(self.shards.shards.items())
                     if shard.embedder in unavailable and self.led(sid))
        return attrs.evolve(self._last, bm25_only=bm25)

    def _measure(self) -> Progress:
        unavailable = frozenset(k for k, v in self.service.old_embedders.items() if v is None)
        now = progress(self.shards, self.led, self.done, unavailable)
        self._publish(now)
        return now

    def _publish(self, now: Progress) -> None:
        self._last = now
        self.metrics.reembed_shards_remaining.set(now.shards_remaining)
        self.metrics.reembed_memories_remaining.set(now.memories_remaining)

    async def run(self) -> None:
        """Forever: re-embed every shard that needs it, a batch at a time, then look again."""
        announced = False
        while True:
            now = self._measure()
            if self.allowed():
                await self.stand_ins()
            if now.shards_remaining == 0 or not self.allowed():
                if announced:
                    self.log.info("reembed_done", embedder=now.embedder, memories=self.done)
                    announced = False
                await trio.sleep(self.idle)
                continue
            if not announced:
                self.log.info("reembed_started", embedder=now.embedder, shards=now.shards_remaining,
                              memories=now.memories_remaining)
                announced = True
            for sid in sorted(self.shards.shards):
                if not self.led(sid) or self.shards.embedder_of(sid) == (now.embedder, self.shards.dim):
                    continue
                try:
                    await self.shard(sid)
                except ServiceError as exc:  # not writable just now (moving, no quorum): later
                    self.log.info("reembed_deferred", shard=sid, reason=str(exc)[:200])
                    await trio.sleep(self.pause)

    async def stand_ins(self) -> int:
        """Give real vectors to the memories of led shards in the node's space that hold an
        all-zero stand-in (a write embedded by the old embedder that landed just after its shard
        switched): one ``revec`` in the shard's own space per batch. Returns how many."""
        shards, fixed = self.shards, 0
        for sid, shard in sorted(shards.shards.items()):
            if not shard.stand_ins or not self.led(sid) or (shard.embedder, shard.dim) != (shards.embedder, shards.dim):
                continue
            work = []
            for agent, mid in sorted(shard.stand_ins)[:self.batch]:
                data = shard.agents.get(agent)
                memory = data.memories.get(mid) if data is not None else None
                if memory is not None:
                    work.append((agent, mid, memory.content))
            if not work:
                continue
            try:
                fixed += await self._revec(sid, work)
            except ServiceError as exc:
                self.log.info("reembed_deferred", shard=sid, reason=str(exc)[:200])
                continue
            self.log.info("stand_in_vectors_replaced", shard=sid, memories=len(work))
            await trio.sleep(self.pause)
        return fixed

    async def shard(self, sid: int) -> None:
        """Re-embed what shard ``sid`` lacks (listed once: writes meanwhile are caught by the
        next look), a batch at a time with a pause between, then switch it if nothing is missing."""
        work = pending(self.shards.shard(sid), self.shards.embedder, self.shards.dim)
        for start in range(0, len(work), self.batch):
            if not self.led(sid):
                return
            done = await self.step(sid, work[start:start + self.batch])
            last = self._last
            self._publish(attrs.evolve(last, memories_remaining=max(0, last.memories_remaining - done),
                                       memories_done=self.done))
            await trio.sleep(self.pause)
        if self.led(sid):
            await self.step(sid)
            self._measure()

    async def step(self, sid: int, work: list[tuple[str, str, str]] | None = None) -> int:
        """One batch of shard ``sid``: new vectors of ``work`` (else of its next memories without
        one) as a ``revec`` record, or the switch when none is missing (``reembed``). Returns how
        many memories it re-embedded."""
        shards = self.shards
        shard = shards.shard(sid)
        target, dim = shards.embedder, shards.dim
        if shard.embedder == target and shard.dim == dim:
            return 0
        if work is None:
            work = pending(shard, target, dim, self.batch)
        now = self.service.wall_clock()
        if not work:
            await self.service.commit_records(sid, [(sid, "reembed", {"e": target, "d": dim})], now)
            self.log.info("shard_reembedded", shard=sid, embedder=target)
            return 0
        return await self._revec(sid, work)

    async def _revec(self, sid: int, work: list[tuple[str, str, str]]) -> int:
        """New vectors of ``work`` ((agent, id, content) each) by the node's embedder, logged as one
        ``revec`` record (staged, or installed when the shard is in the node's space already)."""
        texts = [content for _agent, _mid, content in work]
        embedder = self.service.embedder
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        vectors: np.ndarray = await self.service.offload.run(embedder.embed, texts, size=size)
        entries = [[agent, mid, content_hash(content), vectors[n].astype(np.float32).tobytes()]
                   for n, (agent, mid, content) in enumerate(work)]
        body = {"e": self.shards.embedder, "d": self.shards.dim, "vs": entries}
        await self.service.commit_records(sid, [(sid, "revec", body)], self.service.wall_clock())
        self.done += len(entries)
        self.metrics.reembed_memories.inc(len(entries))
        return len(entries)
