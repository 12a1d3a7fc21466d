"""What the backup API reads and answers, in the shapes the official SDKs parse (pure)."""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

BACKUP_STATUSES: Final = ("inprogress", "completed", "failed", "deleting")
RESTORE_STATUSES: Final = ("inprogress", "completed", "failed")


@attrs.define
class BackupInfo:
    """One backup. ``namespaces`` are agent ids (empty: every agent); ``vector_count`` counts memories."""

    backup_id: str
    name: str
    backup_type: str
    status: str
    created_at: float
    namespaces: list[str] = attrs.Factory(list)
    vector_count: int = 0
    size_bytes: int = 0
    completed_at: float | None = None
    duration_seconds: float | None = None
    storage_path: str | None = None
    error: str | None = None
    encrypted: bool = False
    compression: str | None = "gzip"
    #: an incremental backup: the backup it adds to (restoring it needs that one too)
    base_backup_id: str | None = None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.view(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BackupInfo:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("a backup record is a JSON object")
        known = {f.name for f in attrs.fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        if info.status not in BACKUP_STATUSES:
            raise ValueError(f"unknown backup status {info.status!r}")
        return info


def created_view(info: BackupInfo, estimated_completion: float | None = None) -> dict[str, Any]:
    """``POST /v1/admin/backups``: the SDKs read the backup under ``backup``, at the top level, and
    its id as ``id`` too."""
    view = info.view()
    out: dict[str, Any] = {"backup": view, **view, "id": info.backup_id}
    if estimated_completion is not None:
        out["estimated_completion"] = estimated_completion
    return out


@attrs.define
class RestoreInfo:
    restore_id: str
    status: str
    backup_id: str
    started_at: float
    namespaces: list[str] = attrs.Factory(list)
    estimated_completion: float | None = None
    progress_percent: float | None = 0.0
    vectors_restored: int | None = 0
    completed_at: float | None = None
    duration_seconds: float | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.view(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RestoreInfo:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("a restore record is a JSON object")
        known = {f.name for f in attrs.fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        if info.status not in RESTORE_STATUSES:
            raise ValueError(f"unknown restore status {info.status!r}")
        return info
