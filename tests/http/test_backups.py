"""The backup API read and driven by the official SDK (its own client, over the node's ASGI app):
create, list, get, download, delete, upload, restore from a stored backup and from a raw bundle."""

from __future__ import annotations

import base64
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from dakera import AsyncDakeraClient, NotFoundError, ValidationError

from dakera_actors import Config, Node, open_node

KEY = "backup-test-root-key"
BACKUP_KEY = base64.b64encode(bytes(range(32))).decode()


@asynccontextmanager
async def node_and_sdk(tmp_path: Path, data: str = "data",
                       **config: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient, AsyncDakeraClient]]:
    settings: dict[str, Any] = {"backup_path": tmp_path / "backups", **config}
    cfg = Config(data_dir=tmp_path / data, node_id="node-b", root_api_key=KEY, shards=4, **settings)
    async with open_node(cfg, serve_http=False) as node:
        transport = httpx.ASGITransport(app=node.app)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers) as raw:
            sdk = AsyncDakeraClient("http://node", api_key=KEY, max_retries=1)
            sdk._client = httpx.AsyncClient(transport=transport, headers=dict(sdk._client.headers))
            try:
                yield node, raw, sdk
            finally:
                await sdk._client.aclose()


async def completed(sdk: AsyncDakeraClient, backup_id: str) -> dict[str, Any]:
    """Poll the backup's record as a client would, until its job is over (a deadline, no sleeps)."""
    with trio.fail_after(30):
        while (info := await sdk.admin_get_backup(backup_id))["status"] == "inprogress":
            await trio.lowlevel.checkpoint()
    return info


async def restored(sdk: AsyncDakeraClient, restore_id: str) -> dict[str, Any]:
    with trio.fail_after(30):
        while (job := await sdk.admin_get_restore_status(restore_id))["status"] == "inprogress":
            await trio.lowlevel.checkpoint()
    return job


async def ids_of(raw: httpx.AsyncClient, agent: str) -> set[str]:
    listed = (await raw.get(f"/v1/agents/{agent}/memories", params={"limit": 1000})).json()
    return {m["id"] for m in listed}


async def test_backup_then_restore_a_wiped_node_through_the_sdk(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path, backup_key=base64.b64decode(BACKUP_KEY)) as (node, raw, sdk):
        for i in range(30):
            r = await raw.post("/v1/memory/store", json={"agent_id": f"agent-{i % 3}", "content": f"memory {i}",
                                                         "id": f"m{i}"})
            assert r.status_code == 200
        s0 = (await raw.post("/v1/sessions/start", json={"agent_id": "agent-0", "session_id": "open"})).json()["session"]
        await raw.post("/v1/sessions/start", json={"agent_id": "agent-9", "session_id": "done"})  # no memories
        await raw.post("/v1/sessions/agent-9~done/end", json={"summary": "backed up"})
        sessions_then = {sid: (await raw.get(f"/v1/sessions/{sid}")).json() for sid in (s0["id"], "agent-9~done")}
        created = await sdk.admin_create_backup("nightly", encrypt=True)
        assert created["backup"]["backup_id"] == created["backup_id"] == created["id"]
        info = await completed(sdk, created["id"])
        assert info["status"] == "completed" and info["vector_count"] == 30 and info["encrypted"] is True
        assert node.metrics.sample("dakera_backups_total", outcome="ok") == 1
        assert node.metrics.sample("dakera_backup_last_success_timestamp_seconds") >= info["created_at"]
        listed = await sdk.admin_list_backups()
        assert listed["total"] == 1 and listed["backups"][0]["backup_id"] == created["id"]
        bundle = await sdk.download_backup(created["id"])
        assert bundle[:2] == b"\x1f\x8b"
        before = {a: await ids_of(raw, a) for a in ("agent-0", "agent-1", "agent-2")}
        await raw.post("/v1/memory/store", json={"agent_id": "agent-0", "content": "after the cut", "id": "late"})
    # a new machine: nothing of the old data dir, the bundle uploaded to /admin/backups/restore
    async with node_and_sdk(tmp_path, data="fresh", backup_path=tmp_path / "other",
                            backup_key=base64.b64decode(BACKUP_KEY)) as (node, raw, sdk):
        r = await raw.post("/v1/admin/backups/restore", content=bundle, headers={"Content-Type": "application/gzip"})
        assert r.status_code == 201, r.text
        job = await restored(sdk, r.json()["restore_id"])
        assert job["status"] == "completed" and job["vectors_restored"] == 30 and job["progress_percent"] == 100.0
        assert node.metrics.sample("dakera_restores_total", outcome="ok") == 1
        after = {a: await ids_of(raw, a) for a in ("agent-0", "agent-1", "agent-2")}
        assert after == before and "late" not in after["agent-0"]  # every memory of the cut, nothing after it
        got = await raw.get("/v1/memory/get/m4", params={"agent_id": "agent-1"})
        assert got.status_code == 200 and got.json()["content"] == "memory 4"
        # sessions come back with their agents (one of an agent without memories too)
        assert {sid: (await raw.get(f"/v1/sessions/{sid}")).json() for sid in sessions_then} == sessions_then
        # the uploaded bundle kept as a backup of this cluster, restorable by id through the SDK
        up = await sdk.upload_backup(bundle)
        assert up["status"] == "accepted" and up["backup"]["vector_count"] == 30
        job = await sdk.admin_restore_backup(up["backup_id"], target_namespaces=["agent-2"], overwrite=True)
        assert (await restored(sdk, job["restore_id"]))["status"] == "completed"
        assert (await sdk.admin_delete_backup(up["backup_id"])) == {"deleted": True, "backup_id": up["backup_id"]}
        with pytest.raises(NotFoundError):
            await sdk.admin_get_backup(up["backup_id"])


