"""The primary's generation loop over the in-memory Redis model, under MockClock: writes settle by
an advance when Redis answers, by waiting out the hold (about a lease) when it is paused or down;
answers filled by a clean primary are read through any node until the next write settles."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.cache import generation as g
from dakera_actors.cache import scripts as s
from dakera_actors.cache.model import ModelRedis
from dakera_actors.cache.primary import Generations, read

C = g.GenerationConfig(lease=1.0, timeout=0.05, renew_every=0.3, authority=2.0)


async def started(nursery: trio.Nursery, redis: ModelRedis, authorized: list[bool] | None = None,
                  waits: list[int] | None = None) -> Generations:
    auth = authorized if authorized is not None else [True]
    gens = Generations(redis, cluster="c1", config=C, authorized=lambda: auth[0], nursery=nursery,
                       on_wait=lambda: waits.append(1) if waits is not None else None)
    gens.lead(3, term=1)
    with trio.fail_after(5):
        while gens.shards[3].core.inc is None:  # the first advance (after reading Redis's clock)
            await gens.shards[3].changed.wait()
    return gens


async def test_a_write_settles_by_an_advance_and_a_filled_answer_is_read_until_the_next_write(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis)
        ticket = gens.ticket(3)
        assert ticket is not None
        assert await gens.fill(ticket, "q", b"answer v0", 60)
        assert await read(redis, cluster="c1", shard=3, name="q", timeout=C.timeout) == ("hit", b"answer v0")
        before = trio.current_time()
        version = gens.applied(3)
        assert gens.ticket(3) is None  # dirty: nothing is filled until the write's advance
        await gens.settle(3, version)
        assert trio.current_time() - before < 0.1  # one round trip, not a lease
        assert redis.states[s.gen_key("c1", 3)].gen == ticket.gen + 1
        assert await read(redis, cluster="c1", shard=3, name="q", timeout=C.timeout) == ("stale", None)
        await trio.sleep(30)  # an idle primary keeps its generation trusted by renewing it
        assert redis.states[s.gen_key("c1", 3)].until > redis.now()
        nursery.cancel_scope.cancel()


async def test_with_redis_paused_or_down_a_write_waits_about_a_lease_and_reads_miss(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    waits: list[int] = []
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis, waits=waits)
        await trio.sleep(5)
        ticket = gens.ticket(3)
        assert ticket is not None and await gens.fill(ticket, "q", b"v0", 60)
        redis.paused_until = trio.current_time() + 60  # SIGSTOP: calls queue until it ends
        version = gens.applied(3)
        before = trio.current_time()
        await gens.settle(3, version)
        took = trio.current_time() - before
        assert C.lease * 0.5 < took < C.lease * 1.5 + C.timeout * 4, took  # the hold, not the pause
        assert waits == [1]
        assert await read(redis, cluster="c1", shard=3, name="q", timeout=C.timeout) == ("error", None)  # queued: a timeout
        # the queued calls run at the resume, past their not_after: they refuse, trust is not extended
        await trio.sleep(60)
        state = redis.states[s.gen_key("c1", 3)]
        assert state.gen > ticket.gen  # the advance after the pause covered the write
        redis.down = True
        version = gens.applied(3)
        before = trio.current_time()
        await gens.settle(3, version)
        assert trio.current_time() - before < C.lease * 1.5 + C.timeout * 4
        nursery.cancel_scope.cancel()


async def test_a_primary_without_the_clusters_authority_sends_nothing_and_fills_nothing(
        autojump_clock: trio.testing.MockClock) -> None:
    redis = ModelRedis()
    authorized = [True]
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis, authorized=authorized)
        await trio.sleep(3)
        authorized[0] = False
        calls = redis.calls
        await trio.sleep(10)
        assert redis.calls == calls  # no renewal: its trust runs out
        assert redis.states[s.gen_key("c1", 3)].until < redis.now()
        assert gens.ticket(3) is None
        nursery.cancel_scope.cancel()


async def test_an_answer_computed_while_a_write_lands_is_not_cached(autojump_clock: trio.testing.MockClock) -> None:
    """The ticket is taken before computing: a recall awaiting its embedding while a write is
    applied must not land in the cache (it may predate the write)."""
    from dakera_actors.cache.facade import NodeCache

    redis = ModelRedis()
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis)
        cache = NodeCache(redis, gens, cluster="c1", ttl=60, timeout=C.timeout, nursery=nursery)

        async def slow_answer_with_a_write_meanwhile() -> dict[str, str]:
            answer = {"content": "before the write"}
            await trio.sleep(0.01)
            version = gens.applied(3)  # a write lands while the answer is being computed
            await gens.settle(3, version)
            return answer

        got = await cache.computed(3, lambda: "q", slow_answer_with_a_write_meanwhile)
        assert got == {"content": "before the write"}
        await trio.sleep(1)  # the background fill, had it been let through
        assert await cache.lookup(3, "q") is None
        assert cache.counters.fills == 0

        async def quiet_answer() -> dict[str, str]:
            await trio.sleep(0.01)
            return {"content": "after the write"}

        await cache.computed(3, lambda: "q", quiet_answer)
        await trio.sleep(1)
        assert await cache.lookup(3, "q") == {"content": "after the write"}
        nursery.cancel_scope.cancel()


async def test_the_node_reports_redis_as_its_backend_finds_it(autojump_clock: trio.testing.MockClock) -> None:
    """``redis_healthy`` in the cluster status is the backend's own verdict: the model's fault
    switches here (the real client's ping in tests/cache/test_client_real.py)."""
    from dakera_actors.cache.facade import NodeCache

    redis = ModelRedis()
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis)
        cache = NodeCache(redis, gens, cluster="c", ttl=60, timeout=0.05)
        assert cache.healthy
        redis.paused_until = trio.current_time() + 1.0
        assert not cache.healthy
        await trio.sleep(1.0)
        assert cache.healthy
        redis.down = True
        assert not cache.healthy
        nursery.cancel_scope.cancel()


