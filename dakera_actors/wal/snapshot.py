"""Per-shard snapshots: the state of one shard as of one LSN, so the log before it can go.

A snapshot file ``shard-<shard:05>-<lsn:020>.snap`` is a 29-byte header and a body::

    b"DKSN" | version u8 (1) | shard u32 | lsn u64 | crc32c(body) u32 | len(body) u64 | body

all big-endian, where body = zlib(level 1) of the msgpack of the state. A snapshot is written to
``<name>.tmp``, fsynced, renamed into place and its directory fsynced, so a crash leaves either
the whole file or a ``.tmp`` that is never read (and is removed when the store is next opened).

Reading never trusts a file: one that is truncated, damaged or misnamed is skipped, logged, and
an older snapshot of the same shard is used instead.

Not thread-safe: one owner serialises every call.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack
from crc32c import crc32c

from dakera_actors.log import EventLogger, get_logger

from .log import DIR_MODE, fsync_path, replace_durably

SNAPSHOT_MAGIC: Final = b"DKSN"
SNAPSHOT_VERSION: Final = 1
SNAPSHOT_HEADER: Final = struct.Struct(">4sBIQIQ")  # magic, version, shard, lsn, crc32c, body length
TMP_SUFFIX: Final = ".tmp"
_NAME = re.compile(r"^shard-(\d+)-(\d+)\.snap$")
_MAX_SHARD: Final = 2**32 - 1
_MAX_LSN: Final = 2**64 - 1


class SnapshotError(ValueError):
    """A snapshot file that cannot be trusted (why is in the message)."""


@attrs.frozen(order=True)
class SnapshotFile:
    """A snapshot file as named on disk (not yet checked)."""

    shard: int
    lsn: int
    path: Path = attrs.field(order=False)


def snapshot_name(shard: int, lsn: int) -> str:
    return f"shard-{shard:05d}-{lsn:020d}.snap"


def _unpack(raw: bytes) -> Any:
    # strict_map_key=False: any map key the writer accepted must read back
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)


def pack_checked(shard: int, lsn: int, state: Any) -> bytes:
    """``state`` packed for a snapshot of ``shard`` at ``lsn``, decoded once to prove it reads back
    (an unreadable snapshot would otherwise be found only when needed); ValueError/TypeError if not."""
    if not (0 <= shard <= _MAX_SHARD and 0 <= lsn <= _MAX_LSN):
        raise ValueError(f"shard {shard} or lsn {lsn} out of range")
    raw: bytes = msgpack.packb(state, use_bin_type=True)
    try:
        _unpack(raw)
    except Exception as exc:
        raise ValueError(f"snapshot state would not read back ({type(exc).__name__}: {exc})") from None
    return raw


class SnapshotStore:
    """Snapshots of every shard of one node, in one directory."""

    blocking = True  # file I/O and fsync: callers on an event loop run it in a worker thread

    def __init__(self, directory: str | os.PathLike[str], *, log: EventLogger | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._log = log or get_logger("dakera_actors.wal")
        self._remove_temp_files()

    def write(self, shard: int, lsn: int, state: Any) -> Path:
        """Durably store ``state`` as shard ``shard`` at ``lsn``; returns the file written.

        Raises ``TypeError``/``ValueError`` for a state msgpack cannot carry or read back (the
        packed state is decoded once first: an unreadable snapshot would be found only when needed).
        """
        raw = pack_checked(shard, lsn, state)
        body = zlib.compress(raw, 1)  # level 1: most of the size win for a fraction of the CPU
        header = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, shard, lsn, crc32c(body), len(body))
        final = self.directory / snapshot_name(shard, lsn)
        # 0600 from the start: a snapshot holds every memory of its shard
        replace_durably(final, header, body, tmp=final.with_name(final.name + TMP_SUFFIX))
        self._log.info("snapshot_written", shard=shard, lsn=lsn, bytes=len(header) + len(body),
                       state_bytes=len(raw))
        return final

    def latest(self, shard: int) -> tuple[int, Any] | None:
        """``(lsn, state)`` of the newest valid snapshot of ``shard``, or None if there is none."""
        for snap in reversed(self.files(shard)):
            try:
                return snap.lsn, self._read(snap, decode=True)
            except SnapshotError as exc:
                self._report_invalid(snap, exc)
        return None

    def latest_lsn(self, shard: int) -> int | None:
        """The LSN of the newest snapshot of ``shard`` whose checksum holds (no decoding)."""
        for snap in reversed(self.files(shard)):
            try:
                self._read(snap, decode=False)
                return snap.lsn
            except SnapshotError as exc:
                self._report_invalid(snap, exc)
        return None

    def all_latest(self) -> dict[int, int]:
        """Shard to the LSN of its newest valid snapshot, for every shard that has one."""
        shards = sorted({snap.shard for snap in self.files()})
        found = {shard: self.latest_lsn(shard) for shard in shards}
        return {shard: lsn for shard, lsn in found.items() if lsn is not None}

    def oldest_lsn(self, shard: int) -> int | None:
        """The LSN of the oldest snapshot file of ``shard`` (checked or not), or None.

        Recovery falls back to older snapshots when newer ones are damaged, so the log must
        reach back to this one: it is the WAL floor for the shard, not the newest snapshot.
        """
        files = self.files(shard)
        return files[0].lsn if files else None

    def shards(self) -> set[int]:
        """Every shard with at least one snapshot file, valid or not."""
        return {snap.shard for snap in self.files()}

    def prune(self, shard: int, keep: int = 2) -> int:
        """Keep the newest ``keep`` valid snapshots of ``shard``; delete the rest. Returns how many.

        Invalid snapshots are deleted too, so a damaged newest file never counts towards ``keep``.
        """
        if keep < 1:
            raise ValueError("keep must be at least 1: pruning must never leave a shard without a snapshot")
        deleted = 0
        kept = 0
        for snap in reversed(self.files(shard)):
            if kept < keep:
                try:
                    self._read(snap, decode=False)
                    kept += 1
                    continue
                except SnapshotError as exc:
                    self._report_invalid(snap, exc)
            snap.path.unlink(missing_ok=True)
            deleted += 1
        if deleted:
            fsync_path(self.directory)
            self._log.info("snapshots_pruned", shard=shard, deleted=deleted, kept=kept)
        return deleted

    def files(self, shard: int | None = None) -> list[SnapshotFile]:
        """Snapshot files by name, oldest first (of one shard, or of all shards by shard then lsn)."""
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = _NAME.match(entry.name)
                if match and (shard is None or int(match[1]) == shard) and entry.is_file():
                    found.append(SnapshotFile(shard=int(match[1]), lsn=int(match[2]), path=Path(entry.path)))
        return sorted(found)

    def _read(self, snap: SnapshotFile, *, decode: bool) -> Any:
        """Check one file against its header; the decoded state when ``decode``, else None."""
        data = snap.path.read_bytes()
        if len(data) < SNAPSHOT_HEADER.size:
            raise SnapshotError(f"truncated header ({len(data)} bytes)")
        magic, version, shard, lsn, crc, length = SNAPSHOT_HEADER.unpack_from(data)
        if magic != SNAPSHOT_MAGIC:
            raise SnapshotError(f"bad magic {magic!r}")
        if version != SNAPSHOT_VERSION:
            raise SnapshotError(f"unsupported snapshot version {version}")
        if (shard, lsn) != (snap.shard, snap.lsn):
            raise SnapshotError(f"header says shard {shard} lsn {lsn}, unlike its name")
        body = memoryview(data)[SNAPSHOT_HEADER.size :]
        if len(body) != length:
            raise SnapshotError(f"body of {len(body)} bytes where the header says {length}")
        if crc32c(body) != crc:
            raise SnapshotError("crc mismatch")
        if not decode:
            return None
        try:
            return _unpack(zlib.decompress(body))
        except Exception as exc:  # zlib.error or any msgpack error: the file is unusable either way
            raise SnapshotError(f"undecodable body ({type(exc).__name__})") from None

    def _report_invalid(self, snap: SnapshotFile, exc: SnapshotError) -> None:
        self._log.warning("snapshot_invalid", shard=snap.shard, lsn=snap.lsn, file=snap.path.name,
                          problem=str(exc))

    def _remove_temp_files(self) -> None:
        """Leftovers of writes a crash interrupted: never complete, never read."""
        for path in self.directory.glob("*.snap" + TMP_SUFFIX):
            path.unlink(missing_ok=True)
            self._log.info("snapshot_temp_removed", file=path.name)
