"""The durable file layer of the write-ahead log and of shard snapshots.

Synchronous and I/O-only, with no Trio inside: the WAL actor owns one :class:`WriteAheadLog` and
one :class:`SnapshotStore` and runs their blocking calls with ``trio.to_thread.run_sync``, one at
a time. A write is durable only once :meth:`WriteAheadLog.sync` has returned.
"""

from .log import (
    DEFAULT_SEGMENT_BYTES,
    RECOVERY_MODES,
    RecoveryReport,
    SegmentInfo,
    WalCorruptError,
    WalError,
    WalFailedError,
    WalRecoveryError,
    WriteAheadLog,
)
from .record import MAX_RECORD_BYTES, ScanResult, StopReason, WalRecord, encode_record, find_record, scan
from .snapshot import SnapshotError, SnapshotFile, SnapshotStore

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "RECOVERY_MODES",
    "MAX_RECORD_BYTES",
    "RecoveryReport",
    "ScanResult",
    "SegmentInfo",
    "SnapshotError",
    "SnapshotFile",
    "SnapshotStore",
    "StopReason",
    "WalCorruptError",
    "WalError",
    "WalFailedError",
    "WalRecoveryError",
    "WalRecord",
    "WriteAheadLog",
    "encode_record",
    "find_record",
    "scan",
]
