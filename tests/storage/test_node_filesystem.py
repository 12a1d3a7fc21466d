"""A node with a real data dir opens the ``filesystem`` object store (the embedded default) and
proves it usable at start; a simulation opens none; a test can inject one store shared by nodes."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dakera_actors import Config, open_node
from dakera_actors.storage.filesystem import FileObjectStore
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.storage.objects import ObjectStoreUnusable
from dakera_actors.storage.opening import OBJECTS_DIR, PROBE_PREFIX
from dakera_actors.wal.memory import SimDisk
from tests.real.procs import ROOT, NodeProcess


async def test_a_node_opens_its_filesystem_store_under_the_data_dir(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="dakera_actors.node"):
        async with open_node(Config(data_dir=data, node_id="fs-1"), serve_http=False) as node:
            assert isinstance(node.objects, FileObjectStore)
            assert node.objects.root == data / OBJECTS_DIR
            assert await node.objects.list(PROBE_PREFIX) == []  # the probe cleaned up after itself
            await node.objects.put("chains/0/a", b"archived")
    assert stat.S_IMODE((data / OBJECTS_DIR).stat().st_mode) == 0o700
    assert (data / OBJECTS_DIR / "chains" / "0" / "a").read_bytes() == b"archived"
    [ready] = [r for r in caplog.records if r.getMessage() == "object_store_ready"]
    assert vars(ready)["storage"] == "filesystem" and vars(ready)["path"] == str(data / OBJECTS_DIR)


async def test_storage_path_puts_the_objects_elsewhere_and_nodes_may_share_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared-objects"
    one = Config(data_dir=tmp_path / "one", node_id="fs-1", storage_path=shared)
    two = Config(data_dir=tmp_path / "two", node_id="fs-2", storage_path=shared)
    async with open_node(one, serve_http=False) as a, open_node(two, serve_http=False) as b:
        assert isinstance(a.objects, FileObjectStore) and isinstance(b.objects, FileObjectStore)
        await a.objects.put("cluster/identity", b"one cluster")
        assert await b.objects.get("cluster/identity") == b"one cluster"
    assert not (tmp_path / "one" / OBJECTS_DIR).exists()


async def test_a_simulated_disk_opens_no_filesystem_store(tmp_path: Path) -> None:
    async with open_node(Config(data_dir=tmp_path / "sim", node_id="sim-1"), serve_http=False,
                         disk=SimDisk("sim-1")) as node:
        assert node.objects is None
    assert not (tmp_path / "sim" / OBJECTS_DIR).exists()


class RecordingStore(MemoryObjectStore):
    """A memory store that remembers every key written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.written.append(key)
        await super().put(key, data, if_absent=if_absent)


async def test_an_injected_store_is_used_as_is_and_not_probed(tmp_path: Path) -> None:
    store = RecordingStore()
    async with open_node(Config(data_dir=tmp_path / "a", node_id="m-1"), serve_http=False, objects=store) as a, \
            open_node(Config(data_dir=tmp_path / "b", node_id="m-2"), serve_http=False,
                      disk=SimDisk("m-2"), objects=store) as b:
        assert a.objects is store and b.objects is store
    # no probe: the test owns the store and its faults (the cold tier itself does write to it)
    assert not [key for key in store.written if key.startswith(PROBE_PREFIX + "/")]
    assert not (tmp_path / "a" / OBJECTS_DIR).exists()


async def test_an_unusable_storage_path_names_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(ObjectStoreUnusable) as info:
        async with open_node(Config(data_dir=tmp_path / "d", storage_path=blocker / "objects"), serve_http=False):
            pytest.fail("the node must not start")
    assert info.value.variable == "DAKERA_STORAGE_PATH"
    with pytest.raises(ObjectStoreUnusable) as info:
        async with open_node(Config(data_dir=tmp_path / "e", storage_path=blocker), serve_http=False):
            pytest.fail("the node must not start")
    assert info.value.variable == "DAKERA_STORAGE_PATH"


@pytest.mark.real
def test_an_unusable_storage_path_exits_2_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    env = dict(NodeProcess(tmp_path, DAKERA_STORAGE_PATH=str(blocker / "objects")).env)
    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dakera_actors: cannot start: DAKERA_STORAGE_PATH:"), last
