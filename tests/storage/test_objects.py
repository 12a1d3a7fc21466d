"""The object-store interface, the same checks against all three backends: the filesystem, the
in-memory store, and S3 through aiobotocore under trio-asyncio against a real S3-compatible server
(moto's)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from dakera_actors.storage.filesystem import TMP_SUFFIX, FileObjectStore
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.storage.objects import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
)
from dakera_actors.storage.s3 import S3Settings, open_s3_store

from .conftest import BUCKET

_prefixes = itertools.count()


@pytest.fixture(params=["filesystem", "memory", pytest.param("s3", marks=pytest.mark.real)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "filesystem":
        yield FileObjectStore(tmp_path / "objects")
    elif request.param == "memory":
        yield MemoryObjectStore()
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = S3Settings(BUCKET, endpoint, access_key="test", secret_key="test",
                              prefix=f"cluster-{next(_prefixes)}")  # each test its own corner of the bucket
        async with open_s3_store(settings) as s3:
            yield s3


async def test_put_get_list_delete(store: ObjectStore) -> None:
    await store.put("shards/3/snap-0001", b"hello world")
    await store.put("shards/3/log-0002", b"abc")
    await store.put("shards/30/log-0001", b"")
    await store.put("other", b"x")
    assert await store.get("shards/3/snap-0001") == b"hello world"
    assert await store.get("shards/30/log-0001") == b""
    assert await store.list("shards/3/") == [ObjectInfo("shards/3/log-0002", 3), ObjectInfo("shards/3/snap-0001", 11)]
    assert [i.key for i in await store.list("shards/3")] == ["shards/3/log-0002", "shards/3/snap-0001",
                                                             "shards/30/log-0001"]
    assert [i.key for i in await store.list()] == ["other", "shards/3/log-0002", "shards/3/snap-0001",
                                                   "shards/30/log-0001"]
    await store.put("other", b"replaced")
    assert await store.get("other") == b"replaced"
    await store.delete("other")
    await store.delete("other")  # absent: not an error
    with pytest.raises(ObjectNotFound):
        await store.get("other")
    assert [i.key for i in await store.list("oth")] == []


async def test_byte_ranges_read_like_slices(store: ObjectStore) -> None:
    await store.put("blob", b"0123456789")
    assert await store.get("blob", start=2, end=5) == b"234"
    assert await store.get("blob", start=7) == b"789"
    assert await store.get("blob", end=3) == b"012"
    assert await store.get("blob", start=4, end=4) == b""
    assert await store.get("blob", start=8, end=50) == b"89"
    for start, end in ((-1, None), (5, 2)):
        with pytest.raises(ValueError):
            await store.get("blob", start=start, end=end)
    with pytest.raises(ObjectNotFound):
        await store.get("nothing", start=0, end=1)


async def test_a_conditional_put_never_replaces(store: ObjectStore) -> None:
    assert store.conditional
    await store.put("epoch/7/manifest", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        await store.put("epoch/7/manifest", b"second", if_absent=True)
    assert await store.get("epoch/7/manifest") == b"first"


async def test_concurrent_conditional_puts_have_one_winner(store: ObjectStore) -> None:
    won: list[int] = []

    async def claim(i: int) -> None:
        try:
            await store.put("claim", str(i).encode(), if_absent=True)
            won.append(i)
        except ObjectExists:
            pass

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(claim, i)
    assert len(won) == 1 and await store.get("claim") == str(won[0]).encode()


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/.", "tab\tkey", "back\\slash", "x" * 1025])
async def test_bad_keys_are_refused_and_change_nothing(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"data")
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    assert await store.list() == []


async def test_filesystem_objects_are_files_and_unfinished_puts_are_invisible(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    await store.put("a/b/c", b"data")
    assert (tmp_path / "a" / "b" / "c").read_bytes() == b"data"
    (tmp_path / "a" / "b" / f".c.123{TMP_SUFFIX}").write_bytes(b"half")  # a crash mid-put
    assert await store.list() == [ObjectInfo("a/b/c", 4)]
    assert not [p for p in (tmp_path / "a" / "b").iterdir() if p.name.endswith(TMP_SUFFIX) and p.name != f".c.123{TMP_SUFFIX}"]


async def test_the_memory_store_injects_outages_errors_and_slowness(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryObjectStore()
    await store.put("k", b"v")
    store.faults.outage = True
    with pytest.raises(ObjectStoreError):
        await store.get("k")
    store.faults.outage = False
    store.faults.fail_next = 2
    for _ in range(2):
        with pytest.raises(ObjectStoreError):
            await store.put("k", b"w")
    assert await store.get("k") == b"v"  # the failed puts changed nothing
    store.faults.delay = 30.0
    before = trio.current_time()
    await store.list()
    assert trio.current_time() - before >= 30.0  # Trio time: free under MockClock
    assert store.faults.calls == 6


@pytest.mark.real
async def test_s3_prefixes_keep_clusters_apart(moto_endpoint: str) -> None:
    one = S3Settings(BUCKET, moto_endpoint, access_key="test", secret_key="test", prefix="apart-one")
    two = S3Settings(BUCKET, moto_endpoint, access_key="test", secret_key="test", prefix="/apart-two/")
    async with open_s3_store(one) as a, open_s3_store(two) as b:
        await a.put("shared/key", b"one")
        await b.put("shared/key", b"two")
        assert await a.get("shared/key") == b"one" and await b.get("shared/key") == b"two"
        assert [i.key for i in await a.list()] == ["shared/key"]
        await a.delete("shared/key")
        assert await b.get("shared/key") == b"two"


@pytest.mark.real
async def test_s3_errors_are_object_store_errors(moto_endpoint: str) -> None:
    from dakera_actors.testing.cluster import free_port

    nowhere = S3Settings(BUCKET, f"http://127.0.0.1:{free_port()}", access_key="test", secret_key="test",
                         timeout=2.0)
    async with open_s3_store(nowhere) as s3:
        with pytest.raises(ObjectStoreError, match="unreachable"):
            await s3.put("k", b"v")
    missing_bucket = S3Settings("no-such-bucket-here", moto_endpoint, access_key="test", secret_key="test")
    async with open_s3_store(missing_bucket) as s3:
        with pytest.raises(ObjectStoreError, match="NoSuchBucket"):
            await s3.put("k", b"v")


def test_the_probe_blames_a_setting_by_the_error_code_not_the_message() -> None:
    from dakera_actors.storage.opening import _blame

    # a "403" inside a port number is not a refused key: the code says the endpoint is unreachable
    assert _blame(ObjectStoreError("S3 unreachable: http://127.0.0.1:40300/", code="unreachable")) \
        == "DAKERA_S3_ENDPOINT"
    assert _blame(ObjectStoreError("S3 SlowDown: port 4030", code="SlowDown")) == "DAKERA_STORAGE"
    assert _blame(ObjectStoreError("S3 NoSuchBucket: ...", code="NoSuchBucket")) == "DAKERA_S3_BUCKET"
    assert _blame(ObjectStoreError("S3 AccessDenied: ...", code="AccessDenied")) == "DAKERA_S3_ACCESS_KEY"
    assert _blame(ObjectStoreError("no code at all, 403")) == "DAKERA_STORAGE"
