"""The generation scripts on a real redis-server (Debian's, the session's from conftest): each
branch of the pure model (:mod:`dakera_actors.cache.generation`) gives the same answer in Lua."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator

import pytest
import redis

from dakera_actors.cache import generation as g
from dakera_actors.cache import scripts as s

from .conftest import RedisServer

pytestmark = pytest.mark.real


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the session's real redis-server (see conftest), empty for each test."""
    client = redis_server.sync()
    yield client
    client.close()


def redis_now(r: redis.Redis) -> float:
    return s.parse_time(r.eval(s.TIME_NOW, 0)).redis_now


def advance(r: redis.Redis, key: str, *, term: int, last_gen: int = 0, lease: float = 5.0,
            not_after: float | None = None, new_inc: int = 7, foreign_from: int = 0,
            quiet: float = 0.0) -> g.Advanced | g.Refused:
    bound = redis_now(r) + 5 if not_after is None else not_after
    args = s.advance_args(term, last_gen, lease, bound, new_inc, foreign_from, quiet)
    return s.parse_advance(r.eval(s.ADVANCE, 1, key, *args))


def renew(r: redis.Redis, key: str, *, term: int, inc: int, gen: int, lease: float = 5.0,
          not_after: float | None = None) -> g.Renewed | g.Refused:
    bound = redis_now(r) + 5 if not_after is None else not_after
    return s.parse_renew(r.eval(s.RENEW, 1, key, *s.renew_args(term, inc, gen, lease, bound)))


def fill(r: redis.Redis, shard: int, *, term: int, inc: int, gen: int, value: bytes, not_after: float | None = None,
         name: str = "n") -> bool:
    bound = redis_now(r) + 5 if not_after is None else not_after
    args = s.fill_args("c1", shard, term, inc, gen, name, value, 60, bound)
    return bool(r.eval(s.FILL, 1, s.gen_key("c1", shard), *args))


def lookup(r: redis.Redis, shard: int, name: str = "n") -> tuple[str, bytes | None]:
    return s.parse_read(r.eval(s.READ, 1, s.gen_key("c1", shard), s.entry_prefix("c1", shard), name))


def read(r: redis.Redis, shard: int, name: str = "n") -> bytes | None:
    return lookup(r, shard, name)[1]


def test_on_a_real_server_advance_renew_fill_and_read_follow_the_model(r: redis.Redis) -> None:
    key = s.gen_key("c1", 1)
    first = advance(r, key, term=2, last_gen=4, new_inc=77)
    assert isinstance(first, g.Advanced) and (first.inc, first.gen) == (77, 5)
    assert abs(first.redis_now - redis_now(r)) < 1.0
    assert advance(r, key, term=1) == g.Refused("fenced", 2)
    assert advance(r, key, term=2, not_after=redis_now(r) - 1) == g.Refused("late")
    jumped = advance(r, key, term=2, last_gen=9)  # a primary that knew 9 (Redis restored older): 10
    assert isinstance(jumped, g.Advanced) and (jumped.inc, jumped.gen) == (77, 10)
    assert renew(r, key, term=2, inc=77, gen=9) == g.Refused("moved")
    assert renew(r, key, term=2, inc=78, gen=10) == g.Refused("moved")
    assert renew(r, key, term=1, inc=77, gen=10) == g.Refused("fenced", 2)
    assert renew(r, key, term=2, inc=77, gen=10, not_after=redis_now(r) - 1) == g.Refused("late")
    assert isinstance(renew(r, key, term=2, inc=77, gen=10), g.Renewed)
    assert renew(r, s.gen_key("c1", 99), term=2, inc=77, gen=10) == g.Refused("moved")  # no key at all
    # fills land only on the current generation of the same term, not late
    assert not fill(r, 1, term=2, inc=77, gen=9, value=b"old")
    assert not fill(r, 1, term=1, inc=77, gen=10, value=b"p1")
    assert not fill(r, 1, term=2, inc=77, gen=10, value=b"late", not_after=redis_now(r) - 1)
    assert lookup(r, 1) == ("miss", None)
    assert fill(r, 1, term=2, inc=77, gen=10, value=b"v")
    assert lookup(r, 1) == ("hit", b"v")
    assert lookup(r, 1, "other") == ("miss", None)
    assert advance(r, key, term=3, last_gen=0) == g.Advanced(77, 11, pytest.approx(redis_now(r), abs=1.0))
    assert lookup(r, 1) == ("stale", None)  # a new generation: the old answer is unreachable at once