async def test_every_lookup_is_counted_by_its_outcome_hit_miss_stale_or_error(
        autojump_clock: trio.testing.MockClock) -> None:
    """``dakera_cache_requests_total{result}``: ``miss`` (no entry), ``hit``, ``stale`` (an entry
    there but not answered: its generation advanced, or its trust ran out) and ``error`` (Redis down
    or too slow, or an entry that does not decode), each under its own label, all four at 0 first."""
    from dakera_actors.cache.facade import NodeCache
    from dakera_actors.metrics import NodeMetrics

    metrics = NodeMetrics()
    requests = metrics.cache_requests

    def counts() -> dict[str, float]:
        return {r: metrics.sample("dakera_cache_requests_total", result=r) for r in ("hit", "miss", "stale", "error")}

    exposed = metrics.registry.collect()
    names = {(s.name, s.labels.get("result")) for m in exposed for s in m.samples}
    assert {("dakera_cache_requests_total", r) for r in ("hit", "miss", "stale", "error")} <= names  # pre-created
    redis = ModelRedis()
    async with trio.open_nursery() as nursery:
        gens = await started(nursery, redis)
        cache = NodeCache(redis, gens, cluster="c1", ttl=60, timeout=C.timeout,
                          on_result=lambda result: requests.labels(result).inc())
        assert await cache.lookup(3, "q") is None
        assert counts() == {"hit": 0, "miss": 1, "stale": 0, "error": 0}
        ticket = gens.ticket(3)
        assert ticket is not None and await cache.fill(ticket, "q", {"content": "v0"})
        assert await cache.lookup(3, "q") == {"content": "v0"}
        assert counts() == {"hit": 1, "miss": 1, "stale": 0, "error": 0}
        await gens.settle(3, gens.applied(3))  # a write advances the generation: the entry is behind
        assert await cache.lookup(3, "q") is None
        assert counts() == {"hit": 1, "miss": 1, "stale": 1, "error": 0}
        ticket = gens.ticket(3)
        assert ticket is not None and await cache.fill(ticket, "q", {"content": "v1"})
        assert await cache.lookup(3, "q") == {"content": "v1"}
        gens.drop(3)  # no primary renews the trust any more: the entry is there, not trusted
        await trio.sleep(C.lease * 2)
        assert await cache.lookup(3, "q") is None
        assert counts() == {"hit": 2, "miss": 1, "stale": 2, "error": 0}
        redis.paused_until = trio.current_time() + 10  # SIGSTOP: the lookup times out
        assert await cache.lookup(3, "q") is None
        redis.paused_until = 0.0
        redis.down = True  # refused
        assert await cache.lookup(3, "q") is None
        assert counts() == {"hit": 2, "miss": 1, "stale": 2, "error": 2}
        c = cache.counters
        assert (c.hits, c.misses, c.stale, c.errors) == (2, 1, 2, 2)
        stats = await cache.stats()
        assert (stats["hits"], stats["misses"], stats["stale"], stats["errors"]) == (2, 5, 2, 2)
        assert stats["hit_rate"] == round(2 / 7, 4)
        nursery.cancel_scope.cancel()


