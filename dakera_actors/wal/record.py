"""One write-ahead-log record and its on-disk framing.

A record on disk is a fixed 9-byte header followed by its payload::

    0xDA | payload length (u32 big-endian) | crc32c(payload) (u32 big-endian) | payload

The payload is a msgpack map ``{"v": 1, "lsn", "shard", "op", "body", "ts"}``, plus ``"q"`` and
``"e"`` (the shard's replication seq and epoch) when they are not zero. ``v`` is the record
format version; later versions may only *add* keys (readers ignore keys they do not know), so any
``v >= 1`` is read. A change that old readers must not misread takes a new magic byte instead.

:func:`scan` walks a buffer of records and never raises for bad data: it returns the good prefix
and says why it stopped, which is all the log needs to recover from a crash.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final, Literal, TypeGuard

import attrs
import msgpack
from crc32c import crc32c

MAGIC: Final = 0xDA
RECORD_VERSION: Final = 1
HEADER: Final = struct.Struct(">BII")  # magic, payload length, crc32c of the payload
HEADER_SIZE: Final = HEADER.size
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024  # a larger length field is damage, never an allocation

#: Why a scan stopped: a clean end, a partial record at the end, a record that fails its checks,
#: or LSNs that skip a number ("gap") or fail to increase ("order").
StopReason = Literal["eof", "torn", "corrupt", "gap", "order"]


@attrs.frozen
class WalRecord:
    """One logged write. ``lsn`` is node-global, assigned by the log, consecutive from 1.

    ``body`` is anything msgpack carries (dict, list, str, int, float, bytes, None); it comes back
    from the disk with tuples turned into lists.
    """

    lsn: int
    shard: int
    op: str
    body: Any
    ts: float
    #: the shard's replication position: ``seq`` counts the shard's records from 1 (0: a local
    #: record outside replication, such as a snapshot install); ``epoch`` is the shard map key
    #: the primary wrote it under (see :mod:`dakera_actors.replication`)
    seq: int = 0
    epoch: int = 0


#: what a log appends: a record (its ``lsn`` is the log's to give: a replicated record arrives
#: with none), or a ``(shard, op, body, ts[, seq, epoch])`` tuple
Entry = WalRecord | tuple[Any, ...]


def numbered(entry: Entry, lsn: int) -> WalRecord:
    """``entry`` as the record logged under ``lsn``."""
    if isinstance(entry, WalRecord):
        return attrs.evolve(entry, lsn=lsn)
    return WalRecord(lsn, *entry)


class RecordError(ValueError):
    """A payload that is not a valid record (raised by :func:`decode_payload`)."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_payload(payload: bytes | memoryview) -> WalRecord:
    """Parse one record payload or raise :class:`RecordError`; unknown keys are ignored."""
    try:
        # strict_map_key=False: any map key the encoder accepted must read back
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types for bad input; all mean the same
        raise RecordError(f"undecodable payload ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise RecordError("payload is not a map")
    version, lsn, shard, op, ts = (obj.get(k) for k in ("v", "lsn", "shard", "op", "ts"))
    if not _is_int(version) or version < 1:
        raise RecordError(f"bad record version {version!r}")
    if not _is_int(lsn) or lsn < 1:
        raise RecordError(f"bad lsn {lsn!r}")
    if not _is_int(shard) or shard < 0:
        raise RecordError(f"bad shard {shard!r}")
    if not isinstance(op, str) or not op:
        raise RecordError(f"bad op {op!r}")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise RecordError(f"bad ts {ts!r}")
    if "body" not in obj:
        raise RecordError("missing body")
    seq, epoch = obj.get("q", 0), obj.get("e", 0)
    if not _is_int(seq) or seq < 0 or not _is_int(epoch) or epoch < 0:
        raise RecordError(f"bad position {seq!r}/{epoch!r}")
    return WalRecord(lsn=lsn, shard=shard, op=op, body=obj["body"], ts=float(ts), seq=seq, epoch=epoch)


def encode_record(rec: WalRecord) -> bytes:
    """Frame ``rec`` for the disk.

    Raises ``TypeError``/``ValueError`` for a record that could not be read back (a body msgpack
    cannot carry, tuple map keys, a bad field): the payload is decoded once before it is returned,
    because a record the reader rejects would cost every record logged after it.
    """
    obj = {"v": RECORD_VERSION, "lsn": rec.lsn, "shard": rec.shard, "op": rec.op, "body": rec.body, "ts": rec.ts}
    if rec.seq or rec.epoch:  # added keys (readers ignore unknown ones); absent means 0
        obj["q"], obj["e"] = rec.seq, rec.epoch
    payload = msgpack.packb(obj, use_bin_type=True)
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        decode_payload(payload)
    except RecordError as exc:
        raise ValueError(f"record lsn={rec.lsn} would not read back: {exc}") from None
    return HEADER.pack(MAGIC, len(payload), crc32c(payload)) + payload


@attrs.frozen
class ScanResult:
    """The good records of a buffer, where they end, and why the scan stopped there.

    ``end`` is the offset just past the last good record: everything from ``end`` on is a torn
    or damaged tail (or nothing, when ``reason == "eof"``). ``detail`` says what was wrong.
    """

    records: list[WalRecord]
    end: int
    reason: StopReason
    detail: str = ""

    @property
    def clean(self) -> bool:
        return self.reason == "eof"


def _all_zero(view: memoryview) -> bool:
    return view.tobytes().count(0) == len(view)


def _stop(records: list[WalRecord], end: int, reason: StopReason, detail: str) -> ScanResult:
    return ScanResult(records=records, end=end, reason=reason, detail=f"{detail} at offset {end}")


def scan(buf: bytes | bytearray | memoryview, start: int = 0, *,
         prev_lsn: int | None = None) -> ScanResult:
    """Decode consecutive records from ``buf[start:]`` until the data ends or stops making sense.

    With ``prev_lsn``, the first record must carry ``prev_lsn + 1``; after that every record
    must carry its predecessor's LSN plus one (the log assigns LSNs without holes).
    Never raises for bad data.
    """
    view = memoryview(buf)
    records: list[WalRecord] = []
    pos, size = start, len(view)
    while pos < size:
        if view[pos] != MAGIC:
            if _all_zero(view[pos:]):  # a preallocated or never-written block, not damage
                return _stop(records, pos, "torn", "zero-filled tail")
            return _stop(records, pos, "corrupt", f"bad magic 0x{view[pos]:02x}")
        if size - pos < HEADER_SIZE:
            return _stop(records, pos, "torn", f"partial header ({size - pos} bytes)")
        _magic, length, crc = HEADER.unpack_from(view, pos)
        if length > MAX_RECORD_BYTES:
            return _stop(records, pos, "corrupt", f"length {length} over the limit")
        body_at = pos + HEADER_SIZE
        if size - body_at < length:
            return _stop(records, pos, "torn", f"partial payload ({size - body_at} of {length} bytes)")
        payload = view[body_at : body_at + length]
        if crc32c(payload) != crc:
            return _stop(records, pos, "corrupt", "crc mismatch")
        try:
            rec = decode_payload(payload)
        except RecordError as exc:
            return _stop(records, pos, "corrupt", str(exc))
        expected = records[-1].lsn + 1 if records else (None if prev_lsn is None else prev_lsn + 1)
        if expected is not None and rec.lsn != expected:
            reason: StopReason = "gap" if rec.lsn > expected else "order"
            return _stop(records, pos, reason, f"lsn {rec.lsn} where {expected} was due")
        records.append(rec)
        pos = body_at + length
    return ScanResult(records=records, end=pos, reason="eof")


#: where a record could start: the magic byte, 8 header bytes, then a msgpack map's first byte
#: (fixmap, map16, map32: every payload is a map); a lookahead, so overlapping candidates match
_CANDIDATE: Final = re.compile(rb"\xda(?=[\x00-\xff]{8}[\x80-\x8f\xde\xdf])")


class SearchExhausted(ValueError):
    """:func:`find_record` spent its CRC budget without an answer (crafted bytes, not a crash)."""


def find_record(buf: bytes | bytearray | memoryview, start: int = 0, *, budget: int | None = None) -> int | None:
    """The offset of the first whole, verified record at or after ``start``, or None.

    Recovery asks this after a scan stops: a record that verifies *after* the damage proves the
    damage is not a torn tail (a write in progress when the machine died leaves nothing valid
    behind it). A candidate must pass every check a record passes in :func:`scan`: the magic
    byte, a length within the limit and within the buffer, its crc32c, and a payload that
    decodes as a record. Random bytes pass the magic, the map marker and the 32-bit CRC
    together about once in 2^44 candidates, so a hit is a real record, not luck; the cheap
    checks come first so a scan of a large segment only computes CRCs for real candidates.

    Bytes a client chose (inside a record's body) could hold many candidates whose lengths each
    reach far ahead; ``budget`` (default: four times the bytes searched, plus 1 MiB) bounds the
    bytes checksummed, past which :class:`SearchExhausted` is raised: the caller cannot tell.
    """
    data = bytes(buf) if not isinstance(buf, bytes) else buf
    size = len(data)
    left = 4 * max(size - start, 0) + (1 << 20) if budget is None else budget
    for match in _CANDIDATE.finditer(data, start):  # the regex engine skips the hopeless offsets
        pos = match.start()
        _magic, length, crc = HEADER.unpack_from(data, pos)
        body_at = pos + HEADER_SIZE
        if 0 < length <= MAX_RECORD_BYTES and body_at + length <= size:
            left -= length
            if left < 0:
                raise SearchExhausted(f"no answer after checksumming the budget from offset {start}")
            payload = memoryview(data)[body_at : body_at + length]
            if crc32c(payload) == crc:
                try:
                    decode_payload(payload)
                    return pos
                except RecordError:
                    pass
    return None
