"""The segmented, append-only write-ahead log of one node.

Segments live in one directory, each named by the LSN of its first record, zero-padded to 20
digits (``00000000000000000001.wal``) so that name order is LSN order. A segment rolls once it
has reached ``segment_bytes``; the newest segment is the active one, every other one is sealed
and never written again (a sealed segment can be shipped to object storage as it is).

Durability: :meth:`WriteAheadLog.append` only hands bytes to the OS. A write is durable only
after :meth:`WriteAheadLog.sync` has returned; acknowledge nothing before that.

Recovery (:meth:`WriteAheadLog.open`) reads every segment in order and stops at the first
record that fails its checks (framing, crc32c, decoding, LSN order). What it does next depends
on what lies *after* that point, because a crash and a damaged disk leave different marks:

- **Torn tail**: nothing after the damage verifies (no later record in the segment, no later
  segment). That is the write that was in progress when the node died, never acknowledged: the
  tail is cut at the end of the last good record, after a copy of the cut bytes is written and
  fsynced to ``<segment>.wal.tail.corrupt``.
- **Unfinished write**: records do verify after the damage, but the damage is the shape a crash
  leaves: zeros up to the end of a sealed segment, or a whole 512-byte, sector-aligned block of
  zeros (blocks the OS had allocated but not yet written read back as zeros; etcd's WAL uses
  the same test). A sealed segment that merely ends early is *not* this case: a bit flip in its
  last record's length field looks the same. A batch is written only after the previous one's fsync returned, so
  everything after such a hole belongs to the batch whose fsync never returned: cut as a torn
  tail, with every later segment renamed aside to ``<segment>.wal.corrupt``.
- **Damage**: any other bad record (a crc mismatch over non-zero bytes, bad magic, an
  undecodable payload, an LSN out of order) with valid records after it, in the same segment
  or in a later one, or a hole between segments. Those later records may have been
  acknowledged, so recovery does not drop them: in ``strict`` mode (the default) it copies the
  damaged part aside (``<segment>.wal.at-<offset>.corrupt``, fsynced) without changing the
  segment and raises :class:`WalRecoveryError` naming the segment, the offset and what follows.
  In ``truncate`` mode (an operator's explicit choice) it cuts and sets aside as for an
  unfinished write and logs at error level what was dropped.

"Records verify after the damage" is decided by :func:`~dakera_actors.wal.record.find_record`:
a later offset where a whole record passes every check a record passes in a scan (magic,
length, crc32c, decoding). Random bytes pass that about once in 2^44 tries, so a hit is a real
record. Files not named ``<20 digits>.wal`` are ignored, so set-aside files are never read again.

Errors: an OS error while appending or syncing leaves the log failed (like PostgreSQL, which
stops rather than guess what an fsync error lost): every later call raises
:class:`WalFailedError` and the owner must reopen the log, which runs recovery. Records of the
failed call may or may not be there after the reopen.

Not thread-safe: one owner (the WAL actor) serialises every call, running them in a worker thread.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import attrs

from dakera_actors.log import EventLogger, get_logger

from .record import Entry, SearchExhausted, StopReason, WalRecord, encode_record, find_record, numbered, scan

DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
SEGMENT_SUFFIX: Final = ".wal"
QUARANTINE_SUFFIX: Final = ".corrupt"
#: what recovery does with damage that valid records follow: stop (strict) or drop them (truncate)
RECOVERY_MODES: Final = ("strict", "truncate")
FILE_MODE: Final = 0o600  # every file the node writes: memories are nobody else's business
DIR_MODE: Final = 0o700
SECTOR: Final = 512  # the unit a device writes atomically: what a crash can leave unwritten
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
_APPEND_FLAGS: Final = os.O_WRONLY | os.O_APPEND
_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync flushes the size too; macOS lacks it


class WalError(Exception):
    """Base of the errors the log raises itself (OS errors are raised as they are)."""


class WalFailedError(WalError):
    """The log hit an OS error while writing or syncing, or was closed; reopen it."""


class WalCorruptError(WalError):
    """Data that recovery accepted no longer reads back (changed on disk since open)."""


class WalRecoveryError(WalError):
    """Recovery found damage it will not repair on its own: dropping it would lose records that
    may have been acknowledged (valid records after a bad one, a hole in the LSNs, a gap between a
    snapshot and the log). The node must stop; an operator decides (see ``RECOVERY_MODES``)."""

    def __init__(self, message: str, *, segment: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{SEGMENT_SUFFIX}"


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (which makes creations, renames and deletions in it survive
    a crash), by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600, never overwriting) holding ``data``, durably: the file and
    then its directory are fsynced, so the copy is there after a crash."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(path.parent)


def replace_durably(path: Path, *chunks: bytes, tmp: Path) -> None:
    """Replace ``path`` with ``chunks`` (one after the other) atomically and durably: write ``tmp``
    (mode 0600 from the start; a crash's leftover, which would keep its old mode, is removed first),
    fsync it, rename it over ``path`` and fsync the directory (the rename is only durable once the
    directory is).
    A crash leaves the old or the new content, never a torn one; a failure removes ``tmp``."""
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def _unwritten_sector(buf: bytes, start: int, stop: int) -> bool:
    """Whether ``buf[start:stop]`` holds a whole sector-aligned block of zeros: what pages that
    never reached the disk read back as, unlike bytes that changed after they were written."""
    pos = -(-start // SECTOR) * SECTOR
    while pos + SECTOR <= stop:
        if buf.count(0, pos, pos + SECTOR) == SECTOR:
            return True
        pos += SECTOR
    return False


@attrs.frozen
class _After:
    """The records that still verify after a damaged point: how many and their LSN range."""

    records: int = 0
    first_lsn: int = 0
    last_lsn: int = 0
    complete: bool = True  # False: the search gave up somewhere, there may be more

    def describe(self) -> str:
        if not self.records:
            return "no valid record follows" if self.complete else "valid records may follow"
        more = "" if self.complete else "at least "
        return f"{more}{self.records} valid records follow (lsn {self.first_lsn}..{self.last_lsn})"


def _valid_after(buf: bytes, resume: int | None, rest: Sequence[tuple[int, Path]], *,
                 searched: bool = True) -> _After:
    count, lsns, complete = 0, [], searched
    for data, pos in [(buf, resume), *((path.read_bytes(), 0) for _first, path in rest)]:
        while pos is not None:
            result = scan(data, pos)
            count += len(result.records)
            lsns += [result.records[0].lsn, result.records[-1].lsn] if result.records else []
            try:
                pos = None if result.clean else find_record(data, result.end)  # progresses: a hit verifies
            except SearchExhausted:
                pos, complete = None, False
    return _After(count, min(lsns), max(lsns), complete) if count else _After(complete=complete)


def _aside(path: Path, suffix: str) -> Path:
    """A free name next to ``path`` for a quarantined file: never overwrite earlier evidence."""
    candidate = path.with_name(path.name + suffix)
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}{suffix}.{n}")
        n += 1
    return candidate


@attrs.frozen
class SegmentInfo:
    """One segment file: records ``first_lsn..last_lsn`` (``last_lsn < first_lsn`` when empty)."""

    path: Path
    first_lsn: int
    last_lsn: int
    size: int


@attrs.define
class _Segment:
    path: Path
    first_lsn: int
    size: int


@attrs.frozen
class RecoveryReport:
    """What :meth:`WriteAheadLog.open` found and repaired.

    ``reason`` is "eof" when every segment ended cleanly, else why recovery cut the log (see
    :data:`~dakera_actors.wal.record.StopReason`). ``problems`` has one sentence per repair.
    """

    segments_scanned: int
    records_recovered: int
    last_lsn: int
    bytes_truncated: int
    reason: StopReason
    problems: tuple[str, ...] = ()
    quarantined: tuple[Path, ...] = ()
    #: records that still verified after damage and were dropped anyway (truncate mode) or lost
    #: with an unfinished write
    records_dropped: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _SEGMENT_NAME.match(entry.name)
            if match and int(match[1]) >= 1 and entry.is_file():
                found.append((int(match[1]), Path(entry.path)))
    return sorted(found)


class _Recovery:
    """Scan every segment in order, repair what a crash left, refuse what damage left, and say
    what was done (see the module docstring for the three cases)."""

    def __init__(self, directory: Path, log: EventLogger, mode: str) -> None:
        self.directory = directory
        self.log = log
        self.mode = mode
        self.kept: list[_Segment] = []
        self.last_lsn = 0
        self.records = 0
        self.scanned = 0
        self.truncated = 0
        self.dropped = 0
        self.reason: StopReason = "eof"
        self.problems: list[str] = []
        self.quarantined: list[Path] = []

    def run(self) -> RecoveryReport:
        found = _list_segments(self.directory)
        for i, (first_lsn, path) in enumerate(found):
            if self.kept and first_lsn != self.last_lsn + 1:
                self._segment_hole(path, first_lsn, found[i:])
                self._quarantine(found[i:])
                break
            if not self._scan_segment(path, first_lsn, found[i + 1 :]):
                self._quarantine(found[i + 1 :])
                break
        for segment in self.kept:  # what we read may still be only in the page cache of a dead process
            fsync_path(segment.path)
        fsync_path(self.directory)
        report = RecoveryReport(
            segments_scanned=self.scanned, records_recovered=self.records, last_lsn=self.last_lsn,
            bytes_truncated=self.truncated, reason=self.reason, problems=tuple(self.problems),
            quarantined=tuple(self.quarantined), records_dropped=self.dropped,
        )
        self.log.info("wal_recovered", segments=len(self.kept), records=self.records,
                      last_lsn=self.last_lsn, truncated_bytes=self.truncated, reason=self.reason,
                      problems=len(self.problems), records_dropped=self.dropped)
        return report

    def _scan_segment(self, path: Path, first_lsn: int, rest: Sequence[tuple[int, Path]]) -> bool:
        """Keep the good prefix of one segment; False when the log must end here."""
        buf = path.read_bytes()
        result = scan(buf, prev_lsn=first_lsn - 1)
        self.scanned += 1
        good_records = len(result.records)
        last_good = result.records[-1].lsn if result.records else first_lsn - 1
        if result.clean:
            self._keep(path, first_lsn, result.end, good_records, last_good)
            return True
        end, cut = result.end, len(buf) - result.end
        try:
            resume: int | None = find_record(buf, end)
            searched = True
        except SearchExhausted:  # cannot tell: read it as damage that valid records follow
            resume, searched = None, False
        if resume is None and searched and not rest:
            # a torn tail: the write in progress when the node died, never acknowledged
            kept_in = self._copy_aside(path, buf[end:], ".tail" + QUARANTINE_SUFFIX)
            self.problems.append(f"{path.name}: cut {cut} bytes at offset {end} ({result.detail}), "
                                 f"kept in {kept_in.name}")
            self.log.warning("wal_tail_truncated", segment=path.name, offset=end, bytes=cut,
                             reason=result.reason, detail=result.detail, kept_in=kept_in.name)
        else:
            after = _valid_after(buf, resume, rest, searched=searched)
            # not a sealed segment that merely ends early: a bit flip in the last length field
            # looks just the same, and an unfinished write more likely leaves zeros than a short file
            unfinished = searched and ((resume is None and buf.count(0, end) == cut)
                                       or _unwritten_sector(buf, end, len(buf) if resume is None else resume))
            if not unfinished:
                self._damage(path, buf, end, result.detail, after)
            kept_in = self._copy_aside(path, buf[end:], ".tail" + QUARANTINE_SUFFIX)
            self.dropped += after.records
            if unfinished:  # only records of the batch whose fsync never returned are lost
                self.problems.append(f"{path.name}: unfinished write at offset {end} ({result.detail}); "
                                     f"cut {cut} bytes ({after.describe()}), kept in {kept_in.name}")
                self.log.warning("wal_unfinished_write_cut", segment=path.name, offset=end, bytes=cut,
                                 reason=result.reason, detail=result.detail, records_after=after.records,
                                 kept_in=kept_in.name)
            else:
                self.problems.append(f"{path.name}: damaged at offset {end} ({result.detail}); cut {cut} "
                                     f"bytes and dropped {after.records} valid records after it ({self.mode} mode), "
                                     f"kept in {kept_in.name}")
                self.log.error("wal_damage_dropped", segment=path.name, offset=end, bytes=cut,
                               reason=result.reason, detail=result.detail, records_dropped=after.records,
                               dropped_lsns=f"{after.first_lsn}..{after.last_lsn}" if after.records else "-",
                               kept_in=kept_in.name, mode=self.mode)
        self.reason = result.reason
        self.truncated += cut
        _truncate_file(path, end)
        self._keep(path, first_lsn, end, good_records, last_good)
        return not rest and resume is None and searched

    def _keep(self, path: Path, first_lsn: int, size: int, records: int, last_lsn: int) -> None:
        self.kept.append(_Segment(path=path, first_lsn=first_lsn, size=size))
        self.records += records
        self.last_lsn = last_lsn

    def _damage(self, path: Path, buf: bytes, offset: int, detail: str, after: _After) -> None:
        """Damage that valid records follow: strict mode stops here, with the bytes kept aside."""
        if self.mode != "strict":
            return
        kept_in = self._copy_aside(path, buf[offset:], f".at-{offset}" + QUARANTINE_SUFFIX, reuse=True)
        self.log.error("wal_damage_found", segment=path.name, offset=offset, detail=detail,
                       records_after=after.records, kept_in=kept_in.name, mode=self.mode)
        raise WalRecoveryError(
            f"WAL segment {self.directory / path.name} is damaged at offset {offset} ({detail}) and "
            f"{after.describe()}; refusing to drop them (the damaged part is copied to {kept_in.name})",
            segment=path.name, offset=offset)

    def _copy_aside(self, path: Path, data: bytes, suffix: str, *, reuse: bool = False) -> Path:
        target = path.with_name(path.name + suffix)
        if reuse and target.exists() and target.read_bytes() == data:
            return target  # the same damage found again by a restart: one copy is enough
        target = _aside(path, suffix)
        write_private(target, data)
        return target

    def _segment_hole(self, path: Path, first_lsn: int, rest: Sequence[tuple[int, Path]]) -> None:
        expected = self.last_lsn + 1
        self.reason = "gap" if first_lsn > expected else "order"
        after = _valid_after(b"", None, rest)
        self.log.error("wal_segment_gap", segment=path.name, first_lsn=first_lsn, expected_lsn=expected,
                       reason=self.reason, records_after=after.records, mode=self.mode)
        if self.mode == "strict":
            raise WalRecoveryError(
                f"WAL segment {self.directory / path.name} starts at lsn {first_lsn} where {expected} "
                f"was due (a segment is missing) and {after.describe()}; refusing to drop them",
                segment=path.name, offset=0)
        self.dropped += after.records
        self.problems.append(f"{path.name}: starts at lsn {first_lsn} where {expected} was due; "
                             f"dropped {after.records} records")

    def _quarantine(self, rest: Sequence[tuple[int, Path]]) -> None:
        for _first_lsn, path in rest:
            target = _aside(path, QUARANTINE_SUFFIX)
            os.rename(path, target)
            self.quarantined.append(target)
            self.problems.append(f"{path.name}: after damaged data, renamed aside to {target.name}")
            self.log.error("wal_segment_quarantined", segment=path.name, moved_to=target.name)
        if rest:
            fsync_path(self.directory)


def _truncate_file(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())


class WriteAheadLog:
    """A segmented append-only log of :class:`WalRecord` in one directory.

    Build one with :meth:`open`, which recovers whatever a crash left behind.
    """

    blocking = True  # file I/O and fsync: callers on an event loop run it in a worker thread

    def __init__(self, directory: Path, *, segment_bytes: int, log: EventLogger,
                 segments: list[_Segment], last_lsn: int, recovery: RecoveryReport) -> None:
        self.directory = directory
        self.recovery = recovery
        self._segment_bytes = segment_bytes
        self._log = log
        self._segments = segments
        self._last_lsn = last_lsn
        self._fd: int | None = os.open(segments[-1].path, _APPEND_FLAGS) if segments else None
        self._unsynced: dict[Path, int] = {}  # sealed segments written since the last sync
        self._active_dirty = False
        self._dir_dirty = False
        self._failed: BaseException | None = None
        self._closed = False

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             log: EventLogger | None = None, recovery: str = "strict") -> WriteAheadLog:
        """Open (creating it, mode 0700, if needed) and recover the log in ``directory``.

        The repairs made are in :attr:`recovery`, one log line each. ``recovery`` is one of
        :data:`RECOVERY_MODES`: with "strict", damage that valid records follow raises
        :class:`WalRecoveryError` and changes nothing but a copy; "truncate" drops it, loudly.
        Raises ``OSError`` for the disk's errors.
        """
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        if recovery not in RECOVERY_MODES:
            raise ValueError(f"recovery must be one of {', '.join(RECOVERY_MODES)}, got {recovery!r}")
        path = Path(directory)
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        logger = log or get_logger("dakera_actors.wal")
        recovery_run = _Recovery(path, logger, recovery)
        report = recovery_run.run()
        return cls(path, segment_bytes=segment_bytes, log=logger, segments=recovery_run.kept,
                   last_lsn=recovery_run.last_lsn, recovery=report)

    def start_at(self, next_lsn: int) -> None:
        """Make an EMPTY log continue at ``next_lsn`` (the WAL was lost but snapshots were not).

        Without this, LSNs would restart at 1 under snapshots that claim higher ones, and every
        new record would look already applied. Refuses a log that holds records: a gap inside
        a log is corruption, not a configuration.
        """
        self._check_usable()
        if any(seg.size for seg in self._segments):
            raise ValueError("start_at needs an empty log")
        if next_lsn <= self._last_lsn + 1:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for seg in self._segments:
            seg.path.unlink()
        self._segments = []
        self._last_lsn = next_lsn - 1
        self._writable_segment(next_lsn)  # an empty segment whose name carries the next LSN
        fsync_path(self.directory)
        self._dir_dirty = False

    @property
    def last_lsn(self) -> int:
        """The LSN of the newest appended record (0 for an empty log); it may not be synced yet."""
        return self._last_lsn

    def append(self, entries: Sequence[Entry]) -> list[WalRecord]:
        """Log records (or ``(shard, op, body, ts[, seq, epoch])`` entries) under consecutive LSNs; not durable until :meth:`sync`.

        Every entry is encoded before anything is written, so a body that cannot be encoded
        (``TypeError``/``ValueError``) leaves the log untouched.
        """
        self._check_usable()
        first = self._last_lsn + 1
        records = [numbered(entry, first + i) for i, entry in enumerate(entries)]
        frames = [encode_record(rec) for rec in records]
        if not records:
            return records
        try:
            self._write_frames(records, frames)
        except OSError as exc:
            self._fail("append", exc)
            raise
        self._last_lsn = records[-1].lsn
        return records

    def _write_frames(self, records: list[WalRecord], frames: list[bytes]) -> None:
        i = 0
        while i < len(frames):
            segment = self._writable_segment(records[i].lsn)
            j, size = i, segment.size
            while j < len(frames) and (j == i or size < self._segment_bytes):
                size += len(frames[j])
                j += 1
            assert self._fd is not None
            _write_all(self._fd, b"".join(frames[i:j]))  # one write per segment touched
            segment.size = size
            self._active_dirty = True
            i = j

    def _writable_segment(self, next_lsn: int) -> _Segment:
        """The active segment, or a fresh one starting at ``next_lsn`` when it is full."""
        if self._segments and self._segments[-1].size < self._segment_bytes:
            return self._segments[-1]
        if self._fd is not None:
            self._seal_active()
        path = self.directory / segment_name(next_lsn)
        # O_EXCL: an existing file of that name would mean two segments claim the same LSNs
        self._fd = os.open(path, _APPEND_FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._dir_dirty = True
        segment = _Segment(path=path, first_lsn=next_lsn, size=0)
        self._segments.append(segment)
        self._log.debug("wal_segment_created", segment=path.name)
        return segment

    def _seal_active(self) -> None:
        assert self._fd is not None
        if self._active_dirty:  # sync() still owes this file an fsync
            self._unsynced[self._segments[-1].path] = self._fd
        else:
            os.close(self._fd)
        self._fd = None
        self._active_dirty = False

    def sync(self) -> None:
        """Make every appended record durable: fsync written segments, then the directory."""
        self._check_usable()
        try:
            for path, fd in list(self._unsynced.items()):
                _datasync(fd)
                os.close(fd)
                del self._unsynced[path]
            if self._active_dirty and self._fd is not None:
                _datasync(self._fd)
                self._active_dirty = False
            if self._dir_dirty:  # a new segment's name is only durable once its directory is
                fsync_path(self.directory)
                self._dir_dirty = False
        except OSError as exc:
            self._fail("sync", exc)
            raise

    def replay(self, after_lsn: int = 0) -> Iterator[WalRecord]:
        """Every record with ``lsn > after_lsn``, in order, up to :attr:`last_lsn` as of this call.

        Segments that end at or before ``after_lsn`` are not read. Do not append or truncate
        while iterating. Raises :class:`WalCorruptError` if a segment changed on disk since open.
        """
        self._check_usable()
        firsts = [s.first_lsn for s in self._segments]
        start = max(bisect.bisect_right(firsts, after_lsn + 1) - 1, 0)
        # copied now: a generator body only runs at the first next()
        frozen = [attrs.evolve(s) for s in self._segments[start:]]
        return self._replay(frozen, after_lsn, self._last_lsn)

    def _replay(self, segments: list[_Segment], after_lsn: int, upto: int) -> Iterator[WalRecord]:
        for segment in segments:
            with open(segment.path, "rb") as f:
                buf = f.read(segment.size)
            result = scan(buf, prev_lsn=segment.first_lsn - 1)
            if not result.clean or result.end != segment.size:
                raise WalCorruptError(f"{segment.path.name}: {result.reason}, {result.detail or 'short read'}")
            for rec in result.records:
                if after_lsn < rec.lsn <= upto:
                    yield rec

    def truncate_before(self, lsn: int) -> int:
        """Delete sealed segments whose records all have LSNs below ``lsn``; returns how many.

        The active segment is never deleted. Call it with the LSN every shard's snapshot covers.
        """
        self._check_usable()
        deleted = 0
        while len(self._segments) > 1 and self._segments[1].first_lsn <= lsn:
            segment = self._segments[0]
            os.unlink(segment.path)
            # one directory fsync per deletion: a crash must not bring back an older segment
            # without the ones after it, which recovery would read as a hole
            fsync_path(self.directory)
            self._segments.pop(0)
            fd = self._unsynced.pop(segment.path, None)
            if fd is not None:
                os.close(fd)
            deleted += 1
        if deleted:
            self._log.info("wal_segments_deleted", count=deleted, before_lsn=lsn)
        return deleted

    def segments(self) -> list[SegmentInfo]:
        """Every segment, oldest first; the last one is the active segment."""
        infos = []
        for i, segment in enumerate(self._segments):
            following = self._segments[i + 1] if i + 1 < len(self._segments) else None
            last = following.first_lsn - 1 if following else max(self._last_lsn, segment.first_lsn - 1)
            infos.append(SegmentInfo(segment.path, segment.first_lsn, last, segment.size))
        return infos

    def sealed_segments(self) -> list[SegmentInfo]:
        """The segments that will never be written again (all but the active one)."""
        return self.segments()[:-1]

    def close(self) -> None:
        """Sync (unless the log has failed) and release the files. Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            for fd in self._unsynced.values():
                os.close(fd)
            self._unsynced.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._closed = True

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise WalFailedError("the write-ahead log is closed")
        if self._failed is not None:
            raise WalFailedError(f"the write-ahead log failed earlier: {self._failed!r}")

    def _fail(self, during: str, exc: BaseException) -> None:
        self._failed = exc
        self._log.error("wal_failed", during=during, error=repr(exc))