async def test_a_wiped_cluster_whose_terms_start_below_redis_s_is_cached_again(
        autojump_clock: trio.testing.MockClock) -> None:
    """A cluster wiped and started again under the same namespace (same gossip key, no shared
    archive) numbers its leaders' tokens, so its terms, from 1 again: Redis still holds the old
    cluster's higher term for every shard. Those terms cannot be of the new cluster (while it has
    a leader of token L, no map of a later token exists), so its primary takes the key over with a
    new incarnation instead of being fenced forever; an old entry is never answered."""
    from dakera_actors.cache.facade import NodeCache

    redis = ModelRedis()
    old_term = (40 << 32) | 3  # the old cluster's map epoch (token 40)
    async with trio.open_nursery() as nursery:
        old = Generations(redis, cluster="c1", config=C, authorized=lambda: True, nursery=nursery)
        old.lead(3, term=old_term)
        with trio.fail_after(5):
            while old.shards[3].core.inc is None:
                await old.shards[3].changed.wait()
        ticket = old.ticket(3)
        assert ticket is not None and await old.fill(ticket, "q", b"\xa3old", 60)
        old.drop(3)  # the old cluster is gone (wiped)
        await trio.sleep(5)

        new_term = (2 << 32) | 1  # the new cluster's leader has token 2
        new = Generations(redis, cluster="c1", config=C, authorized=lambda: True, nursery=nursery,
                          foreign_from=lambda: (2 + 1) << 32)
        new.lead(3, term=new_term)
        cache = NodeCache(redis, new, cluster="c1", ttl=60, timeout=C.timeout, nursery=nursery)
        with trio.fail_after(5):
            while new.shards[3].core.inc is None and not new.shards[3].core.fenced:
                await new.shards[3].changed.wait()
        core = new.shards[3].core
        assert not core.fenced and core.inc is not None and core.inc != ticket.inc
        assert redis.states[s.gen_key("c1", 3)].term == new_term
        assert await cache.lookup(3, "q") is None and cache.counters.stale == 1  # the old entry: never answered
        version = new.applied(3)
        before = trio.current_time()
        await new.settle(3, version)
        assert trio.current_time() - before < 0.1 and new.waits == 0  # advanced, not waited out
        fresh = new.ticket(3)
        assert fresh is not None and await cache.fill(fresh, "q", {"content": "new"})
        assert await cache.lookup(3, "q") == {"content": "new"}  # cached again
        nursery.cancel_scope.cancel()


async def test_a_higher_term_of_the_same_cluster_still_fences(autojump_clock: trio.testing.MockClock) -> None:
    """The takeover is only of terms the cluster's current leader token rules out: a newer term
    of this cluster (token at most the leader's) fences an older primary as before."""
    redis = ModelRedis()
    async with trio.open_nursery() as nursery:
        newer = Generations(redis, cluster="c1", config=C, authorized=lambda: True, nursery=nursery,
                            foreign_from=lambda: 8 << 32)
        newer.lead(3, term=(7 << 32) | 2)
        older = Generations(redis, cluster="c1", config=C, authorized=lambda: True, nursery=nursery,
                            foreign_from=lambda: 8 << 32)
        with trio.fail_after(5):
            while newer.shards[3].core.inc is None:
                await newer.shards[3].changed.wait()
        inc = newer.shards[3].core.inc
        older.lead(3, term=(7 << 32) | 1)
        with trio.fail_after(5):
            while not older.shards[3].core.fenced:
                await older.shards[3].changed.wait()
        assert older.ticket(3) is None and redis.states[s.gen_key("c1", 3)].term == (7 << 32) | 2
        await trio.sleep(3)
        assert redis.states[s.gen_key("c1", 3)].inc == newer.shards[3].core.inc == inc  # never taken over
        nursery.cancel_scope.cancel()
