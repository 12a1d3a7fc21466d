"""The persisted maintenance flag: round trip, an unreadable file, the end time."""

from __future__ import annotations

from pathlib import Path

from dakera_actors.operations.maintenance import STATE_FILE, MaintenanceState, MaintenanceStore
from dakera_actors.wal.memory import SimDisk


def test_round_trip_on_files_and_on_a_sim_disk(tmp_path: Path) -> None:
    state = MaintenanceState(True, True, "kernel patch", 1_800_000_000.5)
    for store in (MaintenanceStore(tmp_path, None), MaintenanceStore(None, SimDisk())):
        assert store.load() == MaintenanceState()  # nothing stored: not in maintenance
        store.save(state)
        assert store.load() == state
    assert not list(tmp_path.glob("*.tmp"))  # replaced atomically, no leftovers


def test_an_unreadable_file_starts_the_node_in_maintenance(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"\xc1 not msgpack")
    state = MaintenanceStore(tmp_path, None).load()
    assert state.enabled and not state.reject_requests and state.until is None
    assert STATE_FILE in state.reason and "disable" in state.reason


def test_the_end_time_is_wall_clock() -> None:
    assert not MaintenanceState(True).expired(1e12)  # no end time: until disabled
    assert not MaintenanceState(True, until=100.0).expired(99.9)
    assert MaintenanceState(True, until=100.0).expired(100.0)


def test_a_maintenance_that_ended_while_the_node_was_down_is_cleared_at_load(tmp_path: Path) -> None:
    store = MaintenanceStore(tmp_path, None)
    ended = MaintenanceState(True, True, "kernel patch", 100.0)
    store.save(ended)
    assert store.load_current(99.0) == (ended, None)  # still running: kept as it is
    assert store.load_current(100.0) == (MaintenanceState(), ended)
    assert store.load() == MaintenanceState()  # the cleared state was saved
    store.save(MaintenanceState(True, False, "open-ended"))
    assert store.load_current(1e12) == (MaintenanceState(True, False, "open-ended"), None)
