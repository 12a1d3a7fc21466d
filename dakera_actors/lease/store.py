"""Where the lease keeps what must survive a restart: tokens and the committed voters.

One small msgpack file, replaced atomically (tmp, fsync, rename, fsync the directory), so a
crash leaves either the old or the new state, never a torn one. A file that does not decode is
a refusal to start, not a reset: forgetting a token could let this node grant it twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack

from ..wal.log import fsync_directory
from .core import ClusterConfig, LeaseState

FILE_NAME = "lease.msgpack"


class LeaseStateCorrupt(RuntimeError):
    """The lease state file exists but cannot be read: the node must not guess its tokens."""


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
        return LeaseState(int(d["highest"]), int(d["leader"]), int(d["proposed"]), config)
    except Exception as exc:
        raise LeaseStateCorrupt(f"lease state does not decode ({type(exc).__name__})") from None


class FileLeaseStore:
    blocking = True

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME

    def load(self) -> LeaseState:
        if not self.path.exists():
            return LeaseState()
        return decode(self.path.read_bytes())

    def save(self, state: LeaseState) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(encode(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)


class SimLeaseStore:
    """The same on a SimDisk: durable across simulated crashes, no threads."""

    blocking = False

    def __init__(self, disk: Any) -> None:
        self.disk = disk

    def load(self) -> LeaseState:
        raw = self.disk.files.get(FILE_NAME)
        return LeaseState() if raw is None else decode(raw)

    def save(self, state: LeaseState) -> None:
        self.disk.files[FILE_NAME] = encode(state)
