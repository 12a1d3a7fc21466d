"""The L1.5 cache as the rest of the node uses it: the router asks it before forwarding a read and
fills it after serving one as the shard's primary; the store tells it of every write it applies
and waits for it before acknowledging (:mod:`.generation` says why that is enough).

What is cached: ``get`` (a memory by id), ``recall`` and ``search`` answers, keyed by the agent
and the normalized request (operation, memory id, query string and body with sorted keys, the
``consistency`` choice left out: a cached answer is a primary's), stored as msgpack under the
shard's current generation, at most ``max_entry`` bytes, for ``ttl`` seconds or until the first
memory in it expires, whichever is sooner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import msgpack
import trio

from . import scripts as s
from .errors import CacheUnavailable
from .generation import FillTicket
from .primary import Backend, Generations, read

CACHED_OPS = frozenset({"get", "recall", "search"})
MAX_ENTRY_BYTES = 256 * 1024
FILLED_MEMORY = 100_000  # answers remembered as filled (their keys only)


@attrs.define
class CacheCounters:
    hits: int = 0
    misses: int = 0  # no entry
    stale: int = 0  # an entry that could not be trusted (another generation, or trust over)
    errors: int = 0  # Redis failed or did not answer in time, or an entry that did not decode
    fills: int = 0
    generation_waits: int = 0


class NodeCache:
    def __init__(self, backend: Backend, generations: Generations, *, cluster: str, ttl: int, timeout: float,
                 max_entry: int = MAX_ENTRY_BYTES, wall_clock: Callable[[], float] = time.time,
                 roles: Callable[[], Mapping[int, int]] = dict, on_result: Callable[[str], None] | None = None,
                 nursery: trio.Nursery | None = None) -> None:
        self.backend = backend
        self.generations = generations
        self.cluster = cluster
        self.ttl = ttl
        self.timeout = timeout
        self.max_entry = max_entry
        self.wall_clock = wall_clock
        self.counters = CacheCounters()
        self.nursery = nursery
        #: answers this node filled lately, by (shard, incarnation, generation, name): not again
        self._filled: dict[tuple[int, int, int, str], None] = {}
        #: shard -> term of every shard this node is primary of, as the store serves them now
        self.roles = roles
        self._on_result = on_result or (lambda result: None)

    # -- reads -----------------------------------------------------------------------------
    @staticmethod
    def name(op: str, agent: str, body: Any, args: Mapping[str, str], memory_id: str) -> str:
        query = {k: v for k, v in sorted(args.items()) if k != "consistency"}
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "consistency"}
        request = json.dumps([op, memory_id, query, body], sort_keys=True, separators=(",", ":"), default=str)
        return s.digest(agent, request.encode())

    async def lookup(self, shard: int, name: str) -> Any | None:
        """The cached answer (None: not answered from the cache; counted by why, see
        :class:`CacheCounters`)."""
        kind, raw = await read(self.backend, cluster=self.cluster, shard=shard, name=name, timeout=self.timeout)
        payload = None
        if raw is not None:
            try:
                payload = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            except Exception:  # a damaged entry is not an answer
                kind = "error"
        if kind == "hit":
            self.counters.hits += 1
        elif kind == "stale":
            self.counters.stale += 1
        elif kind == "error":
            self.counters.errors += 1
        else:
            self.counters.misses += 1
        self._on_result(kind)
        return payload if kind == "hit" else None

    def ticket(self, shard: int) -> FillTicket | None:
        return self.generations.ticket(shard)

    async def computed(self, shard: int, name: Callable[[], str], compute: Callable[[], Awaitable[Any]]) -> Any:
        """``compute()``'s answer, filled into the cache when this node leads the shard: the
        ticket is taken *before* computing, so a write applied while the answer is computed
        (a recall awaiting its embedding, say) voids the fill instead of caching an answer older
        than the write."""
        ticket = self.ticket(shard)
        payload = await compute()
        if ticket is not None:
            self.fill_soon(ticket, name(), payload)
        return payload

    def fill_soon(self, ticket: FillTicket, name: str, payload: Any) -> None:
        """Fill in the background (the answer is not held up by Redis), once per answer and
        generation: an owner asked the same thing again has already stored it."""
        if self.nursery is None:
            return
        key = (ticket.shard, ticket.inc, ticket.gen, name)
        if key in self._filled:
            return
        self._filled[key] = None
        if len(self._filled) > FILLED_MEMORY:
            self._filled.pop(next(iter(self._filled)))
        self.nursery.start_soon(self.fill, ticket, name, payload)

    async def fill(self, ticket: FillTicket, name: str, payload: Any) -> bool:
        ttl = self._ttl(payload)
        if ttl <= 0:
            return False
        value = msgpack.packb(payload, use_bin_type=True)
        if len(value) > self.max_entry:
            return False
        stored = await self.generations.fill(ticket, name, value, ttl)
        if stored:
            self.counters.fills += 1
        return stored

    def _ttl(self, payload: Any) -> int:
        """The cache's TTL, cut short by the first expiry among the answer's memories."""
        ttl = float(self.ttl)
        now = self.wall_clock()
        for expires in _expiries(payload):
            ttl = min(ttl, expires - now)
        return int(ttl)

    @property
    def healthy(self) -> bool:
        """Whether Redis answers, as the backend's own health check last found."""
        return self.backend.connected

    # -- admin -------------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        """``GET /v1/admin/cache/stats`` in the field names of the official SDKs: Redis's figures
        (keys, memory, evictions; zeros while it does not answer) and this node's lookups: ``hits``,
        and ``misses`` = every lookup not answered from the cache (no entry, ``stale`` or ``errors``)."""
        c = self.counters
        missed = c.misses + c.stale + c.errors
        looked = c.hits + missed
        figures = {"entries": 0, "memory_bytes": 0, "evictions": 0}
        reachable = True
        try:
            with trio.fail_after(max(self.timeout * 20, 1.0)):
                figures = {"entries": await self.backend.dbsize(), "memory_bytes": await self.backend.info_memory(),
                           "evictions": await self.backend.evicted_keys()}
        except (CacheUnavailable, trio.TooSlowError):
            reachable = False
        return {"enabled": True, "cache_type": "redis", "healthy": reachable, "entries": figures["entries"],
                "total_entries": figures["entries"], "size_bytes": figures["memory_bytes"],
                "memory_bytes": figures["memory_bytes"], "evictions": figures["evictions"], "hits": c.hits,
                "misses": missed, "hit_rate": round(c.hits / looked, 4) if looked else 0.0, "stale": c.stale,
                "errors": c.errors,
                "fills": c.fills, "generation_waits": self.generations.waits}

    async def clear(self, namespace: str | None) -> int:
        """Drop the cached answers of one agent (``namespace``) or of every agent; the
        generations stay (clearing is always safe: a cache only ever misses more)."""
        try:
            with trio.fail_after(max(self.timeout * 200, 10.0)):
                return int(await self.backend.delete_matching(s.agent_pattern(self.cluster, namespace)))
        except (CacheUnavailable, trio.TooSlowError):
            raise CacheUnavailable("Redis did not answer: nothing was cleared", reason="timeout") from None

    # -- writes (the store's fence) --------------------------------------------------------
    def applied(self, shard: int) -> int | None:
        # a primary may serve its first write before the roles follower saw it take the shard
        # over: start the shard's generation now (it holds the write until it advances)
        term = self.roles().get(shard)
        if term is not None:
            self.generations.lead(shard, term)
        return self.generations.applied(shard)

    async def settle(self, shard: int, version: int | None) -> None:
        await self.generations.settle(shard, version)


def _expiries(value: Any) -> list[float]:
    """Every ``expires_at`` in an answer, however deep (a memory, or a recall's scored memories)."""
    found: list[float] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            expires = item.get("expires_at")
            if isinstance(expires, (int, float)) and not isinstance(expires, bool):
                found.append(float(expires))
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return found
