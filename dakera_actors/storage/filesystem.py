"""Objects as files under a directory (meant as the cold tier's embedded default,
``DAKERA_STORAGE=filesystem``; the node does not open it yet).

A key ``a/b/c`` is the file ``<root>/a/b/c``. A put writes a temporary file in the same
directory, fsyncs it, then renames it into place (or, for ``if_absent``, hard-links it, which
fails atomically if the name exists) and fsyncs the directory: an object is either whole or
absent after a crash. Blocking calls run in a worker thread.
"""

from __future__ import annotations

import builtins
import errno
import os
import secrets
from pathlib import Path

import trio

from ..wal.log import fsync_path
from .objects import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    byte_range,
    check_key,
    check_prefix,
)

TMP_SUFFIX = ".tmp-put"


class FileObjectStore:
    conditional = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        await trio.to_thread.run_sync(self._put, path, bytes(data), if_absent)

    def _put(self, path: Path, data: bytes, if_absent: bool) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            self._make_dirs(path.parent)
            # 0600 from the start: an archived shard holds every memory of its shard
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ObjectExists(f"object {path.relative_to(self.root)} exists") from None
            else:
                os.replace(tmp, path)
            fsync_path(path.parent)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {path}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and any missing parents up to the root, each 0700 and durable (its
        parent fsynced), so an object written under it is found after a crash."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            if directory == self.root or directory.parent == directory:
                break
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir(mode=0o700)
            except FileExistsError:
                continue  # another put made it meanwhile
            fsync_path(new.parent)

    async def get(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        byte_range(b"", start, end)  # the range's own checks, before any I/O
        return await trio.to_thread.run_sync(self._get, path, start, end)

    def _get(self, path: Path, start: int | None, end: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                return f.read(-1 if end is None else max(0, end - (start or 0)))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {path.relative_to(self.root)}") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {path}: {exc}") from None

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        return await trio.to_thread.run_sync(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        found: builtins.list[ObjectInfo] = []
        # walk only the directory the prefix names whole ("shards/00003/" walks that shard alone)
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not start.is_dir():
            return found
        for directory, _dirs, files in os.walk(start):
            for name in files:
                if name.endswith(TMP_SUFFIX):
                    continue  # a put that has not finished (or never will: a crash mid-write)
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, path.stat().st_size))
        return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await trio.to_thread.run_sync(self._delete, path)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
            fsync_path(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return
            raise ObjectStoreError(f"cannot delete {path}: {exc}") from None
