"""Connections to Redis on Trio's own sockets: a URL read the way Redis clients read it, one
connection (TCP, TLS or a unix socket; AUTH and SELECT on open), and a bounded pool.

Why not ``redis.asyncio`` through the trio-asyncio bridge: every call through the bridge costs
about 0.4 ms on this project's 2-core machines (bench/RESULTS.md, "L1.5 cache"), more than the
whole budget of a cache hit (a hit must stay within 1.1x of a local read, about 2 ms). The cache
needs a handful of commands, and RESP2 is small (:mod:`.resp`); a call here costs what the
loopback round trip does.

A connection serves one call at a time (the pool lends it out whole). A call that fails or is
cancelled part way (the caller's bound ran out) leaves the connection in an unknown state (a
reply may still be on its way): it is closed, never lent again, so no answer meant for one command
is ever read as another's. When a connection breaks, the idle ones are dropped too (a restarted
or failed-over server broke them all; finding out one call at a time would fail a call each).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import trio

from .resp import NEED_MORE, ReplyError, ReplyParser, encode_command

RECEIVE = 65536  # bytes asked of one receive


class ConnectionLost(Exception):
    """The server closed the connection, or answered what is not RESP, or refused the handshake
    (a wrong password, a database it does not have): no call can go through this connection."""


@attrs.frozen
class Target:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    scheme: str
    host: str = ""
    port: int = 6379
    path: str = ""  # the socket of a unix:// URL
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False)


def _tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """A client TLS context: the system's CAs and a hostname check by default (``ssl_cert_reqs``
    = required); ``ssl_ca_certs=<file>`` trusts that bundle; ``ssl_cert_reqs=none`` checks nothing
    (a self-signed test server), ``optional`` checks a certificate if one is sent."""
    reqs = query.get("ssl_cert_reqs", ["required"])[0].lower()
    if reqs not in ("none", "optional", "required"):
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, got {reqs!r}")
    cafile = query.get("ssl_ca_certs", [None])[0]
    context = ssl.create_default_context(cafile=cafile)
    if reqs == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif reqs == "optional":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def parse_url(url: str) -> Target:
    """The :class:`Target` of ``url`` (``ValueError`` naming what is wrong): redis://[[user]:password@]
    host[:port][/db], rediss:// the same over TLS, unix://[[user]:password@]/path[?db=n]; a
    ``password``/``username``/``db`` query value stands in for a missing one; the user and
    password are percent-decoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else query.get("username", [None])[0]
    password = unquote(parts.password) if parts.password is not None else query.get("password", [None])[0]
    db_text = query.get("db", [None])[0]
    if parts.scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("a unix:// URL needs the socket's path")
        return Target("unix", path=parts.path, db=int(db_text or 0), username=username or None,
                      password=password or None)
    if not parts.hostname:
        raise ValueError("needs a host")
    if db_text is None and parts.path.strip("/"):
        db_text = parts.path.strip("/")
    port = parts.port or 6379
    tls = _tls_context(query) if parts.scheme == "rediss" else None
    return Target(parts.scheme, host=parts.hostname, port=port, db=int(db_text or 0), username=username or None,
                  password=password or None, tls=tls)


class Connection:
    """One open connection; :meth:`call` and :meth:`pipeline` (one caller at a time)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = ReplyParser()

    @classmethod
    async def open(cls, target: Target) -> Connection:
        """Connect, shake hands (TLS), AUTH and SELECT as the target says."""
        stream: trio.abc.Stream
        if target.scheme == "unix":
            stream = await trio.open_unix_socket(target.path)
        else:
            stream = await trio.open_tcp_stream(target.host, target.port)
        try:
            if target.tls is not None:
                tls = trio.SSLStream(stream, target.tls, server_hostname=target.host, https_compatible=True)
                await tls.do_handshake()
                stream = tls
            conn = cls(stream)
            setup: list[tuple[Any, ...]] = []
            if target.password is not None:
                setup.append(("AUTH", target.username, target.password) if target.username
                             else ("AUTH", target.password))
            if target.db:
                setup.append(("SELECT", target.db))
            if setup:
                for reply in await conn.pipeline(setup):
                    if isinstance(reply, ReplyError):
                        raise ConnectionLost(f"the server refused the connection's setup: {reply}")
            return conn
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply; an error reply is raised (:class:`ReplyError`)."""
        [reply] = await self.pipeline([args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send every command at once and return their replies in order (error replies as
        :class:`ReplyError` values, not raised): one round trip for all of them."""
        await self.stream.send_all(b"".join(encode_command(*c) for c in commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self.parser.next()
            if reply is NEED_MORE:
                data = await self.stream.receive_some(RECEIVE)
                if not data:
                    raise ConnectionLost("the server closed the connection")
                self.parser.feed(data)
                continue
            replies.append(reply)
        if self.parser.pending:
            raise ConnectionLost(f"{self.parser.pending} bytes arrived that no command asked for")
        return replies

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class Pool:
    """At most ``max_connections`` connections to ``target``, opened on demand and kept while they
    work (see the module docstring)."""

    def __init__(self, target: Target, max_connections: int) -> None:
        self.target = target
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self.opened = 0  # connections opened over the pool's life (tests read it)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Lend one connection for one call: back to the pool if the call ended well, closed if
        it failed or was cancelled."""
        async with self._slots:
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = await Connection.open(self.target)
                self.opened += 1
            try:
                yield conn
            except ReplyError:
                self._idle.append(conn)  # an error reply is a whole reply: the connection is fine
                raise
            except BaseException as exc:
                await conn.aclose()
                if not isinstance(exc, (trio.Cancelled, KeyboardInterrupt)):
                    await self.drop_idle()
                raise
            self._idle.append(conn)

    async def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    async def aclose(self) -> None:
        await self.drop_idle()


__all__ = ["Connection", "ConnectionLost", "Pool", "Target", "parse_url"]
