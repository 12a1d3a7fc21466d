"""A Trio-facing Redis client for the L1.5 cache, on Trio's own sockets (:mod:`.connection`:
a small RESP2 client; why not ``redis.asyncio`` through the asyncio bridge is said there).

Every call is bounded by ``timeout`` (DAKERA_REDIS_TIMEOUT_MS) and fails with one exception,
:class:`CacheUnavailable`: a caller catches that and falls back (forwards the read, computes the
answer itself). A background task pings Redis and publishes whether it answers
(:attr:`RedisClient.healthy`): every ``interval`` seconds while it does, and, after a failed ping or
a call that timed out or lost its connection, again at once and then with backoff (doubling,
jittered, up to ``backoff_max``) until it answers again. The flag is the ping's verdict, not a
promise: a call may still fail while it reads True, and callers must handle :class:`CacheUnavailable`
regardless.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio

from ..config import ConfigError, redis_url_problem
from ..log import EventLogger, get_logger
from ..runtime import Published
from .connection import Connection, ConnectionLost, Pool, parse_url
from .errors import CacheUnavailable
from .resp import ProtocolError, ReplyError

T = TypeVar("T")

HEALTH_INTERVAL = 1.0  # seconds between pings while Redis answers
BACKOFF_MIN = 0.05  # the first retry after a failure; doubles up to BACKOFF_MAX
BACKOFF_MAX = 5.0
SCAN_PAGE = 500  # keys asked of one SCAN step (and unlinked at once) by delete_matching
MAX_CONNECTIONS = 64


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


def _describe(exc: BaseException) -> str:
    """An error and what caused it, for the log: trio wraps the error that broke a stream (a TLS
    verification failure, a reset) and groups the failures of its connection attempts (refused)."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None else text


