"""The generation rule's Redis scripts (Lua) and their keys, arguments and answers (pure: no I/O).

Each script is the Lua twin of a function of :mod:`.generation` (the tests run both on the
same inputs). Times inside Redis are integer milliseconds of its own clock (``TIME``); the
conversions below round every bound the safe way: a ``not_after`` down, a lease down.

Keys (one hash tag per shard, so a shard's keys share a Redis Cluster slot)::

    dk:{<cluster>:<shard>}:g                      the shard's generation (a hash)
    dk:{<cluster>:<shard>}:e:<agent>:<request>    one cached answer: "<inc>:<gen>:<msgpack>" (a TTL)

``<agent>`` and ``<request>`` are xxhash64 hex digests of the agent id and of the normalized
request, so an agent's entries can be found (``clear``) without its id in a glob. An entry names
the generation it was computed at in its value (the pure model's :data:`~.generation.Entry`): a
fill under a newer generation replaces it, and a read tells a missing entry (``miss``) from one
that is there but not of the trusted current generation (``stale``).
"""

from __future__ import annotations

import math
from typing import Any

import xxhash

from .generation import Advanced, Clock, Lookup, Refused, Renewed

ADVANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[4]) then return {'late'} end
local h = redis.call('HMGET', KEYS[1], 'inc', 'gen', 'term')
local foreign = false
if h[1] and ARGV[6] ~= '' and h[3] >= ARGV[6] then
  local u = redis.call('HGET', KEYS[1], 'until')
  foreign = now > tonumber(u) + tonumber(ARGV[7])
end
if h[1] and h[3] > ARGV[1] and not foreign then return {'fenced', h[3]} end
local inc, gen
if foreign then
  inc = ARGV[5]
  gen = math.max(tonumber(h[2]), tonumber(ARGV[2])) + 1
elseif not h[1] then
  inc = ARGV[5]
  gen = tonumber(ARGV[2]) + 1
else
  inc = h[1]
  gen = math.max(tonumber(h[2]), tonumber(ARGV[2])) + 1
end
redis.call('HSET', KEYS[1], 'inc', inc, 'gen', string.format('%d', gen), 'term', ARGV[1],
           'until', string.format('%d', now + tonumber(ARGV[3])))
return {'ok', inc, string.format('%d', gen), string.format('%d', now)}
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[5]) then return {'late'} end
local h = redis.call('HMGET', KEYS[1], 'inc', 'gen', 'term')
if h[1] and h[3] > ARGV[1] then return {'fenced', h[3]} end
if not h[1] or h[1] ~= ARGV[2] or h[2] ~= ARGV[3] or h[3] ~= ARGV[1] then return {'moved'} end
redis.call('HSET', KEYS[1], 'until', string.format('%d', now + tonumber(ARGV[4])))
return {'ok', string.format('%d', now)}
"""

READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', ARGV[1] .. ARGV[2])
if not v then return {'miss'} end
local h = redis.call('HMGET', KEYS[1], 'inc', 'gen', 'until')
if not h[1] or now > tonumber(h[3]) then return {'stale'} end
local head = h[1] .. ':' .. h[2] .. ':'
if string.sub(v, 1, #head) ~= head then return {'stale'} end
return {'hit', string.sub(v, #head + 1)}
"""

FILL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[8]) then return 0 end
local h = redis.call('HMGET', KEYS[1], 'inc', 'gen', 'term', 'until')
if not h[1] or now > tonumber(h[4]) then return 0 end
if h[1] ~= ARGV[3] or h[2] ~= ARGV[4] or h[3] ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1] .. ARGV[5], h[1] .. ':' .. h[2] .. ':' .. ARGV[6], 'EX', tonumber(ARGV[7]))
return 1
"""

TIME_NOW = """
local t = redis.call('TIME')
return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
"""


def shard_tag(cluster: str, shard: int) -> str:
    return f"dk:{{{cluster}:{shard}}}:"


def gen_key(cluster: str, shard: int) -> str:
    return shard_tag(cluster, shard) + "g"


def entry_prefix(cluster: str, shard: int) -> str:
    return shard_tag(cluster, shard) + "e:"


def digest(agent: str, request: bytes) -> str:
    """The entry's name after ``<inc>:<gen>:``: the agent's digest, then the request's."""
    return f"{xxhash.xxh64_hexdigest(agent.encode())}:{xxhash.xxh64_hexdigest(request)}"


def agent_pattern(cluster: str, agent: str | None) -> str:
    """A SCAN pattern for every cached answer of ``agent`` (every answer: None)."""
    tail = f"{xxhash.xxh64_hexdigest(agent.encode())}:*" if agent is not None else "*"
    return f"dk:{{{cluster}:*}}:e:{tail}"


def ms_floor(seconds: float) -> int:
    return math.floor(seconds * 1000)


def term_text(term: int) -> str:
    """A term as Redis keeps it: 20 digits, so Lua compares terms as strings (shard map epochs
    pass 2^53, where its numbers stop being exact)."""
    return f"{term:020d}"


def advance_args(term: int, last_gen: int, lease: float, not_after: float, new_inc: int,
                 foreign_from: int = 0, quiet: float = 0.0) -> list[Any]:
    return [term_text(term), last_gen, ms_floor(lease), ms_floor(not_after), new_inc,
            term_text(foreign_from) if foreign_from else "", math.ceil(quiet * 1000)]


def renew_args(term: int, inc: int, gen: int, lease: float, not_after: float) -> list[Any]:
    return [term_text(term), inc, gen, ms_floor(lease), ms_floor(not_after)]


def fill_args(cluster: str, shard: int, term: int, inc: int, gen: int, name: str, value: bytes, ttl: int,
              not_after: float) -> list[Any]:
    return [entry_prefix(cluster, shard), term_text(term), inc, gen, name, value, ttl, ms_floor(not_after)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_advance(answer: Any) -> Advanced | Refused:
    kind = _text(answer[0])
    if kind == "ok":
        return Advanced(int(_text(answer[1])), int(_text(answer[2])), int(_text(answer[3])) / 1000)
    if kind == "fenced":
        return Refused("fenced", int(_text(answer[1])))
    if kind == "late":
        return Refused("late")
    raise ValueError(f"unexpected advance answer {answer!r}")


def parse_renew(answer: Any) -> Renewed | Refused:
    kind = _text(answer[0])
    if kind == "ok":
        return Renewed(int(_text(answer[1])) / 1000)
    if kind == "fenced":
        return Refused("fenced", int(_text(answer[1])))
    if kind in ("late", "moved"):
        return Refused(kind)  # type: ignore[arg-type]
    raise ValueError(f"unexpected renew answer {answer!r}")


def parse_read(answer: Any) -> tuple[Lookup, bytes | None]:
    kind = _text(answer[0])
    if kind == "hit":
        return "hit", bytes(answer[1])
    if kind == "miss":
        return "miss", None
    if kind == "stale":
        return "stale", None
    raise ValueError(f"unexpected read answer {answer!r}")


def parse_time(answer: Any) -> Clock:
    return Clock(int(_text(answer)) / 1000)
