"""The cache's Redis client against a real ``redis-server``: commands, the script cache and its
NOSCRIPT fallback, passwords, TLS URLs, and the faults the L1.5 cache must survive (paused,
killed and restarted, flushed, unreachable from the start): every call fails within the bound
with CacheUnavailable, and the health flag follows the server. Conditions have deadlines; no
test sleeps a fixed time to let something happen."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from dakera_actors.cache.client import CacheUnavailable, RedisClient, describe_url, open_redis
from tests.cache.conftest import RedisServer, refused_port
from tests.waiting import eventually

pytestmark = pytest.mark.real

TIMEOUT_MS = 50
SLACK = 0.25  # seconds a bounded call may overrun its bound on a loaded CI machine
ECHO = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"


@asynccontextmanager
async def client(url: str, timeout_ms: int = TIMEOUT_MS, **kwargs: Any) -> AsyncIterator[RedisClient]:
    # a fast watch (0.1 s between pings, backoff capped at 0.2 s) keeps the fault tests short
    async with open_redis(url, timeout_ms, interval=0.1, backoff_max=0.2, **kwargs) as opened:
        yield opened


async def bounded_failure(call: Any, timeout_ms: int = TIMEOUT_MS) -> CacheUnavailable:
    """Run ``call()``, which must fail with CacheUnavailable within the bound (plus slack)."""
    started = trio.current_time()
    with pytest.raises(CacheUnavailable) as info:
        await call()
    assert trio.current_time() - started < timeout_ms / 1000 + SLACK
    return info.value


async def test_get_set_ttl_and_the_figures(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis:
        assert redis.healthy.value  # the first ping came before the block
        assert await redis.get("missing") is None
        await redis.set("k", b"\x00value\xff", ttl=30)
        assert await redis.get("k") == b"\x00value\xff"
        assert 29_000 < redis_server.sync().pttl("k") <= 30_000
        await redis.set("short", b"x", ttl=0.15)
        assert 0 < redis_server.sync().pttl("short") <= 150
        await eventually(lambda: redis_server.sync().get("short") is None, timeout=5)
        assert await redis.get("short") is None
        assert await redis.dbsize() == 1
        assert await redis.info_memory() > 100_000  # used_memory: Redis's whole footprint
        assert await redis.evicted_keys() == 0
        await redis.ping()


async def test_time_is_the_servers_clock(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis:
        seconds = await redis.time()
        assert abs(seconds - time.time()) < 1.0  # one machine: one clock


async def test_scripts_load_once_and_fall_back_to_eval_after_a_script_flush(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis:
        assert await redis.evalsha_or_eval(ECHO, ["counter"], ["a"]) == [b"counter", b"a", 1]
        assert (redis.script_loads, redis.noscript_fallbacks) == (1, 0)
        assert await redis.evalsha_or_eval(ECHO, ["counter"], [7]) == [b"counter", b"7", 2]
        assert (redis.script_loads, redis.noscript_fallbacks) == (1, 0)  # by SHA, not loaded again
        redis_server.sync().script_flush()
        assert await redis.evalsha_or_eval(ECHO, ["counter"], ["b"]) == [b"counter", b"b", 3]
        assert (redis.script_loads, redis.noscript_fallbacks) == (1, 1)  # NOSCRIPT: sent whole once
        assert await redis.evalsha_or_eval(ECHO, ["counter"], ["c"]) == [b"counter", b"c", 4]
        assert (redis.script_loads, redis.noscript_fallbacks) == (1, 1)  # EVAL cached it again
        redis_server.flushall()  # FLUSHALL keeps scripts; the counter starts over
        assert await redis.evalsha_or_eval(ECHO, ["counter"], ["d"]) == [b"counter", b"d", 1]


async def test_a_failing_script_is_an_error_not_an_outage(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis:
        failure = await bounded_failure(lambda: redis.evalsha_or_eval("return redis.error_reply('boom')", [], []))
        assert failure.reason == "error" and "boom" in str(failure)
        assert redis.healthy.value
        assert await redis.evalsha_or_eval("return 1", [], []) == 1


async def test_delete_matching_unlinks_page_by_page_and_counts(redis_server: RedisServer) -> None:
    sync = redis_server.sync()
    sync.mset({f"dakera:agent-1:{i}": b"v" for i in range(1234)})
    sync.mset({f"dakera:agent-2:{i}": b"v" for i in range(10)})
    async with client(redis_server.url) as redis:
        assert await redis.delete_matching("dakera:agent-1:*") == 1234
        assert await redis.delete_matching("dakera:agent-1:*") == 0
        assert await redis.dbsize() == 10
        assert await redis.delete_matching("dakera:*") == 10


async def test_a_password_in_the_url_is_used_over_tcp_and_unix_and_a_wrong_one_fails_without_a_redis_error(
        redis_with_password: RedisServer) -> None:
    server = redis_with_password
    async with client(server.url) as redis:  # the password percent-encoded (@ : / # in it)
        assert redis.healthy.value
        await redis.set("k", b"v", ttl=10)
        assert await redis.get("k") == b"v"
        assert "p@ss" not in redis.target and "127.0.0.1" in redis.target
    unix = f"unix://:{quote(server.password or '', safe='')}@{server.socket_path}?db=1"
    async with client(unix) as redis:
        assert redis.healthy.value and redis.target == f"unix://{server.socket_path}"
        await redis.set("k", b"on db 1", ttl=10)
        assert await redis.get("k") == b"on db 1"
    for url in (f"redis://127.0.0.1:{server.port}/0", f"redis://:wrong@127.0.0.1:{server.port}/0"):
        async with client(url) as redis:
            assert not redis.healthy.value
            failure = await bounded_failure(lambda r=redis: r.get("k"))
            assert failure.reason in ("unreachable", "error")


async def test_rediss_urls_are_read_and_a_plain_server_is_a_failed_tls_handshake(redis_server: RedisServer,
                                                                                  tmp_path: Path) -> None:
    url = f"rediss://:pw@127.0.0.1:{redis_server.port}/0?ssl_cert_reqs=none"
    async with client(url, timeout_ms=200) as redis:
        assert redis.pool.target.tls is not None
        assert redis.target == f"rediss://127.0.0.1:{redis_server.port}/0"
        assert not redis.healthy.value
        failure = await bounded_failure(lambda: redis.get("k"), timeout_ms=200)
        assert failure.reason in ("timeout", "unreachable")


async def test_a_tls_server_is_used_over_rediss_and_its_certificate_is_checked(redis_with_tls: RedisServer) -> None:
    server = redis_with_tls
    assert server.cert_path is not None
    trusted = f"{server.url}?ssl_ca_certs={server.cert_path}"
    for n, url in enumerate((trusted, f"{server.url}?ssl_cert_reqs=none")):
        async with client(url, timeout_ms=500) as redis:
            assert redis.healthy.value, url
            await redis.set("k", b"over tls", ttl=10)
            assert await redis.get("k") == b"over tls"
            assert await redis.evalsha_or_eval(ECHO, [f"c{n}"], ["t"]) == [f"c{n}".encode(), b"t", 1]
    # the system's CAs do not know a self-signed certificate: refused, never used unchecked
    async with client(server.url, timeout_ms=500) as redis:
        assert not redis.healthy.value
        failure = await bounded_failure(lambda: redis.get("k"), timeout_ms=500)
        assert failure.reason == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(failure)


async def test_a_paused_server_times_every_call_out_within_the_bound(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis:
        await redis.set("k", b"v", ttl=30)
        redis_server.pause()
        for call in (lambda: redis.get("k"), lambda: redis.set("late", b"w", ttl=30), redis.ping, redis.time,
                     lambda: redis.evalsha_or_eval(ECHO, ["c"], [1]), lambda: redis.delete_matching("*")):
            failure = await bounded_failure(call)
            assert failure.reason == "timeout", failure
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)
        redis_server.resume()
        with trio.fail_after(5):
            await redis.healthy.wait_for(bool)
        # connections cut by the timeouts were replaced, not reused: no answer meant for a
        # cancelled command is read as another's
        assert await redis.get("k") == b"v"
        assert await redis.get("absent") is None
        await redis.ping()
        assert await redis.evalsha_or_eval(ECHO, ["n"], ["z"]) == [b"n", b"z", 1]


async def test_a_write_that_timed_out_may_still_land_later(redis_server: RedisServer) -> None:
    """CacheUnavailable is no promise that nothing happened: a command already sent when the
    server stalled runs once it resumes (what the cache's protocol must tolerate)."""
    async with client(redis_server.url) as redis:
        await redis.ping()  # a pooled connection, past its handshake
        redis_server.pause()
        assert (await bounded_failure(lambda: redis.set("late", b"applied", ttl=30))).reason == "timeout"
        redis_server.resume()
        await eventually(lambda: redis_server.sync().get("late") == b"applied", timeout=5)


async def test_health_goes_down_when_killed_and_up_after_a_restart_on_the_same_port(
        redis_server: RedisServer) -> None:
    flags: list[bool] = []
    async with client(redis_server.url, on_connected=flags.append) as redis:
        await redis.set("k", b"v", ttl=30)
        assert await redis.evalsha_or_eval(ECHO, ["c"], ["x"]) == [b"c", b"x", 1]
        redis_server.kill()
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)
        assert (await bounded_failure(lambda: redis.get("k"))).reason == "unreachable"
        redis_server.start()
        with trio.fail_after(5):
            await redis.healthy.wait_for(bool)
        assert await redis.get("k") is None  # a restarted server holds nothing
        assert await redis.evalsha_or_eval(ECHO, ["c"], ["y"]) == [b"c", b"y", 1]
        assert redis.noscript_fallbacks == 1  # the restarted server did not know the script
    assert flags[:3] == [True, False, True] and flags[-1] is False  # and 0 once closed


