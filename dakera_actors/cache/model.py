"""An in-memory Redis that runs the generation scripts by their pure models (MockClock-safe):
the cache's backend in simulations, with faults to inject (a pause queues calls until it ends;
a drop loses them; flush and eviction clear keys). Not a Redis: only what the cache sends."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable
from typing import Any

import trio

from . import generation as g
from . import scripts as s
from .errors import CacheUnavailable


class ModelRedis:
    def __init__(self, clock: Callable[[], float] = trio.current_time, offset: float = 1_000.0,
                 latency: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> None:
        self.clock = clock
        #: each call waits a random time in this range before it runs and again before it answers
        self.latency = latency
        self.rng = random.Random(seed)
        self.offset = offset  # its clock minus the node's
        self.states: dict[str, g.GenState] = {}
        self.entries: dict[str, dict[str, g.Entry]] = {}  # generation key -> entry name -> entry
        #: (generation key, entry name) -> when the entry expires (its fill's TTL, on this clock)
        self.expiry: dict[tuple[str, str], float] = {}
        self.fill_ttls: list[int] = []  # the TTL of every fill stored, in order
        self.paused_until = 0.0
        self.down = False
        self.calls = 0
        self.evictions = 0
        self._incs = itertools.count(1)

    def now(self) -> float:
        return self.clock() + self.offset

    @property
    def connected(self) -> bool:
        """Up and not paused (what a ping would find)."""
        return not self.down and self.clock() >= self.paused_until

    def flush(self) -> None:
        self.states.clear()
        self.entries.clear()
        self.expiry.clear()

    def evict(self, key: str) -> None:
        if self.states.pop(key, None) is not None:
            self.evictions += 1

    async def evalsha_or_eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self.down:
            raise CacheUnavailable("down", reason="unreachable")
        if self.latency[1] > 0:
            await trio.sleep(self.rng.uniform(*self.latency))
        wait = self.paused_until - self.clock()
        if wait > 0:
            await trio.sleep(wait)  # queued behind the pause: runs when it ends, as Redis would
        self.calls += 1
        answer = self._run(script, keys, args)
        if self.latency[1] > 0:
            await trio.sleep(self.rng.uniform(*self.latency))
        return answer

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        now_ms = math.floor(self.now() * 1000)
        now = now_ms / 1000
        key = keys[0] if keys else ""
        state = self.states.get(key)
        if script == s.TIME_NOW:
            return str(now_ms)
        if script == s.ADVANCE:
            term, last_gen, lease_ms, not_after_ms, new_inc = (int(a) for a in args[:5])  # terms: digit strings
            foreign_from = int(args[5]) if args[5] != "" else 0  # see scripts.advance_args
            quiet = int(args[6]) / 1000
            new, res = g.advance(state, now=now, term=term, last_gen=last_gen, lease=lease_ms / 1000,
                                 not_after=not_after_ms / 1000, new_inc=new_inc, foreign_from=foreign_from,
                                 quiet=quiet)
            self._put(key, new)
            if isinstance(res, g.Refused):
                return [res.why, str(res.term)] if res.why == "fenced" else [res.why]
            return ["ok", str(res.inc), str(res.gen), str(now_ms)]
        if script == s.RENEW:
            term, inc, gen, lease_ms, not_after_ms = (int(a) for a in args)
            new, renewed = g.renew(state, now=now, term=term, inc=inc, gen=gen, lease=lease_ms / 1000,
                                   not_after=not_after_ms / 1000)
            self._put(key, new)
            if isinstance(renewed, g.Refused):
                return [renewed.why, str(renewed.term)] if renewed.why == "fenced" else [renewed.why]
            return ["ok", str(now_ms)]
        if script == s.READ:
            name = str(args[1])
            entries = self.entries.setdefault(key, {})
            if self.expiry.get((key, name), math.inf) <= self.now():  # its TTL ran out: gone
                entries.pop(name, None)
                self.expiry.pop((key, name), None)
            kind, value = g.read(state, entries, now=now, digest=name)
            return [kind, value] if value is not None else [kind]
        if script == s.FILL:
            _prefix, term, inc, gen, name, value, ttl, not_after_ms = args
            stored = g.fill(state, self.entries.setdefault(key, {}), now=now, term=int(term), inc=int(inc),
                            gen=int(gen), digest=str(name), value=bytes(value), not_after=int(not_after_ms) / 1000)
            if stored:
                self.expiry[(key, str(name))] = self.now() + int(ttl)
                self.fill_ttls.append(int(ttl))
            return 1 if stored else 0
        raise ValueError("a script the model does not know")

    async def dbsize(self) -> int:
        self._check()
        return len(self.states) + sum(len(e) for e in self.entries.values())

    async def info_memory(self) -> int:
        self._check()
        return sum(len(v[2]) for e in self.entries.values() for v in e.values())

    async def evicted_keys(self) -> int:
        self._check()
        return self.evictions

    async def delete_matching(self, pattern: str) -> int:
        """Entries whose Redis name matches ``pattern`` (Redis glob: only ``*`` is used here)."""
        self._check()
        regex = re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")
        gone = 0
        for key, entries in self.entries.items():
            prefix = key[: -len("g")] + "e:"  # the shard's entry prefix beside its generation key
            for name in list(entries):
                if regex.match(f"{prefix}{name}"):
                    del entries[name]
                    gone += 1
        return gone

    def _check(self) -> None:
        if self.down:
            raise CacheUnavailable("down", reason="unreachable")

    def _put(self, key: str, state: g.GenState | None) -> None:
        if state is not None:
            self.states[key] = state

    def new_inc(self) -> int:
        return next(self._incs)