def _info_field(info: Any, name: str) -> int:
    """One numeric field of an INFO reply (``name:value`` lines); 0 when absent."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.strip() or 0)
    return 0


class RedisClient:
    """Built by :func:`open_redis`; valid inside its block."""

    def __init__(self, pool: Pool, *, url: str, timeout: float, log: EventLogger,
                 on_connected: Callable[[bool], None] | None = None, interval: float = HEALTH_INTERVAL,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
                 rng: random.Random | None = None) -> None:
        self.pool = pool
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

    @property
    def connected(self) -> bool:
        return self.healthy.value

    # -- the bound and the one error -------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[Connection], Awaitable[T]], *, quiet: bool = False) -> T:
        """Run ``fn`` on a pooled connection within the bound; any failure is a
        :class:`CacheUnavailable`. A timeout or a lost connection also wakes the health task,
        which pings at once (``quiet``: the health task's own ping)."""
        try:
            with trio.fail_after(self.timeout):
                async with self.pool.connection() as conn:
                    return await fn(conn)
        except trio.TooSlowError:
            problem, reason = f"no answer within {self.timeout * 1000:g} ms", "timeout"
        except ReplyError as exc:
            # Redis is there and said no: not a reason to think it is down
            raise CacheUnavailable(f"redis {what}: {exc}", reason="error") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionLost,
                ProtocolError) as exc:  # refused, reset, TLS failure (ssl.SSLError is an OSError), ...
            problem, reason = _describe(exc), "unreachable"
        if not quiet:
            self._trouble.set()
        raise CacheUnavailable(f"redis {what} at {self.target}: {problem}", reason=reason)

    # -- commands --------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call("PING", lambda c: c.call("PING"))

    async def get(self, key: str) -> bytes | None:
        value = await self._call("GET", lambda c: c.call("GET", key))
        assert value is None or isinstance(value, bytes)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """SET ``key`` to ``value``, expiring after ``ttl`` seconds (millisecond precision)."""
        px = max(1, round(ttl * 1000))
        await self._call("SET", lambda c: c.call("SET", key, value, "PX", px))

    async def evalsha_or_eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the Lua ``script`` on ``keys`` and ``args``. Loaded once with SCRIPT LOAD, then run
        by its SHA; a server that no longer knows it (restarted, SCRIPT FLUSH, failed over to a
        replica that never saw it) answers NOSCRIPT and the script is sent whole with EVAL, which
        also caches it there again. One bound covers the whole exchange."""
        [reply] = await self.evalsha_many(script, [(keys, args)])
        if isinstance(reply, ReplyError):
            raise CacheUnavailable(f"redis EVALSHA: {reply}", reason="error")
        return reply

    async def evalsha_many(self, script: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run ``script`` once per (keys, args) of ``calls`` in one round trip (a pipeline: not a
        transaction, each runs atomically on its own); the replies in order, an error reply as a
        :class:`ReplyError` value in its place. NOSCRIPT is handled as by :meth:`evalsha_or_eval`."""
        sha = script_sha(script)
        load = sha not in self._loaded

        async def run(conn: Connection) -> list[Any]:
            commands: list[tuple[Any, ...]] = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
            if load:
                commands.insert(0, ("SCRIPT", "LOAD", script))
            replies = await conn.pipeline(commands)
            if load:
                loaded = replies.pop(0)
                if isinstance(loaded, ReplyError):
                    raise loaded
                self.script_loads += 1
                self._loaded.add(loaded.decode() if isinstance(loaded, bytes) else str(loaded))
            missing = [n for n, r in enumerate(replies) if isinstance(r, ReplyError) and r.kind == "NOSCRIPT"]
            if missing:
                self.noscript_fallbacks += 1
                again = await conn.pipeline([("EVAL", script, len(calls[n][0]), *calls[n][0], *calls[n][1])
                                             for n in missing])
                for n, reply in zip(missing, again, strict=True):
                    replies[n] = reply
            return replies

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

    def _sweep_step(self, cursor: int, pattern: str) -> Callable[[Connection], Awaitable[tuple[int, int]]]:
        async def step(conn: Connection) -> tuple[int, int]:
            after, keys = await conn.call("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_PAGE)
            gone = int(await conn.call("UNLINK", *keys)) if keys else 0
            return int(after), gone

        return step

    async def dbsize(self) -> int:
        return int(await self._call("DBSIZE", lambda c: c.call("DBSIZE")))

    async def info_memory(self) -> int:
        """``used_memory`` of INFO memory: the bytes Redis holds (everything, not just our keys)."""
        return _info_field(await self._call("INFO", lambda c: c.call("INFO", "memory")), "used_memory")

    async def evicted_keys(self) -> int:
        """``evicted_keys`` of INFO stats: keys Redis dropped under maxmemory since it started."""
        return _info_field(await self._call("INFO", lambda c: c.call("INFO", "stats")), "evicted_keys")

    async def time(self) -> float:
        """Redis's clock (TIME), in seconds since the epoch."""
        seconds, micros = await self._call("TIME", lambda c: c.call("TIME"))
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
            await self._call("PING", lambda c: c.call("PING"), quiet=True)
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
    and its pool, closed when the block ends. Pings once before yielding (within the bound) and
    then keeps watching in the background: Redis down at start is not an error here, only
    ``healthy`` False and a ``redis_unavailable`` warning. A URL that cannot be used raises
    :class:`ConfigError` for DAKERA_REDIS_URL."""
    problem = redis_url_problem(url)
    if problem is not None:
        raise ConfigError("DAKERA_REDIS_URL", problem)
    try:
        target = parse_url(url)
    except (ValueError, OSError) as exc:  # OSError: an ssl_ca_certs file that cannot be read
        raise ConfigError("DAKERA_REDIS_URL", f"not usable ({exc})") from None
    log = log or get_logger("dakera_actors.cache")
    pool = Pool(target, max_connections)
    client = RedisClient(pool, url=url, timeout=timeout_ms / 1000, log=log, on_connected=on_connected,
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
        with trio.CancelScope(shield=True):
            await pool.aclose()
