"""The cache client's fault handling against a scripted server on a real loopback socket: a server
that drops every connection, answers with errors, never answers, answers garbage, answers more
than it was asked, or sends a reply too large to be one. Whatever happens, a call ends within the
bound with CacheUnavailable (never a socket or protocol exception), a connection that saw anything
odd is never lent again, and the health flag follows the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from dakera_actors.cache.client import CacheUnavailable, RedisClient, open_redis
from dakera_actors.cache.resp import MAX_BULK, ReplyParser, encode_command

#: a real loopback socket and a bound on the wall clock: run with the real-process tests
pytestmark = pytest.mark.real

#: the client's bound here: a hang must end by it, and a healthy answer must come within it even
#: beside another test on each core (at 50 ms a healthy SET once missed it in CI)
TIMEOUT_MS = 250
SLACK = 1.0  # a call that fails ends within the bound plus this (a hang would never end)

Behaviour = Callable[[list[bytes]], Awaitable[bytes | None]]


class Scripted:
    """A TCP server that reads RESP commands and answers each with what ``behaviour`` returns
    (None: hang up). ``behaviour`` may be swapped at any time; ``connections`` counts accepts."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = self.redis_like
        self.connections = 0
        self.store: dict[bytes, bytes] = {}
        self.port = 0

    async def redis_like(self, command: list[bytes]) -> bytes | None:
        name = command[0].upper()
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"SET":
            self.store[command[1]] = command[2]
            return b"+OK\r\n"
        if name == b"GET":
            value = self.store.get(command[1])
            return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        return b"-ERR unknown command\r\n"

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        parser = _CommandParser()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                parser.feed(data)
                for command in parser.commands():
                    answer = await self.behaviour(command)
                    if answer is None:
                        return
                    await stream.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)


class _CommandParser:
    """Commands (arrays of bulk strings) out of a byte stream, reusing the reply parser (a command
    is an array reply of bulks)."""

    def __init__(self) -> None:
        self.parser = ReplyParser()

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def commands(self) -> list[list[bytes]]:
        out = []
        while True:
            got = self.parser.next()
            if not isinstance(got, list):
                return out
            out.append(got)


@asynccontextmanager
async def scripted_redis(flags: list[bool] | None = None) -> AsyncIterator[tuple[Scripted, RedisClient]]:
    server = Scripted()
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        server.port = listener.socket.getsockname()[1]
        async with open_redis(f"redis://127.0.0.1:{server.port}/0", TIMEOUT_MS, interval=0.05, backoff_min=0.01,
                              backoff_max=0.05, on_connected=None if flags is None else flags.append) as client:
            yield server, client
        nursery.cancel_scope.cancel()


async def _fails(call: Callable[[], Awaitable[Any]]) -> CacheUnavailable:
    started = trio.current_time()
    with pytest.raises(CacheUnavailable) as info:
        await call()
    assert trio.current_time() - started < TIMEOUT_MS / 1000 + SLACK
    return info.value


async def hang_up(_command: list[bytes]) -> bytes | None:
    return None


async def never(_command: list[bytes]) -> bytes | None:
    await trio.sleep_forever()
    raise AssertionError


async def test_a_server_that_hangs_up_fails_calls_and_health_follows_it_both_ways() -> None:
    flags: list[bool] = []
    async with scripted_redis(flags) as (server, redis):
        assert redis.healthy.value and flags == [True]
        await redis.set("k", b"v", ttl=10)
        normal = server.behaviour
        server.behaviour = hang_up
        failure = await _fails(lambda: redis.get("k"))
        assert failure.reason == "unreachable" and "closed the connection" in str(failure)
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)
        server.behaviour = normal
        with trio.fail_after(5):
            await redis.healthy.wait_for(bool)
        assert await redis.get("k") == b"v"
    assert flags == [True, False, True, False]  # and down once closed


async def test_an_error_answer_is_not_an_outage_and_keeps_the_connection() -> None:
    async with scripted_redis() as (server, redis):
        await redis.ping()
        opened = redis.pool.opened

        async def wrongtype(command: list[bytes]) -> bytes | None:
            if command[0] == b"GET":
                return b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
            return await server.redis_like(command)

        server.behaviour = wrongtype
        failure = await _fails(lambda: redis.get("list"))
        assert failure.reason == "error" and "WRONGTYPE" in str(failure)
        assert redis.healthy.value and not redis._trouble.is_set()  # nothing for the health task to look into
        await redis.ping()
        assert redis.pool.opened == opened  # a whole error reply leaves the connection usable


async def test_a_hung_server_is_cut_off_at_the_bound_and_its_connections_are_never_reused() -> None:
    async with scripted_redis() as (server, redis):
        server.behaviour = never
        for call in (lambda: redis.get("k"), lambda: redis.set("k", b"v", 1), redis.time, redis.dbsize,
                     redis.info_memory, lambda: redis.evalsha_or_eval("return 1", [], []),
                     lambda: redis.delete_matching("*")):
            assert (await _fails(call)).reason == "timeout"
        assert redis.pool._idle == []  # every timed-out connection was closed, not pooled
        with trio.fail_after(5):
            await redis.healthy.wait_for(lambda up: not up)


async def test_a_late_answer_is_never_read_as_the_next_commands() -> None:
    """The server answers GET after the caller gave up: the next call on a fresh connection gets
    its own answer, not the stale one."""
    async with scripted_redis() as (server, redis):
        await redis.set("k", b"old", ttl=10)

        async def slow_get(command: list[bytes]) -> bytes | None:
            if command[0] == b"GET":
                await trio.sleep(TIMEOUT_MS / 1000 * 4)  # well past the bound
            return await server.redis_like(command)

        server.behaviour = slow_get
        assert (await _fails(lambda: redis.get("k"))).reason == "timeout"
        server.behaviour = server.redis_like
        await redis.set("k", b"new", ttl=10)
        assert await redis.get("k") == b"new"


@pytest.mark.parametrize("garbage", [
    b"?what\r\n",  # an unknown type byte
    b"$abc\r\n",  # a length that is not a number
    b"$3\r\nabcXY",  # a bulk without its CRLF
    b":1_0\r\n",  # what int() would take but RESP does not
    b"*-5\r\n",  # a negative array length
    b"$%d\r\n" % (MAX_BULK + 1),  # a bulk larger than any reply can be
    b"+PONG\r\n+PONG\r\n",  # two answers to one command
])
async def test_garbage_from_the_server_is_an_outage_of_that_connection_not_a_crash(garbage: bytes) -> None:
    async with scripted_redis() as (server, redis):
        async def liar(command: list[bytes]) -> bytes | None:
            return garbage if command[0] == b"GET" else await server.redis_like(command)

        server.behaviour = liar
        failure = await _fails(lambda: redis.get("k"))
        assert failure.reason == "unreachable", failure
        assert redis.pool._idle == []
        server.behaviour = server.redis_like
        await redis.set("k", b"fine", ttl=10)
        assert await redis.get("k") == b"fine"


async def test_a_wrong_url_is_a_config_error_naming_the_variable() -> None:
    from dakera_actors.config import ConfigError

    for url in ("http://h:6379", "redis://", "redis://h:6379/x", "rediss://h/0?ssl_cert_reqs=maybe"):
        with pytest.raises(ConfigError, match="DAKERA_REDIS_URL"):
            async with open_redis(url, TIMEOUT_MS):
                pass


def test_commands_are_encoded_as_arrays_of_bulk_strings() -> None:
    assert encode_command("SET", "k", b"\x00v", "PX", 150) == \
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$2\r\nPX\r\n$3\r\n150\r\n"