async def test_unreachable_at_start_is_a_warning_then_retried_until_it_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path)  # not started: its port refuses
    with caplog.at_level(logging.INFO, logger="dakera_actors.cache"):
        async with client(server.url) as redis:
            assert not redis.healthy.value
            [warning] = [r for r in caplog.records if r.getMessage() == "redis_unavailable"]
            assert warning.levelno == logging.WARNING
            assert "Connect" in warning.error or "refused" in str(warning.error).lower()  # type: ignore[attr-defined]
            assert (await bounded_failure(lambda: redis.get("k"))).reason == "unreachable"
            server.start()
            try:
                with trio.fail_after(5):
                    await redis.healthy.wait_for(bool)
                assert [r.getMessage() for r in caplog.records].count("redis_connected") == 1
                await redis.set("k", b"v", ttl=5)
                assert await redis.get("k") == b"v"
            finally:
                server.stop()


async def test_maxmemory_eviction_is_counted(redis_server: RedisServer) -> None:
    sync = redis_server.sync()
    async with client(redis_server.url) as redis:
        used = await redis.info_memory()
        sync.config_set("maxmemory-policy", "allkeys-lru")
        sync.config_set("maxmemory", used + 200_000)
        for i in range(400):
            await redis.set(f"big:{i}", b"x" * 2000, ttl=60)
        assert await redis.evicted_keys() > 0
        assert await redis.dbsize() < 400


def test_logs_never_carry_the_password() -> None:
    assert describe_url("redis://user:secret@h:6380/2") == "redis://h:6380/2"
    assert describe_url("rediss://:secret@[::1]/0") == "rediss://[::1]:6379/0"
    assert describe_url("unix://:secret@/run/redis.sock?db=1") == "unix:///run/redis.sock"


async def test_nothing_listening_fails_fast(tmp_path: Path) -> None:
    async with client(f"redis://127.0.0.1:{refused_port()}/0") as redis:
        assert (await bounded_failure(redis.ping)).reason == "unreachable"
