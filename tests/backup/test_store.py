"""Backup records and where they are kept."""

from __future__ import annotations

import pytest
import trio.testing

from dakera_actors.backup.model import BackupInfo, RestoreInfo, created_view
from dakera_actors.backup.store import BUNDLE_MISSING, BackupStore, check_id
from dakera_actors.storage.memory import MemoryObjectStore


def info(bid: str, at: float, status: str = "completed") -> BackupInfo:
    return BackupInfo(bid, f"name-{bid}", "full", status, at, vector_count=3, size_bytes=10)


async def test_bundles_and_records_round_trip_newest_first(autojump_clock: trio.testing.MockClock) -> None:
    objects = MemoryObjectStore()
    store = BackupStore(objects, location="s3://b/p")
    path = await store.save_bundle("b1", b"\x1f\x8bdata")
    assert path == "s3://b/p/backups/b1/bundle.tar.gz"
    await store.save_info(info("b1", 1.0))
    await store.save_info(info("b2", 2.0))
    objects.objects["backups/b3/info.json"] = b"{not json"  # a damaged record is skipped, not fatal
    assert [i.backup_id for i in await store.list()] == ["b2", "b1"]
    assert (await store.info("b1")) == info("b1", 1.0) and await store.info("nope") is None
    assert await store.bundle("b1") == b"\x1f\x8bdata"
    await store.delete("b1")
    assert "backups/b1/bundle.tar.gz" not in objects.objects and await store.info("b1") is None
    job = RestoreInfo("r1", "inprogress", "b2", 5.0)
    await store.save_restore(job)
    assert await store.restore("r1") == job and await store.restore("r2") is None


def test_ids_that_could_escape_their_folder_are_refused() -> None:
    for bad in ["", "../x", "a/b", "a..b", "x" * 129, " lead", "a\nb", "trailing\n"]:  # "$" let "trailing\n" pass
        with pytest.raises(ValueError, match="backup_id"):
            check_id(bad)
    assert check_id("2026-12-01T21.30_nightly") == "2026-12-01T21.30_nightly"


def test_a_created_backup_answers_in_the_three_forms_the_sdks_read() -> None:
    view = created_view(info("b9", 9.0, "inprogress"), estimated_completion=12.0)
    assert view["backup"]["backup_id"] == view["backup_id"] == view["id"] == "b9"
    assert view["status"] == "inprogress" and view["estimated_completion"] == 12.0
    with pytest.raises(ValueError, match="status"):
        BackupInfo.from_json(b'{"backup_id": "x", "name": "n", "backup_type": "full", "status": "odd", "created_at": 1}')


async def test_a_completed_backup_whose_bundle_is_gone_reads_as_failed(autojump_clock: trio.testing.MockClock) -> None:
    objects = MemoryObjectStore()
    store = BackupStore(objects, location="mem:/")
    for bid in ("whole", "lost"):
        await store.save_bundle(bid, b"\x1f\x8bdata")
        await store.save_info(info(bid, 1.0))
    await store.save_info(info("running", 2.0, "inprogress"))  # no bundle yet, and none expected
    del objects.objects["backups/lost/bundle.tar.gz"]  # a delete cut short, an operator's rm
    for read in [await store.info("lost"), next(i for i in await store.list() if i.backup_id == "lost")]:
        assert read is not None and read.status == "failed" and read.error == BUNDLE_MISSING
    assert (await store.info("whole")) == info("whole", 1.0)
    assert [(i.backup_id, i.status) for i in await store.list()] == [
        ("running", "inprogress"), ("whole", "completed"), ("lost", "failed")]
    assert b'"completed"' in objects.objects["backups/lost/info.json"]  # the record itself is left as it is