def test_terms_past_two_to_the_53_still_fence(r: redis.Redis) -> None:
    key = s.gen_key("c1", 3)
    big = (1 << 60) + 5  # a shard map epoch: token << 32 | version
    assert isinstance(advance(r, key, term=big), g.Advanced)
    assert advance(r, key, term=big - 1) == g.Refused("fenced", big)  # equal as doubles, not as terms
    assert isinstance(renew(r, key, term=big, inc=7, gen=1), g.Renewed)


def test_on_a_real_server_reads_stop_at_the_trust_deadline_and_eviction_starts_a_new_incarnation(
        r: redis.Redis) -> None:
    key = s.gen_key("c1", 2)
    got = advance(r, key, term=1, lease=0.05, new_inc=5)
    assert isinstance(got, g.Advanced)
    assert fill(r, 2, term=1, inc=5, gen=1, value=b"v")
    deadline = got.redis_now + 0.05
    wait_until = time.monotonic() + 5
    while redis_now(r) <= deadline + 0.002:  # a condition on Redis's own clock, with a deadline
        assert time.monotonic() < wait_until
    assert lookup(r, 2) == ("stale", None)  # trust over: the entry is there but never answered
    r.delete(key)  # evicted (maxmemory) or flushed: the next advance starts a new incarnation
    assert lookup(r, 2) == ("stale", None)
    again = advance(r, key, term=1, last_gen=1, new_inc=6)
    assert isinstance(again, g.Advanced) and (again.inc, again.gen) == (6, 2)
    assert lookup(r, 2) == ("stale", None)  # the old entry (incarnation 5) is never reachable again


def test_entry_names_are_found_by_agent() -> None:
    name = s.digest("agent:with*glob?", b'{"q": 1}')
    pattern = s.agent_pattern("c1", "agent:with*glob?")
    assert fnmatch.fnmatchcase(s.entry_prefix("c1", 3) + name, pattern)
    assert not fnmatch.fnmatchcase(s.entry_prefix("c1", 3) + s.digest("other", b"x"), pattern)


def test_on_a_real_server_a_foreign_term_is_taken_over_and_a_higher_one_of_the_cluster_fences(
        r: redis.Redis) -> None:
    key = s.gen_key("c1", 4)
    old = (50 << 32) | 3
    got = advance(r, key, term=old, last_gen=8, new_inc=42, lease=0.05)
    assert isinstance(got, g.Advanced) and (got.inc, got.gen) == (42, 9)
    assert fill(r, 4, term=old, inc=42, gen=9, value=b"old")
    mine = (2 << 32) | 1
    assert advance(r, key, term=mine, foreign_from=3 << 32, quiet=30) == g.Refused("fenced", old)  # trusted lately
    wait_until = time.monotonic() + 5
    while redis_now(r) <= got.redis_now + 0.05 + 0.002:  # its trust over, on Redis's own clock
        assert time.monotonic() < wait_until
    assert advance(r, key, term=mine) == g.Refused("fenced", old)  # no bound: fenced, as before
    assert advance(r, key, term=mine, foreign_from=(50 << 32) | 4) == g.Refused("fenced", old)  # within the bound
    taken = advance(r, key, term=mine, new_inc=5, foreign_from=3 << 32)
    assert isinstance(taken, g.Advanced) and (taken.inc, taken.gen) == (5, 10)
    assert lookup(r, 4) == ("stale", None)  # the old cluster's answer is never given
    assert advance(r, key, term=mine - 1, foreign_from=3 << 32) == g.Refused("fenced", mine)
    assert isinstance(renew(r, key, term=mine, inc=5, gen=10), g.Renewed)
