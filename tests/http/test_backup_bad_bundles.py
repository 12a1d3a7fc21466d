"""Bad bundles at the API: any truncation or bit flip of a real bundle, a wrong key and a wrong
format version, each posted as a raw body to ``/v1/admin/backups/restore`` and to
``/v1/admin/backups/upload``, is a 400 naming the problem, and changes neither the agents'
memories nor the backup list (nor starts a restore).

The bundles are made once for the module (a node, a backup, its download); each test runs one
node, and hypothesis drives it from a worker thread (``trio.from_thread``), so its examples share
that node instead of starting one each.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dakera_actors.backup.bundle import MANIFEST, build_bundle, open_bundle

from .test_backups import completed, node_and_sdk

NODE_KEY = bytes(range(32))  # the key of the node under test
OTHER_KEY = bytes(range(100, 132))  # some other cluster's
ROUTES = ("/v1/admin/backups/restore", "/v1/admin/backups/upload")
GZIP = {"Content-Type": "application/gzip"}
AGENTS = ("a", "b", "c")
# gzip header fields no reader checks (MTIME, XFL, OS): a flip there leaves the same bundle
IGNORED_HEADER = range(4, 10)


@attrs.frozen
class Bundles:
    plain: bytes  # a real bundle: agents "a" and "c", ten memories each
    sealed: bytes  # the same parts sealed with the node's key
    wrong_key: bytes  # sealed with another key
    wrong_version: bytes  # format 2


def _with_format(data: bytes, version: int) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, body in members:
            if info.name == MANIFEST:
                body = json.dumps({**json.loads(body), "format": version}).encode()
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(out.getvalue(), mtime=0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    async def make() -> bytes:
        async with node_and_sdk(tmp_path_factory.mktemp("source")) as (_node, raw, sdk):
            for i in range(20):
                r = await raw.post("/v1/memory/store", json={"agent_id": "ac"[i % 2], "content": f"backed up {i}",
                                                             "id": f"src{i}"})
                assert r.status_code == 200
            created = await sdk.admin_create_backup("source")
            assert (await completed(sdk, created["id"]))["status"] == "completed"
            return await sdk.download_backup(created["id"])

    plain = trio.run(make)
    opened = open_bundle(plain, limit=1 << 26)
    return Bundles(plain, build_bundle(opened.manifest, opened.parts, key=NODE_KEY),
                   build_bundle(opened.manifest, opened.parts, key=OTHER_KEY), _with_format(plain, 2))


async def state(node: Any, raw: httpx.AsyncClient) -> dict[str, Any]:
    """What a bad bundle must not change: every agent's memories (ids and contents), the backup
    list, and the restore jobs."""
    memories = {}
    for agent in AGENTS:
        r = await raw.get(f"/v1/agents/{agent}/memories", params={"limit": 1000})
        assert r.status_code == 200, r.text
        memories[agent] = sorted((m["id"], m["content"]) for m in r.json())
    backups = (await raw.get("/v1/admin/backups")).json()
    return {"memories": memories, "backups": backups,
            "restores": [j.view() for j in await node.backups.store.restores()]}


async def seeded(raw: httpx.AsyncClient) -> None:
    """The node's own data, unlike the bundle's: a bundle wrongly accepted would add agent c."""
    for agent, mid in (("a", "own-a"), ("b", "own-b")):
        r = await raw.post("/v1/memory/store", json={"agent_id": agent, "content": f"held {mid}", "id": mid})
        assert r.status_code == 200


async def refused(node: Any, raw: httpx.AsyncClient, body: bytes, before: dict[str, Any]) -> list[str]:
    """Post ``body`` to both routes: each must be a 400 about the bundle that changes nothing;
    the two error messages."""
    errors = []
    for route in ROUTES:
        r = await raw.post(route, content=body, headers=GZIP)
        assert r.status_code == 400, (route, r.status_code, r.text)
        error = r.json()["error"]
        assert error.startswith("bundle: "), (route, error)  # names the bundle and says what is wrong
        assert await state(node, raw) == before, route
        errors.append(error)
    return errors


async def test_any_truncation_or_bit_flip_is_a_400_that_changes_nothing(tmp_path: Path, bundles: Bundles) -> None:
    async with node_and_sdk(tmp_path, backup_key=NODE_KEY) as (node, raw, _sdk):
        await seeded(raw)
        created = await raw.post("/v1/admin/backups", json={"name": "own"})  # a backup list that is not empty
        assert created.status_code == 201
        with trio.fail_after(30):
            while (await raw.get(f"/v1/admin/backups/{created.json()['id']}")).json()["status"] == "inprogress":
                await trio.lowlevel.checkpoint()
        before = await state(node, raw)

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(sealed=st.booleans(), truncate=st.booleans(), at=st.floats(0, 1, exclude_max=True),
               bit=st.integers(0, 7))
        def damaged_bundles(sealed: bool, truncate: bool, at: float, bit: int) -> None:
            data = bundles.sealed if sealed else bundles.plain
            where = int(at * len(data))
            if truncate:
                bad = data[:where]
            else:
                if where in IGNORED_HEADER or (where == 3 and bit == 0):  # and FLG's FTEXT hint
                    where = 10 + where  # a byte the reader does check (the deflate stream)
                bad = data[:where] + bytes([data[where] ^ (1 << bit)]) + data[where + 1:]
            trio.from_thread.run(refused, node, raw, bad, before)

        await trio.to_thread.run_sync(damaged_bundles)
        # the undamaged bundles are taken: the checks above can see a bundle that goes through
        for good in (bundles.plain, bundles.sealed):
            r = await raw.post("/v1/admin/backups/upload", content=good, headers=GZIP)
            assert r.status_code == 201, r.text
        assert (await state(node, raw))["backups"] != before["backups"]


async def test_a_wrong_key_or_version_or_no_key_is_a_400_naming_it_that_changes_nothing(
        tmp_path: Path, bundles: Bundles) -> None:
    async with node_and_sdk(tmp_path, backup_key=NODE_KEY) as (node, raw, _sdk):
        await seeded(raw)
        before = await state(node, raw)
        for error in await refused(node, raw, bundles.wrong_key, before):
            assert "does not open with this DAKERA_BACKUP_KEY" in error
        for error in await refused(node, raw, bundles.wrong_version, before):
            assert "format 2 is not one this node reads" in error
        # the undamaged bundle is restored: agent c appears (what the checks above would have seen)
        r = await raw.post("/v1/admin/backups/restore", content=bundles.plain, headers=GZIP)
        assert r.status_code == 201, r.text
        with trio.fail_after(30):
            while (await state(node, raw))["memories"]["c"] == []:
                await trio.lowlevel.checkpoint()
    async with node_and_sdk(tmp_path, data="keyless", backup_path=tmp_path / "keyless-backups") as (node, raw, _sdk):
        await seeded(raw)
        before = await state(node, raw)
        for error in await refused(node, raw, bundles.sealed, before):
            assert "encrypted and this node has no DAKERA_BACKUP_KEY" in error

