"""Where backups live: bundles and their records on an object store (``DAKERA_BACKUP_STORAGE``).

Layout (under the store's own prefix)::

    backups/<backup_id>/bundle.tar.gz     the bundle (:mod:`.bundle`), written once
    backups/<backup_id>/info.json         its :class:`~.model.BackupInfo`, replaced as it progresses
    restores/<restore_id>.json            a restore job's :class:`~.model.RestoreInfo`
    claims/restores/<restore_id>/<token>  who took a restore job over for that fencing token (once)

The bundle is written before the record says ``completed``, so a completed backup has its bundle
unless something removed it later (a delete cut short between its two steps, an operator): a
completed record whose bundle is missing reads as ``failed``, saying so (:data:`BUNDLE_MISSING`),
never as restorable; the stored record is left as it is.
"""

from __future__ import annotations

import builtins
import json
import re
import time

from ..storage.objects import ObjectExists, ObjectNotFound, ObjectStore
from .model import BackupInfo, RestoreInfo
from .schedule import BackupSchedule, slot_key

SCHEDULE_KEY = "schedule/schedule.json"
BUNDLE_MISSING = "its bundle is missing from the backup store (deleted or lost): it cannot be downloaded or restored"

#: matched whole (fullmatch): with match() and "$", an id ending in a newline passed
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_ID = re.compile(ID_PATTERN)


def check_id(value: str, what: str = "backup_id") -> str:
    """An id safe to put in an object key (letters, digits, ``_.-``, at most 128), else ValueError."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} must be 1-128 letters, digits, '_', '.' or '-'")
    return value


def bundle_key(backup_id: str) -> str:
    return f"backups/{check_id(backup_id)}/bundle.tar.gz"


def info_key(backup_id: str) -> str:
    return f"backups/{check_id(backup_id)}/info.json"


def restore_key(restore_id: str) -> str:
    return f"restores/{check_id(restore_id, 'restore_id')}.json"


def _as_read(info: BackupInfo, has_bundle: bool) -> BackupInfo:
    """A completed record without its bundle reads as failed."""
    if info.status == "completed" and not has_bundle:
        info.status, info.error = "failed", BUNDLE_MISSING
    return info


class BackupStore:
    def __init__(self, objects: ObjectStore, *, location: str) -> None:
        self.objects = objects
        self.location = location  # where an operator finds the bundles (a directory or s3://...)

    async def save_bundle(self, backup_id: str, data: bytes) -> str:
        key = bundle_key(backup_id)
        await self.objects.put(key, data, if_absent=True)
        return f"{self.location.rstrip('/')}/{key}"

    async def bundle(self, backup_id: str) -> bytes:
        return await self.objects.get(bundle_key(backup_id))

    async def save_info(self, info: BackupInfo) -> None:
        await self.objects.put(info_key(info.backup_id), info.to_json())

    async def info(self, backup_id: str) -> BackupInfo | None:
        try:
            raw = await self.objects.get(info_key(backup_id))
        except ObjectNotFound:
            return None
        info = BackupInfo.from_json(raw)
        if info.status == "completed":
            key = bundle_key(backup_id)
            _as_read(info, any(o.key == key for o in await self.objects.list(key)))
        return info

    async def list(self) -> list[BackupInfo]:
        """Every backup, newest first (records that do not read are skipped; a completed one
        without its bundle reads as failed)."""
        found = []
        listed = await self.objects.list("backups/")
        bundles = {obj.key for obj in listed if obj.key.endswith("/bundle.tar.gz")}
        for obj in listed:
            if obj.key.endswith("/info.json"):
                try:
                    info = BackupInfo.from_json(await self.objects.get(obj.key))
                except (ObjectNotFound, ValueError, TypeError):
                    continue
                found.append(_as_read(info, obj.key.removesuffix("info.json") + "bundle.tar.gz" in bundles))
        return sorted(found, key=lambda i: (i.created_at, i.backup_id), reverse=True)

    async def delete(self, backup_id: str) -> None:
        """The bundle first: a record without its bundle reads as failed, never as restorable."""
        await self.objects.delete(bundle_key(backup_id))
        await self.objects.delete(info_key(backup_id))

    async def save_restore(self, info: RestoreInfo) -> None:
        await self.objects.put(restore_key(info.restore_id), info.to_json())

    async def schedule(self) -> BackupSchedule:
        try:
            return BackupSchedule.from_json(await self.objects.get(SCHEDULE_KEY))
        except ObjectNotFound:
            return BackupSchedule()

    async def save_schedule(self, schedule: BackupSchedule) -> None:
        await self.objects.put(SCHEDULE_KEY, schedule.to_json())

    async def claim(self, slot: float, token: int, node_id: str) -> bool:
        """Claim a schedule slot for one backup: True for the one claimer, False when it was
        claimed already (by this leader or one before it)."""
        stamp = json.dumps({"slot": slot, "token": token, "node": node_id, "at": time.time()}).encode()
        try:
            await self.objects.put(slot_key(slot), stamp, if_absent=True)
        except ObjectExists:
            return False
        return True

    async def claim_restore(self, restore_id: str, token: int, node_id: str) -> bool:
        """Claim taking restore job ``restore_id`` over for the lease of ``token``: True for the
        one claimer (an if-absent put), False when some node claimed it for that token already."""
        stamp = json.dumps({"restore_id": restore_id, "token": token, "node": node_id, "at": time.time()}).encode()
        try:
            await self.objects.put(f"claims/restores/{check_id(restore_id, 'restore_id')}/{int(token)}", stamp,
                                   if_absent=True)
        except ObjectExists:
            return False
        return True

    async def restores(self) -> builtins.list[RestoreInfo]:
        """Every restore job's record (records that do not read are skipped)."""
        found = []
        for obj in await self.objects.list("restores/"):
            if obj.key.endswith(".json"):
                try:
                    found.append(RestoreInfo.from_json(await self.objects.get(obj.key)))
                except (ObjectNotFound, ValueError, TypeError):
                    continue
        return sorted(found, key=lambda r: (r.started_at, r.restore_id))

    async def restore(self, restore_id: str) -> RestoreInfo | None:
        try:
            return RestoreInfo.from_json(await self.objects.get(restore_key(restore_id)))
        except ObjectNotFound:
            return None
