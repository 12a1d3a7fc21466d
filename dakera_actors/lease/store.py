"""Where the lease keeps what must survive a restart: tokens and the committed voters.

One small msgpack file, replaced atomically (tmp, fsync, rename, fsync the directory), so a
crash leaves either the old or the new state, never a torn one. A file that does not decode is
a refusal to start, not a reset: forgetting a token could let this node grant it twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from ..wal.statefile import StateFile, StorageError
from .core import ClusterConfig, LeaseState

FILE_NAME = "lease.msgpack"


class LeaseStateCorrupt(StorageError):
    """The lease state file exists but cannot be read, or holds a token no election can have
    produced: the node must not guess its tokens (a startup error naming the file)."""


def encode(state: LeaseState) -> bytes:
    config = state.config
    return msgpack.packb({"v": 1, "highest": state.highest_token, "leader": state.leader_token,
                          "proposed": state.proposed_token,
                          "voters": list(config.voters) if config else None,
                          "config_version": config.version if config else 0}, use_bin_type=True)


def decode(raw: bytes) -> LeaseState:
    try:
        d: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        config = ClusterConfig(tuple(d["voters"]), int(d["config_version"])) if d["voters"] else None
        state = LeaseState(int(d["highest"]), int(d["leader"]), int(d["proposed"]), config)
    except Exception as exc:
        raise LeaseStateCorrupt(f"lease state does not decode ({type(exc).__name__})") from None
    try:
        state.check()
    except ValueError as exc:
        raise LeaseStateCorrupt(f"{FILE_NAME}: {exc} (written by a node that accepted a forged token?)") from None
    return state


class FileLeaseStore:
    """The lease state in ``directory`` (or on a SimDisk): see :mod:`..wal.statefile`."""

    def __init__(self, directory: Path | None, disk: Any = None) -> None:
        self.file = StateFile(FILE_NAME, directory, disk)
        self.blocking = self.file.blocking

    def load(self) -> LeaseState:
        raw = self.file.read()
        return LeaseState() if raw is None else decode(raw)

    def save(self, state: LeaseState) -> None:
        self.file.write(encode(state))
