"""The session rules (pure), their WAL records, and the images that carry them (snapshots, whole
copies, the cold tier, backup parts)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from dakera_actors.backup.bundle import Manifest, Part, build_bundle, open_bundle
from dakera_actors.backup.jobs import plan_batches
from dakera_actors.cold.format import (
    ArchivedObject,
    SnapshotBody,
    decode_snapshot,
    encode_snapshot,
    snapshot_key,
)
from dakera_actors.store import validation
from dakera_actors.store.records import BadRecord, check_replicated, check_session
from dakera_actors.store.sessions import Session, new_session_id, split_session_id
from dakera_actors.store.shard import ShardSet

T0 = 1_800_000_000.0


def session(timeout: int = 100, **kw: Any) -> Session:
    return Session(**{"id": "a1~s", "agent_id": "a1", "started_at": T0, "last_activity_at": T0, "timeout": timeout,
                      **kw})


# -- the rules -----------------------------------------------------------------------------------
def test_an_open_session_is_active_until_its_idle_deadline_then_ended_there_for_inactivity() -> None:
    s = session()
    assert s.idle_deadline() == T0 + 100
    assert s.active(T0 + 99.9) and s.state(T0 + 99.9) == "active"
    assert not s.active(T0 + 100)
    ended = s.at(T0 + 500)
    assert (ended.ended_at, ended.ended_reason, ended.idle_deadline()) == (T0 + 100, "idle", None)
    assert s.at(T0 + 50) is s  # nothing worked out before the deadline


def test_a_timeout_of_zero_never_ends_a_session() -> None:
    s = session(timeout=0)
    assert s.idle_deadline() is None and s.active(T0 + 10**9)


def test_activity_moves_the_deadline_but_never_reopens_or_goes_back() -> None:
    s = session().touched(T0 + 60)
    assert (s.last_activity_at, s.idle_deadline()) == (T0 + 60, T0 + 160)
    assert s.touched(T0 + 30) == s  # an older time changes nothing
    assert s.touched(T0 + 200) == s  # idle-ended at T0 + 160: a touch does not re-open it
    closed = s.closed(T0 + 70, "done")
    assert closed.touched(T0 + 80) == closed


def test_ending_keeps_the_first_end_its_reason_and_summary() -> None:
    s = session().closed(T0 + 10, "first")
    assert (s.ended_at, s.ended_reason, s.summary) == (T0 + 10, "client", "first")
    assert s.closed(T0 + 20, "second") == s
    idle = session().closed(T0 + 150, "late")  # past the deadline: the idle end stands, nothing written
    assert idle == session()
    assert (idle.at(T0 + 150).ended_reason, idle.at(T0 + 150).summary) == ("idle", None)


def test_the_json_names_both_ids_and_the_state_at_the_time_asked() -> None:
    s = session(metadata={"k": 1})
    j = s.to_json(T0 + 1, 3)
    assert (j["id"], j["session_id"], j["session_state"], j["idle_deadline_at"], j["memory_count"]) == \
        ("a1~s", "a1~s", "active", int(T0) + 100, 3)
    j = s.to_json(T0 + 101, 0)
    assert (j["session_state"], j["ended_reason"], j["ended_at"], j["idle_since"], j["idle_deadline_at"]) == \
        ("ended", "idle", int(T0) + 100, int(T0), None)
    assert Session.from_record(s.to_record()) == s


def test_session_ids_carry_their_agent() -> None:
    sid = new_session_id("agent.one", random.Random(1))
    assert split_session_id(sid) == ("agent.one", sid.split("~")[1]) and len(sid.split("~")[1]) == 24
    for bad in ("plain", "~x", "a~", "a~b~c", "a~" + "x" * 65, "a~b c"):
        assert split_session_id(bad) is None, bad
        with pytest.raises(validation.Invalid):
            validation.session_id(bad)
    with pytest.raises(validation.Invalid):
        validation.session_id("_dakera_x~s")  # the agent part is held to the agent rules


# -- records and the shard -----------------------------------------------------------------------
def test_session_records_are_checked_before_they_are_logged() -> None:
    good = session().to_record()
    check_session(good)
    for change in ({"id": "b1~s"}, {"t": -1}, {"t": 2_592_001}, {"er": "bored"}, {"m": []}, {"sa": "x"},
                   {"su": 5}, {"it": 1.5}):
        with pytest.raises(BadRecord):
            check_session({**good, **change})
    with pytest.raises(BadRecord):
        check_session({k: v for k, v in good.items() if k != "su"})
    check_replicated("session_start", {"s": good}, 4)
    check_replicated("session_touch", {"id": "a1~s", "at": T0}, 4)
    check_replicated("session_end", {"id": "a1~s", "at": T0, "summary": None}, 4)
    check_replicated("session_load", {"a": "a1", "sessions": [good], "replace": True}, 4)
    for op, body in [("session_touch", {"id": "nope", "at": T0}), ("session_end", {"id": "a1~s", "at": T0}),
                     ("session_load", {"a": "b1", "sessions": [good], "replace": True}),
                     ("session_start", {"s": {**good, "extra": 1}})]:
        with pytest.raises(BadRecord):
            check_replicated(op, body, 4)


def _set() -> ShardSet:
    return ShardSet(8, 4, str.split)


def test_the_shard_applies_session_records_and_a_put_into_an_open_session_is_activity() -> None:
    shards = _set()
    shard = shards.shard_of("a1")
    assert shards.apply(1, shard, "session_start", {"s": session().to_record()}) == session()
    # a second start of the same id keeps the first
    assert shards.apply(2, shard, "session_start", {"s": session(metadata={"x": 1}).to_record()}) == session()
    assert shards.apply(3, shard, "session_touch", {"id": "a1~s", "at": T0 + 10}).last_activity_at == T0 + 10
    assert shards.apply(4, shard, "session_touch", {"id": "a1~nope", "at": T0}) is None
    record = {"id": "m1", "a": "a1", "c": "x", "t": "episodic", "i": 0.5, "g": [], "m": {}, "s": "a1~s",
              "ca": T0 + 20, "ua": T0 + 20, "x": None}
    shards.apply(5, shard, "put", {"m": record, "v": b"\0" * 16})
    assert shards.session("a1~s").last_activity_at == T0 + 20  # type: ignore[union-attr]
    ended = shards.apply(6, shard, "session_end", {"id": "a1~s", "at": T0 + 30, "summary": "s"})
    assert (ended.ended_at, ended.summary) == (T0 + 30, "s")
    shards.apply(7, shard, "delete", {"a": "a1", "ids": ["m1"]})  # the agent's last memory goes...
    assert shards.session("a1~s") == ended  # ...its sessions stay
    assert [s.id for s in shards.sessions_of("a1")] == ["a1~s"] and shards.sessions_of("a2") == []


def test_images_carry_sessions_through_snapshots_copies_and_resets() -> None:
    shards = _set()
    shard = shards.shard_of("a1")
    shards.apply(1, shard, "session_start", {"s": session().to_record()})
    shards.apply(2, shard, "session_end", {"id": "a1~s", "at": T0 + 5, "summary": "bye"})
    for img in (shards.dump(shard), shards.snapshot(shard)):
        other = _set()
        other.load(img)
        assert other.session("a1~s") == shards.session("a1~s")
    copy = _set()
    copy.apply(1, shard, "load", {"memories": [], "sessions": img["sessions"]})
    assert copy.session("a1~s") == shards.session("a1~s")
    copy.apply(2, shard, "reset", {})
    assert copy.session("a1~s") is None


def test_a_backups_sessions_are_put_back_replacing_or_adding() -> None:
    shards = _set()
    shard = shards.shard_of("a1")
    mine = session(id="a1~mine").to_record()
    shards.apply(1, shard, "session_start", {"s": mine})
    backed = session(id="a1~old").to_record()
    shards.apply(2, shard, "session_load", {"a": "a1", "sessions": [backed], "replace": False})
    assert {s.id for s in shards.sessions_of("a1")} == {"a1~mine", "a1~old"}
    shards.apply(3, shard, "session_load", {"a": "a1", "sessions": [backed], "replace": True})
    assert {s.id for s in shards.sessions_of("a1")} == {"a1~old"}


def test_cold_snapshots_and_backup_bundles_keep_sessions() -> None:
    rec = session().to_record()
    key = snapshot_key(3, 7, 12)
    named = ArchivedObject(3, 7, 12, 12, True, key)
    body = decode_snapshot(encode_snapshot(SnapshotBody(3, 7, 12, 1, [], [rec])), named)
    assert body.sessions == [rec]
    old = decode_snapshot(encode_snapshot(SnapshotBody(3, 7, 12, 1, [])), named)
    assert old.sessions == []
    manifest = Manifest("b1", "n", "full", "c", 8, T0, [], False, [])
    bundle = open_bundle(build_bundle(manifest, [Part(3, 1, 12, [], [rec])]), limit=1 << 20)
    assert bundle.parts[0].sessions == [rec]
    (batch,) = plan_batches(bundle.parts, None)  # an agent with sessions only is restored too
    assert (batch.agent, batch.memories, batch.request(True)["sessions"]) == ("a1", [], [rec])
