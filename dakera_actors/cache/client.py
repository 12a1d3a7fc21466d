"""A Trio-facing Redis client for the L1.5 cache, over ``redis.asyncio`` through the node's one
Trio-asyncio bridge (:mod:`dakera_actors.runtime.aio`).

Every call is bounded by ``timeout`` (DAKERA_REDIS_TIMEOUT_MS) and fails with one exception,
:class:`CacheUnavailable`, never a redis-py one: a caller catches that and falls back (forwards the
read, computes the answer itself). A background task pings Redis and publishes whether it answers
(:attr:`RedisClient.healthy`): every ``interval`` seconds while it does, and, after a failed ping or
a call that timed out or lost its connection, again at once and then with backoff (doubling,
jittered, up to ``backoff_max``) until it answers again. The flag is the ping's verdict, not a
promise: a call may still fail while it reads True, and callers must handle :class:`CacheUnavailable`
regardless.

Nothing else in the package imports ``redis`` (an import-linter contract).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..config import ConfigError, redis_url_problem
from ..log import EventLogger, get_logger
from ..runtime import Published
from ..runtime.aio import open_asyncio_loop, run_aio
from .errors import CacheUnavailable

T = TypeVar("T")

HEALTH_INTERVAL = 1.0  # seconds between pings while Redis answers
BACKOFF_MIN = 0.05  # the first retry after a failure; doubles up to BACKOFF_MAX
BACKOFF_MAX = 5.0
SCAN_PAGE = 500  # keys asked of one SCAN step (and unlinked at once) by delete_matching
MAX_CONNECTIONS = 64
#: redis-py's own socket timeouts are a backstop only: the Trio bound around every call comes first
SOCKET_BACKSTOP = 1.0


def describe_url(url: str) -> str:
    """Where a Redis URL points, for logs: scheme, host, port and db; never the user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def script_sha(script: str) -> str:
    """The SHA1 Redis names ``script`` by (what SCRIPT LOAD answers and EVALSHA takes)."""
    return hashlib.sha1(script.encode()).hexdigest()


class RedisClient:
    """Built by :func:`open_redis`; valid inside its block."""

    def __init__(self, redis: Redis, *, url: str, timeout: float, log: EventLogger,
                 on_connected: Callable[[bool], None] | None = None, interval: float = HEALTH_INTERVAL,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
                 rng: random.Random | None = None) -> None:
        self._redis = redis
        self.target = describe_url(url)
        self.timeout = timeout
        self.log = log
        self._on_connected = on_connected
        self.interval = interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        #: whether the last ping answered within the bound (False until the first one does)
        self.healthy: Published[bool] = Published(False)
        self._trouble = trio.Event()
        self._probed = False
        self.first_verdict = trio.Event()  # set by the first ping's outcome, either way
        self._loaded: set[str] = set()  # shas this client has loaded with SCRIPT LOAD
        #: counts for tests and stats: scripts loaded, EVALSHAs that met NOSCRIPT (EVAL instead)
        self.script_loads = 0
        self.noscript_fallbacks = 0

    # -- the bound and the one error -------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], *, quiet: bool = False) -> T:
        """Run ``fn`` (an asyncio coroutine function over the redis client) within the bound; any
        failure is a :class:`CacheUnavailable`. A timeout or a lost connection also wakes the
        health task, which pings at once (``quiet``: the health task's own ping)."""
        try:
            with trio.fail_after(self.timeout):
                return await run_aio(fn)
        except trio.TooSlowError:
            problem, reason = f"no answer within {self.timeout * 1000:g} ms", "timeout"
        except ResponseError as exc:
            # Redis is there and said no: not a reason to think it is down
            raise CacheUnavailable(f"redis {what}: {exc}", reason="error") from None
        except (RedisError, OSError) as exc:  # ConnectionError, TimeoutError, ssl.SSLError, refused ...
            problem, reason = f"{type(exc).__name__}: {exc}", "unreachable"
        if not quiet:
            self._trouble.set()
        raise CacheUnavailable(f"redis {what} at {self.target}: {problem}", reason=reason)

    # -- commands --------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call("PING", self._redis.ping)

    async def get(self, key: str) -> bytes | None:
        value = await self._call("GET", lambda: self._redis.get(key))
        assert value is None or isinstance(value, bytes)  # the pool never decodes responses
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """SET ``key`` to ``value``, expiring after ``ttl`` seconds (millisecond precision)."""
        px = max(1, round(ttl * 1000))
        await self._call("SET", lambda: self._redis.set(key, value, px=px))

    async def evalsha_or_eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the Lua ``script`` on ``keys`` and ``args``. Loaded once with SCRIPT LOAD, then run
        by its SHA; a server that no longer knows it (restarted, SCRIPT FLUSH, failed over to a
        replica that never saw it) answers NOSCRIPT and the script is sent whole with EVAL, which
        also caches it there again. One bound covers the whole exchange."""
        sha = script_sha(script)
        load = sha not in self._loaded

        async def run() -> Any:
            if load:
                loaded = await self._redis.script_load(script)
                self.script_loads += 1
                self._loaded.add(str(loaded.decode() if isinstance(loaded, bytes) else loaded))
            try:
                return await self._redis.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                self.noscript_fallbacks += 1
                return await self._redis.eval(script, len(keys), *keys, *args)

        return await self._call("EVALSHA", run)

    async def delete_matching(self, pattern: str) -> int:
        """UNLINK every key matching the glob ``pattern``, a SCAN page at a time (each page within
        the bound, not the whole sweep); the number of keys removed. Keys written meanwhile may
        survive: SCAN promises only what existed throughout."""
        cursor = 0
        removed = 0
        while True:
            cursor, gone = await self._call("SCAN/UNLINK", self._sweep_step(cursor, pattern))
            removed += gone
            if cursor == 0:
                return removed

    def _sweep_step(self, cursor: int, pattern: str) -> Callable[[], Awaitable[tuple[int, int]]]:
        async def step() -> tuple[int, int]:
            after, keys = await self._redis.scan(cursor=cursor, match=pattern, count=SCAN_PAGE)
            gone = int(await self._redis.unlink(*keys)) if keys else 0
            return int(after), gone

        return step

    async def dbsize(self) -> int:
        return int(await self._call("DBSIZE", self._redis.dbsize))

    async def info_memory(self) -> int:
        """``used_memory`` of INFO memory: the bytes Redis holds (everything, not just our keys)."""
        info = await self._call("INFO", lambda: self._redis.info("memory"))
        return int(info.get("used_memory", 0))

    async def evicted_keys(self) -> int:
        """``evicted_keys`` of INFO stats: keys Redis dropped under maxmemory since it started."""
        info = await self._call("INFO", lambda: self._redis.info("stats"))
        return int(info.get("evicted_keys", 0))

    async def time(self) -> float:
        """Redis's clock (TIME), in seconds since the epoch."""
        seconds, micros = await self._call("TIME", self._redis.time)
        return int(seconds) + int(micros) / 1_000_000

    # -- health ----------------------------------------------------------------------------
    def _publish(self, up: bool, error: str = "") -> None:
        first = not self._probed
        self._probed = True
        self.first_verdict.set()
        if up == self.healthy.value and not first:
            return
        if up:
            self.log.info("redis_connected", target=self.target)
        else:
            self.log.warning("redis_unavailable", target=self.target, error=error,
                             hint="the node answers without the L1.5 cache and keeps retrying")
        if up != self.healthy.value:
            self.healthy.set(up)
        if self._on_connected is not None:
            self._on_connected(up)

    async def probe(self) -> bool:
        """Ping once and publish the verdict."""
        try:
            await self._call("PING", self._redis.ping, quiet=True)
        except CacheUnavailable as exc:
            self._publish(False, str(exc))
            return False
        self._publish(True)
        return True

    async def watch(self) -> None:
        """The health task: ping every ``interval`` while Redis answers (or at once when a call
        failed for want of it); while it does not, retry with jittered exponential backoff."""
        delay = self.backoff_min
        while True:
            self._trouble = trio.Event()
            if await self.probe():
                delay = self.backoff_min
                with trio.move_on_after(self.interval):
                    await self._trouble.wait()
            else:
                await trio.sleep(delay * (0.5 + self._rng.random() / 2))
                delay = min(delay * 2, self.backoff_max)