async def test_bad_bundles_and_requests_are_400s_that_change_nothing(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path) as (node, raw, sdk):
        await raw.post("/v1/memory/store", json={"agent_id": "a", "content": "kept", "id": "k"})
        created = await sdk.admin_create_backup("one")
        await completed(sdk, created["id"])
        bundle = await sdk.download_backup(created["id"])
        for bad in [bundle[:-20], bundle[:30], b"\x1f\x8b" + bundle[2:40] + b"\x00" * 20, b"plain text"]:
            r = await raw.post("/v1/admin/backups/restore", content=bad, headers={"Content-Type": "application/gzip"})
            assert r.status_code == 400 and "bundle" in r.json()["error"], r.text
        with pytest.raises(ValidationError):
            await sdk.admin_restore_backup(created["id"], point_in_time=5)
        with pytest.raises(ValidationError):
            await sdk.admin_create_backup("x", backup_type="weekly")
        r = await raw.post("/v1/admin/backups", json={"name": "secret", "encrypt": True})
        assert r.status_code == 400 and "DAKERA_BACKUP_KEY" in r.text  # no key configured: refused
        with pytest.raises(NotFoundError):
            await sdk.admin_restore_backup("no-such-backup")
        assert (await raw.get("/v1/admin/backups/../etc")).status_code in (400, 404)
        assert await ids_of(raw, "a") == {"k"}
        # and without the API key nothing is listed
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://node") as anon:
            assert (await anon.get("/v1/admin/backups")).status_code == 401


