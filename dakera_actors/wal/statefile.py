"""Small state files a node keeps beside its log: the lease's tokens, the installed shard map,
the maintenance flag.

Each is one file (mode 0600) replaced atomically (tmp, fsync, rename, fsync the directory), so a crash leaves
the old or the new content, never a torn one. On a SimDisk (tests) the same name lives in the
disk's ``files`` and survives simulated crashes; a StateFile made before a crash belongs to the
dead process and refuses every call after it (see :mod:`.memory`). What an unreadable file means is the caller's
decision (the lease refuses to start; a shard map is simply re-sent by the leader).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .log import replace_durably


class StorageError(RuntimeError):
    """The data dir is in a state the node must not guess its way out of (the node refuses to start)."""


class StateFile:
    def __init__(self, name: str, directory: Path | None, disk: Any = None) -> None:
        self.name, self.disk = name, disk
        self.path = Path(directory) / name if disk is None and directory is not None else None
        #: reading and writing block (a real file): call them through ``disk_call``
        self.blocking = disk is None
        self._incarnation = disk.incarnation if disk is not None else 0

    def read(self) -> bytes | None:
        if self.disk is not None:
            self.disk.check_alive(self._incarnation)
            raw: bytes | None = self.disk.files.get(self.name)
            return raw
        assert self.path is not None
        return self.path.read_bytes() if self.path.exists() else None

    def write(self, raw: bytes) -> None:
        if self.disk is not None:
            self.disk.check_alive(self._incarnation)
            self.disk.files[self.name] = raw
            return
        assert self.path is not None
        replace_durably(self.path, raw, tmp=self.path.with_suffix(".tmp"))
