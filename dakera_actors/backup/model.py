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
    compression: str | None = "gzip"  # what the bundle is (always gzip, whatever the request asked)
    #: an incremental backup: the backup it adds to (restoring it needs that one too)
    base_backup_id: str | None = None
    #: the job's runner (internal; the SDKs ignore them): the node that takes the cut and, with a
    #: shared backup store, the fencing token it led with (a later leader fails a runner's
    #: unfinished backup: nothing of it was stored)
    runner: str | None = None
    token: int | None = None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.view(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BackupInfo:
        return cls.from_view(json.loads(raw))

    @classmethod
    def from_view(cls, d: Any) -> BackupInfo:
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
    #: the job itself (internal; the SDKs ignore them): the node running it and the fencing token
    #: it leads with (None on a node-local store), the request it recomputes its parts from
    #: (``backup_id``, ``targets``, ``overwrite``, ``point_in_time``), and how many batches of its
    #: plan (:func:`~.jobs.plan_batches`) are applied, out of ``batches``: a later runner goes on
    #: from there
    runner: str | None = None
    token: int | None = None
    request: dict[str, Any] = attrs.Factory(dict)
    done: int = 0
    batches: int | None = None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.view(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RestoreInfo:
        return cls.from_view(json.loads(raw))

    @classmethod
    def from_view(cls, d: Any) -> RestoreInfo:
        if not isinstance(d, dict):
            raise ValueError("a restore record is a JSON object")
        known = {f.name for f in attrs.fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        if info.status not in RESTORE_STATUSES:
            raise ValueError(f"unknown restore status {info.status!r}")
        return info
