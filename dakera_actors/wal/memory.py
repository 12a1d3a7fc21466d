"""A simulated disk: one node's WAL and snapshots in memory, surviving a simulated crash.

Simulation tests run hundreds of nodes in one process under ``trio.testing.MockClock``; the file
layer would need a worker thread per disk call, and the mock clock jumps while a thread works.
A :class:`SimDisk` stands in for a node's data directory instead. It outlives the node: the
harness calls :meth:`SimDisk.crash` and only then cancels the node, and a new node recovers from
the same disk.

A crash is a loss of power at one instant: every handle opened before it (the log, the snapshot
store, the state files) belongs to the dead process and refuses every later call with
:class:`SimDiskCrashedError`, so nothing the dead node runs while it unwinds (``on_stop`` closing
and syncing its log, a ``finally`` saving state) can reach the disk. A real ``kill -9`` runs none
of that code; here it runs but writes nothing.

Crash semantics are those of a machine losing power:

- WAL records appended but not yet synced are lost; synced ones survive;
- a snapshot is atomic and durable once ``write`` returns (the file store fsyncs and renames);
- truncation is durable at once (the file log fsyncs the directory per deleted segment).

Records are stored as the file log's encoded frames and decoded on replay, so mutating a body
after the append cannot change the disk, and a body the file log refuses is refused here the
same way. A "segment" is a block of ``segment_records`` consecutive LSNs, counted from the first
LSN the log ever had (1, or what :meth:`MemoryLog.start_at` set): like the file log, the newest
block is the active segment, and :meth:`MemoryLog.truncate_before` drops only whole sealed blocks.

Every call returns at once (``blocking = False``): the actors call it on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dakera_actors.log import EventLogger, get_logger

from .log import RecoveryReport, SegmentInfo, WalFailedError, WriteAheadLog, segment_name
from .record import HEADER_SIZE, Entry, WalRecord, decode_payload, encode_record, numbered
from .snapshot import SnapshotStore, _unpack, pack_checked, snapshot_name

DEFAULT_SEGMENT_RECORDS: Final = 1024


class SimDiskCrashedError(WalFailedError):
    """A handle opened before :meth:`SimDisk.crash` was used: the process that held it is dead."""


@attrs.define
class _WalImage:
    """What the disk holds of the log: frames of LSNs ``first_lsn..``, the first ``synced`` durable."""

    frames: list[bytes] = attrs.Factory(list)
    first_lsn: int = 1  # LSN of frames[0], or the next LSN while there are no frames
    synced: int = 0
    empty_segment: bool = False  # start_at left an empty (durable) active segment


class SimDisk:
    """In-memory stand-in for one node's data directory (see the module docstring).

    ``path`` is a pseudo path that never exists; it only names the disk in logs and errors.
    """

    def __init__(self, name: str = "sim", *, segment_records: int = DEFAULT_SEGMENT_RECORDS) -> None:
        if segment_records < 1:
            raise ValueError("segment_records must be positive")
        self.name = name
        self.path = Path("/simdisk") / name
        self.segment_records = segment_records
        self.crashes = 0
        #: small state files written atomically and durably (the lease's tokens and voters)
        self.files: dict[str, bytes] = {}
        self._wal = _WalImage()
        self._snapshots: dict[int, dict[int, bytes]] = {}  # shard -> lsn -> packed state
        self._epoch = 0  # bumped by crash() and open_log(): older logs refuse every call
        self._incarnation = 0  # bumped by crash(): every older handle refuses every call

    @property
    def incarnation(self) -> int:
        """How many times this disk crashed: handles opened under an older value are dead."""
        return self._incarnation

    def check_alive(self, incarnation: int) -> None:
        """Refuse a call through a handle opened under ``incarnation`` if the disk crashed since."""
        if incarnation != self._incarnation:
            raise SimDiskCrashedError(f"simulated disk {self.name} crashed: this handle belongs to a dead process")

    def open_log(self, *, log: EventLogger | None = None) -> MemoryLog:
        """The WAL as found on this disk. A log opened earlier on this disk stops working."""
        self._epoch += 1
        return MemoryLog(self, log=log)

    def snapshot_store(self) -> MemorySnapshotStore:
        """The snapshot store of this disk, as a handle of the current incarnation."""
        return MemorySnapshotStore(self)

    def crash(self) -> None:
        """Lose power now: every WAL record not yet synced is gone, and every handle opened before
        (log, snapshot store, state files) refuses every later call (a log's close is a no-op)."""
        del self._wal.frames[self._wal.synced:]
        self._epoch += 1
        self._incarnation += 1
        self.crashes += 1

    @property
    def synced_lsn(self) -> int:
        """The newest LSN that would survive a crash now (``first_lsn - 1`` when none would)."""
        return self._wal.first_lsn + self._wal.synced - 1


class MemoryLog:
    """The :class:`~dakera_actors.wal.log.WriteAheadLog` interface over a :class:`SimDisk`."""

    blocking = False  # every call returns at once: run it on the event loop, not in a thread

    def __init__(self, disk: SimDisk, *, log: EventLogger | None = None) -> None:
        self.directory = disk.path / "wal"
        self._disk = disk
        self._wal = disk._wal
        self._epoch = disk._epoch
        self._incarnation = disk._incarnation
        self._log = log or get_logger("dakera_actors.wal")
        self._closed = False
        self.recovery = RecoveryReport(
            segments_scanned=len(self.segments()), records_recovered=len(self._wal.frames),
            last_lsn=self.last_lsn, bytes_truncated=0, reason="eof")

    @property
    def last_lsn(self) -> int:
        """The LSN of the newest appended record (0 for an empty log); it may not be synced yet."""
        return self._wal.first_lsn + len(self._wal.frames) - 1

    def start_at(self, next_lsn: int) -> None:
        """Make an EMPTY log continue at ``next_lsn`` (see ``WriteAheadLog.start_at``)."""
        self._check_usable()
        if self._wal.frames:
            raise ValueError("start_at needs an empty log")
        if next_lsn <= self.last_lsn + 1:
            return
        self._wal.first_lsn = next_lsn
        self._wal.synced = 0
        self._wal.empty_segment = True

    def append(self, entries: Sequence[Entry]) -> list[WalRecord]:
        """Log records (or ``(shard, op, body, ts[, seq, epoch])`` entries) under consecutive LSNs; lost on a crash until :meth:`sync`.

        Every entry is encoded first, so a body that cannot be encoded leaves the disk untouched.
        """
        self._check_usable()
        first = self.last_lsn + 1
        records = [numbered(entry, first + i) for i, entry in enumerate(entries)]
        frames = [encode_record(rec) for rec in records]
        self._wal.frames.extend(frames)
        return records

    def sync(self) -> None:
        """Make every appended record survive :meth:`SimDisk.crash`."""
        self._check_usable()
        self._wal.synced = len(self._wal.frames)

    def replay(self, after_lsn: int = 0) -> Iterator[WalRecord]:
        """Every record with ``lsn > after_lsn``, in order, up to :attr:`last_lsn` as of this call."""
        self._check_usable()
        frames = self._wal.frames[max(after_lsn + 1 - self._wal.first_lsn, 0):]  # copied now
        return (decode_payload(memoryview(frame)[HEADER_SIZE:]) for frame in frames)

    def truncate_before(self, lsn: int) -> int:
        """Drop sealed segments whose records all have LSNs below ``lsn``; returns how many."""
        self._check_usable()
        wal, size = self._wal, self._disk.segment_records
        deleted = 0
        # a following segment exists (so the first is sealed and full) and starts at or before lsn
        while wal.first_lsn + size <= min(lsn, self.last_lsn):
            del wal.frames[:size]
            wal.first_lsn += size
            wal.synced = max(wal.synced - size, 0)
            deleted += 1
        if deleted:
            self._log.info("wal_segments_deleted", count=deleted, before_lsn=lsn)
        return deleted

    def segments(self) -> list[SegmentInfo]:
        """Every segment, oldest first; the last one is the active segment."""
        wal, size = self._wal, self._disk.segment_records
        if not wal.frames:
            empty = SegmentInfo(self.directory / segment_name(wal.first_lsn), wal.first_lsn, wal.first_lsn - 1, 0)
            return [empty] if wal.empty_segment else []
        infos = []
        for start in range(wal.first_lsn, self.last_lsn + 1, size):
            block = wal.frames[start - wal.first_lsn : start - wal.first_lsn + size]
            infos.append(SegmentInfo(self.directory / segment_name(start), start, start + len(block) - 1,
                                     sum(map(len, block))))
        return infos

    sealed_segments = WriteAheadLog.sealed_segments  # all but the active one: the same rule

    def close(self) -> None:
        """Sync (unless the disk crashed since the open) and stop. Idempotent."""
        if self._closed:
            return
        if self._epoch == self._disk._epoch:
            self.sync()
        self._closed = True

    def __enter__(self) -> MemoryLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        self._disk.check_alive(self._incarnation)  # first: say the process is dead, not just closed
        if self._closed:
            raise WalFailedError("the write-ahead log is closed")
        if self._epoch != self._disk._epoch:
            raise WalFailedError(f"simulated disk {self._disk.name} crashed or was reopened since this log was opened")


class MemorySnapshotStore:
    """The :class:`~dakera_actors.wal.snapshot.SnapshotStore` interface over a :class:`SimDisk`."""

    blocking = False  # every call returns at once: run it on the event loop, not in a thread

    def __init__(self, disk: SimDisk, *, log: EventLogger | None = None) -> None:
        self.directory = disk.path / "snapshots"
        self._disk = disk
        self._incarnation = disk.incarnation
        self._snapshots = disk._snapshots
        self._log = log or get_logger("dakera_actors.wal")

    def _check_alive(self) -> None:
        self._disk.check_alive(self._incarnation)

    def write(self, shard: int, lsn: int, state: Any) -> Path:
        """Store a copy of ``state`` as shard ``shard`` at ``lsn``; refuses what msgpack cannot carry."""
        self._check_alive()
        raw = pack_checked(shard, lsn, state)
        self._snapshots.setdefault(shard, {})[lsn] = raw
        self._log.info("snapshot_written", shard=shard, lsn=lsn, bytes=len(raw))
        return self.directory / snapshot_name(shard, lsn)

    def latest(self, shard: int) -> tuple[int, Any] | None:
        """``(lsn, state)`` of the newest snapshot of ``shard`` (a fresh copy), or None."""
        lsn = self.latest_lsn(shard)
        return None if lsn is None else (lsn, _unpack(self._snapshots[shard][lsn]))

    def latest_lsn(self, shard: int) -> int | None:
        self._check_alive()
        return max(self._snapshots.get(shard) or (), default=None)

    def all_latest(self) -> dict[int, int]:
        """Shard to the LSN of its newest snapshot, for every shard that has one."""
        self._check_alive()
        return {shard: max(by_lsn) for shard, by_lsn in sorted(self._snapshots.items()) if by_lsn}

    def oldest_lsn(self, shard: int) -> int | None:
        """The LSN of the oldest snapshot of ``shard``, or None (see ``SnapshotStore.oldest_lsn``)."""
        self._check_alive()
        return min(self._snapshots.get(shard) or (), default=None)

    def shards(self) -> set[int]:
        """Every shard with at least one snapshot."""
        self._check_alive()
        return {shard for shard, by_lsn in self._snapshots.items() if by_lsn}

    def prune(self, shard: int, keep: int = 2) -> int:
        """Keep the newest ``keep`` snapshots of ``shard``; delete the rest. Returns how many."""
        self._check_alive()
        if keep < 1:
            raise ValueError("keep must be at least 1: pruning must never leave a shard without a snapshot")
        by_lsn = self._snapshots.get(shard, {})
        old = sorted(by_lsn, reverse=True)[keep:]
        for lsn in old:
            del by_lsn[lsn]
        if old:
            self._log.info("snapshots_pruned", shard=shard, deleted=len(old), kept=len(by_lsn))
        return len(old)


#: What the storage code accepts as a node's log and snapshot store.
WalLog = WriteAheadLog | MemoryLog
SnapshotStorage = SnapshotStore | MemorySnapshotStore