@asynccontextmanager
async def open_redis(url: str, timeout_ms: int, *, log: EventLogger | None = None,
                     on_connected: Callable[[bool], None] | None = None,
                     max_connections: int = MAX_CONNECTIONS, interval: float = HEALTH_INTERVAL,
                     backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX) -> AsyncIterator[RedisClient]:
    """A :class:`RedisClient` for ``url`` (redis://, rediss:// or unix://, with a password if any)
    and its pool, closed when the block ends, on the node's asyncio loop (opened here unless one
    is). Pings once before yielding (within the bound) and then keeps watching in the background:
    Redis down at start is not an error here, only ``healthy`` False and a ``redis_unavailable``
    warning. A URL redis-py cannot use raises :class:`ConfigError` for DAKERA_REDIS_URL."""
    problem = redis_url_problem(url)
    if problem is not None:
        raise ConfigError("DAKERA_REDIS_URL", problem)
    timeout = timeout_ms / 1000
    backstop = max(SOCKET_BACKSTOP, 2 * timeout)
    try:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=backstop, socket_timeout=backstop,
            socket_connect_timeout=backstop, retry=Retry(NoBackoff(), 0), health_check_interval=0)
    except (ValueError, TypeError) as exc:
        raise ConfigError("DAKERA_REDIS_URL", f"not usable by redis-py ({exc})") from None
    log = log or get_logger("dakera_actors.cache")
    async with open_asyncio_loop():
        redis = Redis(connection_pool=pool)
        client = RedisClient(redis, url=url, timeout=timeout, log=log, on_connected=on_connected,
                             interval=interval, backoff_min=backoff_min, backoff_max=backoff_max)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.watch)
                try:
                    # the first verdict before the node serves (a healthy Redis is used from the start)
                    await client.first_verdict.wait()
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if client.healthy.value and client._on_connected is not None:
                client._on_connected(False)
            with trio.move_on_after(max(1.0, timeout)) as cleanup:
                cleanup.shield = True
                try:
                    await run_aio(lambda: redis.aclose(close_connection_pool=True))
                except (RedisError, OSError):
                    pass  # closing: a connection that fails to close is gone anyway
