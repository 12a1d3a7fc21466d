"""``python -m dakera_actors``: one node, configured by the environment.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a bad configuration (also a DAKERA_EMBEDDER
other than the cluster's: the node refuses to join), 1 for a crash,
3 when recovery refuses damaged data (WAL damage that valid records follow, a gap between a
snapshot and the log): a restart cannot help, an operator must look, so a supervisor can stop
retrying on 3 (systemd: ``RestartPreventExitStatus=3``) and page someone instead.
A first SIGTERM/SIGINT stops gracefully (finish in-flight requests, then exit); a second one
during that stops at once.
"""

from __future__ import annotations

import os
import signal
import sys

import trio

from . import log
from .config import Config, ConfigError
from .node import DataDirLocked, EmbedderRefused, open_node
from .storage.objects import ObjectStoreUnusable
from .store.engine import load_embedder
from .wal.log import WalRecoveryError
from .wal.statefile import StorageError

EXIT_DAMAGED_DATA = 3


async def serve(config: Config) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config) as node:
            async with trio.open_nursery() as watcher:
                async def on_signals() -> None:
                    count = 0
                    async for signum in signals:
                        count += 1
                        node.log.info("signal_received", signal=signal.Signals(signum).name,
                                      action="stop" if count == 1 else "stop_now")
                        if count == 1:
                            node.request_stop()
                        else:
                            raise SystemExit(0)

                watcher.start_soon(on_signals)
                await node.stop_requested.wait()
                watcher.cancel_scope.cancel()
    if node.refused is not None:
        raise EmbedderRefused(node.refused)


def main(argv: list[str] | None = None) -> int:
    try:
        config = Config.from_env(os.environ)
        load_embedder(config.embedder)  # before anything is written or logged (shared with the node)
    except ConfigError as exc:
        print(f"dakera_actors: configuration error: {exc}", file=sys.stderr)
        return 2
    log.configure(config.log_level, config.log_format)
    try:
        trio.run(serve, config)
    except (Exception, BaseExceptionGroup) as exc:
        known = _startup_failure(exc)
        if known is None:
            raise  # a bug: let Python print the whole traceback, exit code 1
        code, message = known
        print(f"dakera_actors: {message}", file=sys.stderr)
        return code
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _startup_failure(exc: BaseException) -> tuple[int, str] | None:
    """Exit code and one-line message for failures an operator can fix; None for bugs."""
    for leaf in _leaves(exc):
        if isinstance(leaf, (DataDirLocked, EmbedderRefused)):
            return 2, str(leaf)
        if isinstance(leaf, ConfigError):  # found while starting (a Redis URL that cannot be used)
            return 2, f"configuration error: {leaf}"
        if isinstance(leaf, WalRecoveryError):
            return EXIT_DAMAGED_DATA, (f"cannot start: {leaf}. Restore the data dir from a good copy, or set "
                                       f"DAKERA_WAL_RECOVERY=truncate to start anyway without the unreadable "
                                       f"records (logged; their bytes stay beside the WAL)")
        if isinstance(leaf, ObjectStoreUnusable):
            return 2, f"cannot start: {leaf}"
        if isinstance(leaf, StorageError):
            return 1, f"cannot start: {leaf}"
        if isinstance(leaf, OSError):
            return 1, f"cannot start: {leaf}"
    return None


if __name__ == "__main__":
    sys.exit(main())