async def test_a_bundle_may_exceed_the_api_body_limit_but_nothing_else_may(tmp_path: Path) -> None:
    async with node_and_sdk(tmp_path, max_body_bytes=64 * 1024) as (node, raw, sdk):
        rng = random.Random(7)
        for i in range(40):  # text that does not compress away
            words = " ".join(f"{rng.getrandbits(40):x}" for _ in range(300))
            r = await raw.post("/v1/memory/store", json={"agent_id": "a", "content": f"{i} {words}"})
            assert r.status_code == 200
        created = await sdk.admin_create_backup("big")
        await completed(sdk, created["id"])
        bundle = await sdk.download_backup(created["id"])
        assert len(bundle) > 64 * 1024  # bigger than any API request may be
        r = await raw.post("/v1/admin/backups/restore", content=bundle, headers={"Content-Type": "application/gzip"})
        assert r.status_code == 201, r.text
        assert (await restored(sdk, r.json()["restore_id"]))["status"] == "completed"
        r = await raw.post("/v1/memory/store", content=b'{"agent_id": "a", "content": "' + b"x" * 70_000 + b'"}',
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "DAKERA_MAX_BODY_BYTES" in r.text

        async def stream() -> Any:  # no Content-Length: refused before the body is read
            yield b'{"agent_id": "a", "content": "'
            for _ in range(70):
                yield b"y" * 1000
            yield b'"}'

        r = await raw.post("/v1/memory/store", content=stream(), headers={"Content-Type": "application/json"})
        assert r.status_code == 411 and "Content-Length" in r.text, r.text
        assert len(await sdk.admin_list_backups()) and await ids_of(raw, "a") != set()


async def test_a_point_in_time_restore_brings_back_the_agents_as_they_were_at_that_second(tmp_path: Path) -> None:
    """Store A; note t1; store B, forget A, a new agent; restore at t1 through the SDK: A is back,
    B and the new agent's memory are not."""
    async with node_and_sdk(tmp_path, cold_flush_ms=50) as (node, raw, sdk):
        for mid in ("a", "keep"):
            r = await raw.post("/v1/memory/store", json={"agent_id": "pit", "content": f"memory {mid}", "id": mid})
            assert r.status_code == 200
        t1 = math.ceil(time.time())  # the SDK sends whole seconds: the next one, after A's commit
        await trio.sleep(t1 + 0.02 - time.time())  # until the wall clock has passed it
        assert time.time() > t1
        r = await raw.post("/v1/memory/store", json={"agent_id": "pit", "content": "memory b", "id": "b"})
        assert r.status_code == 200
        assert (await raw.post("/v1/memory/forget", json={"agent_id": "pit", "memory_ids": ["a"]})).status_code == 200
        r = await raw.post("/v1/memory/store", json={"agent_id": "newcomer", "content": "born later", "id": "n"})
        assert r.status_code == 200
        assert await ids_of(raw, "pit") == {"keep", "b"}
        # bad points: a 400 each, nothing started
        for bad in (int(time.time()) + 3600, 5, "yesterday"):
            with pytest.raises(ValidationError):
                await sdk.admin_restore_backup("", point_in_time=bad)  # type: ignore[arg-type]
        job = await sdk.admin_restore_backup("", point_in_time=t1)
        done = await restored(sdk, job["restore_id"])
        assert done["status"] == "completed", done
        assert await ids_of(raw, "pit") == {"a", "keep"}
        assert await ids_of(raw, "newcomer") == set()
        assert node.metrics.sample("dakera_restores_total", outcome="ok") == 1
        # limited to some agents: only those go back to the point, the others keep what they hold now
        for agent, mid in (("pit", "extra"), ("newcomer", "again")):
            r = await raw.post("/v1/memory/store", json={"agent_id": agent, "content": "after", "id": mid})
            assert r.status_code == 200
        job = await sdk.admin_restore_backup("", point_in_time=t1, target_namespaces=["newcomer"])
        assert (await restored(sdk, job["restore_id"]))["status"] == "completed"
        assert await ids_of(raw, "newcomer") == set()
        assert await ids_of(raw, "pit") == {"a", "keep", "extra"}


async def test_the_sdk_schedule_calls_and_its_plain_backup_aliases(tmp_path: Path) -> None:
    """admin_get/update_backup_schedule, and create/list/restore/delete_backup (the SDK's names
    without admin_), against one node; compression is accepted as the SDKs send it, and the record
    says what the bundle is: gzip."""
    async with node_and_sdk(tmp_path) as (node, raw, sdk):
        sched = await sdk.admin_get_backup_schedule()
        assert sched["enabled"] is False and sched["cron"] is None and sched["next_backup_at"] is None
        assert (sched["backup_type"], sched["retention_days"], sched["max_backups"]) == ("full", 7, 7)
        set_to = await sdk.admin_update_backup_schedule(enabled=True, cron="0 3 * * *", retention_days=3,
                                                        max_backups=2, namespaces=["a"], compression="zstd")
        assert set_to["enabled"] is True and set_to["cron"] == "0 3 * * *" and set_to["namespaces"] == ["a"]
        assert (set_to["retention_days"], set_to["max_backups"]) == (3, 2)
        assert set_to["next_backup_at"] > time.time() and (set_to["next_backup_at"] % 86_400) == 3 * 3600
        assert "enabled_at" not in set_to  # internal: the SDKs do not read it
        again = await sdk.admin_get_backup_schedule()  # kept in the backup store, read back
        assert {k: again[k] for k in set_to if k != "next_backup_at"} == {k: set_to[k] for k in set_to
                                                                          if k != "next_backup_at"}
        for bad in ({"cron": "every day"}, {"max_backups": 0}, {"retention_days": "7"}, {"colour": "red"},
                    {"compression": "rar"}, {"backup_type": "weekly"}):
            with pytest.raises(ValidationError):
                await sdk.admin_update_backup_schedule(**bad)
        partial = await sdk.admin_update_backup_schedule(enabled=False)  # a partial update keeps the rest
        assert partial["enabled"] is False and partial["cron"] == "0 3 * * *" and partial["max_backups"] == 2
        assert partial["next_backup_at"] is None
        assert (await sdk.admin_update_backup_schedule(backup_type="incremental"))["backup_type"] == "incremental"

        await raw.post("/v1/memory/store", json={"agent_id": "a", "content": "kept", "id": "k"})
        made = []
        for compression in ("none", "zstd", "lz4", "gzip"):
            created = await sdk.create_backup(f"plain-{compression}", backup_type="snapshot", compression=compression)
            assert created["backup_id"] == created["id"] == created["backup"]["backup_id"]
            info = await completed(sdk, created["id"])
            assert info["status"] == "completed" and info["backup_type"] == "snapshot"
            assert info["compression"] == "gzip" and info["vector_count"] == 1  # what the bundle is
            assert (await sdk.download_backup(created["id"]))[:2] == b"\x1f\x8b"
            made.append(created["id"])
        r = await raw.post("/v1/admin/backups", json={"name": "x", "compression": "brotli"})
        assert r.status_code == 400 and "compression" in r.json()["error"], r.text
        listed = await sdk.list_backups()
        assert isinstance(listed, dict)  # typed as a list, answered as the admin call's object
        assert listed["total"] == 4 and {b["backup_id"] for b in listed["backups"]} == set(made)
        await raw.post("/v1/memory/forget", json={"agent_id": "a", "memory_ids": ["k"]})
        assert await ids_of(raw, "a") == set()
        job = await sdk.restore_backup(made[0])
        assert job["backup_id"] == made[0] and job["status"] in ("inprogress", "completed")
        assert (await restored(sdk, job["restore_id"]))["status"] == "completed"
        assert await ids_of(raw, "a") == {"k"}
        assert await sdk.delete_backup(made[0]) == {"deleted": True, "backup_id": made[0]}
        with pytest.raises(NotFoundError):
            await sdk.delete_backup(made[0])
        assert (await sdk.list_backups())["total"] == 3
