"""Scheduled backups: the schedule record, its cron slots and what retention prunes (pure).

Every node runs :class:`~.service.Backups.run_schedule`; only the leader acts. At each cron slot
(Unix time, in the wall clock) the leader *claims* the slot by writing ``schedule/slots/<slot>``
only if it is absent, stamped with its fencing token: a leader that took over mid-slot, or two
nodes that both believed they led for a moment, find the claim and do not run the slot again, so
each slot makes one backup at most, across leader changes. A slot missed entirely (no leader for
longer than ``CATCH_UP``) is skipped, not run late. An incremental schedule adds each slot's
backup to the newest completed one (:func:`scheduled_base`), starting a new chain with a full
backup every ``max_backups``; retention (:func:`to_prune`) never removes a base a kept backup needs.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs
from croniter import croniter

from .bundle import BACKUP_TYPES, COMPRESSIONS
from .model import BackupInfo

CATCH_UP: Final = 600.0  # seconds after its time a slot may still be run by a new leader
SCHEDULED_PREFIX: Final = "scheduled-"
MAX_RETENTION_DAYS: Final = 36_500
MAX_KEEP: Final = 100_000


class ScheduleError(ValueError):
    """A schedule update that is wrong; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@attrs.define
class BackupSchedule:
    enabled: bool = False
    cron: str | None = None
    backup_type: str = "full"
    retention_days: int = 7
    max_backups: int = 7
    namespaces: list[str] = attrs.Factory(list)
    encrypt: bool = False
    compression: str | None = None
    last_backup_at: float | None = None
    next_backup_at: float | None = None
    #: when it was last enabled: slots before it never run (not shown: the SDKs do not read it)
    enabled_at: float | None = None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self, filter=lambda a, _v: a.name != "enabled_at")

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BackupSchedule:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("a schedule is a JSON object")
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _int(body: dict[str, Any], name: str, low: int, high: int, current: int) -> int:
    value = body.get(name, current)
    if isinstance(value, float) and value.is_integer():  # 7.0 is JSON's 7
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ScheduleError(name, f"must be a whole number in {low}..{high}")
    return value


def updated(current: BackupSchedule, body: Any, *, can_encrypt: bool) -> BackupSchedule:
    """``current`` with the fields ``body`` sets (the SDK's partial update), each checked."""
    if not isinstance(body, dict):
        raise ScheduleError("body", "must be a JSON object")
    unknown = set(body) - {f.name for f in attrs.fields(BackupSchedule)} - {"enabled_at"}
    if unknown:
        raise ScheduleError(sorted(unknown)[0], "unknown field")
    enabled = body.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise ScheduleError("enabled", "must be true or false")
    cron = body.get("cron", current.cron)
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron.split()) != 5):
        raise ScheduleError("cron", "must be a five-field cron expression, e.g. '0 3 * * *'")
    if enabled and cron is None:
        raise ScheduleError("cron", "is required to enable the schedule")
    backup_type = body.get("backup_type", current.backup_type)
    if backup_type not in BACKUP_TYPES:
        raise ScheduleError("backup_type", f"must be one of {', '.join(BACKUP_TYPES)}")
    namespaces = body.get("namespaces", current.namespaces)
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise ScheduleError("namespaces", "must be a list of agent ids")
    encrypt = body.get("encrypt", current.encrypt)
    if not isinstance(encrypt, bool):
        raise ScheduleError("encrypt", "must be true or false")
    if encrypt and not can_encrypt:
        raise ScheduleError("encrypt", "this cluster has no DAKERA_BACKUP_KEY to encrypt with")
    compression = body.get("compression", current.compression)
    if compression is not None and compression not in COMPRESSIONS:
        raise ScheduleError("compression", f"must be one of {', '.join(COMPRESSIONS)}")
    return BackupSchedule(enabled=enabled, cron=cron, backup_type=backup_type,
                          retention_days=_int(body, "retention_days", 1, MAX_RETENTION_DAYS, current.retention_days),
                          max_backups=_int(body, "max_backups", 1, MAX_KEEP, current.max_backups),
                          namespaces=sorted(set(namespaces)), encrypt=encrypt, compression=compression,
                          last_backup_at=current.last_backup_at, next_backup_at=current.next_backup_at,
                          enabled_at=current.enabled_at)


def next_slot(cron: str, after: float) -> float:
    """The first slot strictly after ``after`` (Unix seconds)."""
    return float(croniter(cron, after).get_next(float))


def due_slot(cron: str, now: float, since: float | None = None) -> float | None:
    """The latest slot at or before ``now`` if it is still within :data:`CATCH_UP` and not before
    ``since`` (the schedule's enabling), else None."""
    slot = float(croniter(cron, now + 1e-6).get_prev(float))
    return slot if now - slot <= CATCH_UP and (since is None or slot >= since) else None


def slot_key(slot: float) -> str:
    return f"schedule/slots/{int(slot):013d}"


def chain(backups: list[BackupInfo], backup_id: str) -> list[BackupInfo]:
    """The backups restoring ``backup_id`` reads: it, its base, the base's base... (as far as the
    records go; a loop ends it)."""
    by_id = {b.backup_id: b for b in backups}
    out: list[BackupInfo] = []
    at: str | None = backup_id
    while at is not None and at in by_id and all(b.backup_id != at for b in out):
        out.append(by_id[at])
        at = by_id[at].base_backup_id
    return out


def scheduled_base(backups: list[BackupInfo], namespaces: list[str], max_chain: int) -> BackupInfo | None:
    """What a scheduled incremental backup adds to: the newest completed backup of the same
    namespaces, unless its chain already holds ``max_chain`` backups (the schedule's max_backups),
    or there is none: then None, and the slot makes a full backup that starts a new chain (a chain
    is pruned whole, once no kept backup needs it, so chains must end for retention to prune)."""
    base = next((b for b in sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
                 if b.status == "completed" and b.namespaces == namespaces), None)
    if base is None or len(chain(backups, base.backup_id)) >= max_chain:
        return None
    return base


def to_prune(backups: list[BackupInfo], now: float, schedule: BackupSchedule) -> list[str]:
    """The scheduled backups retention removes: older than ``retention_days``, and beyond the
    newest ``max_backups`` (backups made by hand are never pruned), except the bases (all the way
    down) of every backup kept that is not failed: an incremental backup is never left without
    the backups it is restored from."""
    scheduled = sorted((b for b in backups if b.name.startswith(SCHEDULED_PREFIX) and b.status != "inprogress"),
                       key=lambda b: (b.created_at, b.backup_id), reverse=True)
    horizon = now - schedule.retention_days * 86_400
    doomed = [b.backup_id for n, b in enumerate(scheduled) if n >= schedule.max_backups or b.created_at < horizon]
    needed = {base.backup_id for b in backups if b.backup_id not in doomed and b.status != "failed"
              for base in chain(backups, b.backup_id)[1:]}
    return [backup_id for backup_id in doomed if backup_id not in needed]
