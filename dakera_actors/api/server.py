"""Serving the facade over HTTP: Hypercorn's Trio worker, with a cap on open connections.

Hypercorn (0.18) has no connection limit: its Config offers a listen ``backlog``, keep-alive and
read timeouts, ``h2_max_concurrent_streams`` and ``max_requests`` (worker recycling), nothing
that bounds open connections. So the node runs Hypercorn's per-connection server
(``TCPServer``) itself, as Hypercorn's ``worker_serve`` does for plain sockets, and counts
connections as each one's task starts: at most ``max_connections`` are served; one accepted
beyond that is answered ``503`` with ``Retry-After`` at once and closed, so idle or slow
clients cannot take every file descriptor and task while /health stays answerable once they go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from ..log import get_logger

_log = get_logger("dakera_actors.http")

OVER_LIMIT = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
              b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
OVER_LIMIT_BODY = (b'{"error":"node has too many open connections (DAKERA_MAX_CONNECTIONS); retry shortly",'
                   b'"code":"SERVICE_UNAVAILABLE"}')


class ConnectionGauge:
    """Open HTTP connections against their limit; ``on_refuse`` hears of each one turned away."""

    def __init__(self, limit: int, on_refuse: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.open = 0
        self.on_refuse = on_refuse  # e.g. a metric: what is refused here never reaches the app


async def _refuse(stream: trio.SocketStream) -> None:
    with trio.move_on_after(1):  # a client that does not read its answer is dropped anyway
        try:
            await stream.send_all(OVER_LIMIT % (len(OVER_LIMIT_BODY), OVER_LIMIT_BODY))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def serve(app: Any, config: HyperConfig, gauge: ConnectionGauge, *,
                shutdown_trigger: Callable[[], Awaitable[Any]],
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Hypercorn's ``hypercorn.trio.serve`` for plain (non-TLS) binds, with ``gauge.limit``
    connections at most; ``task_status`` gets the bound addresses."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append("http://" + repr_socket_addr(sock.family, sock.getsockname()))
            server = partial(TCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy()))

            async def handle(stream: trio.SocketStream) -> None:
                # counted when its task starts: one task at a time runs this check, so at most
                # ``limit`` connections are ever served together
                if gauge.open >= gauge.limit:
                    gauge.on_refuse()
                    _log.debug("http_connection_refused", open=gauge.open, limit=gauge.limit)
                    await _refuse(stream)
                    return
                gauge.open += 1
                try:
                    await server(stream)  # type: ignore[arg-type]  # plain streams too, as in worker_serve
                finally:
                    gauge.open -= 1

            task_status.started(binds)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery))
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other = error.split(ShutdownError)
                if other is not None:
                    raise other from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
