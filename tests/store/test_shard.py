"""The shard state machine: deterministic apply, idempotent replay, snapshots equal to the log."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.search import HashingEmbedder, tokenize
from dakera_actors.store.model import Memory, MemoryFilter, RecallQuery
from dakera_actors.store.shard import ShardSet, shard_of

EMB = HashingEmbedder(dim=64)
SHARDS = 4


def new_set() -> ShardSet:
    return ShardSet(SHARDS, EMB.dim, tokenize)


def put(mid: str, agent: str, content: str, t: float, **kw: Any) -> tuple[int, str, Any]:
    m = Memory(id=mid, agent_id=agent, content=content, created_at=t, updated_at=t, **kw)
    return shard_of(agent, SHARDS), "put", {"m": m.to_record(), "v": EMB.embed([content])[0].tobytes()}


def state(s: ShardSet) -> dict[int, Any]:
    return {sid: sorted((r, v) for r, v in ((msgpack.packb(m[0]), m[1]) for m in s.dump(sid)["memories"]))
            for sid, shard in s.shards.items() if shard.applied_lsn}


def apply_all(s: ShardSet, records: list[tuple[int, str, Any]], start: int = 1) -> list[Any]:
    return [s.apply(lsn, shard, op, body) for lsn, (shard, op, body) in enumerate(records, start)]


def test_shard_of_is_xxh64_mod_shards() -> None:
    import xxhash

    assert shard_of("agent-7", 64) == xxhash.xxh64_intdigest(b"agent-7") % 64
    assert ShardSet(64, 8, tokenize).shard_of("agent-7") == shard_of("agent-7", 64)


def test_put_patch_delete_and_results() -> None:
    s = new_set()
    m1 = apply_all(s, [put("m1", "a", "dark mode in the editor", 10.0, tags=("ui",))])[0]
    assert m1.id == "m1" and s.get("a", "m1", 11.0) == m1
    shard = shard_of("a", SHARDS)
    patched = s.apply(2, shard, "patch", {"a": "a", "id": "m1", "set": {"importance": 0.9, "tags": ["x"]},
                                          "v": None, "ua": 20.0})
    assert patched.importance == 0.9 and patched.tags == ("x",) and patched.updated_at == 20.0
    assert patched.created_at == 10.0
    assert s.apply(3, shard, "patch", {"a": "a", "id": "nope", "set": {"importance": 0.1}, "v": None,
                                       "ua": 21.0}) is None
    # upsert by id keeps the first created_at
    again = s.apply(4, *put("m1", "a", "light mode", 30.0)[0:3][0:1], *put("m1", "a", "light mode", 30.0)[1:])
    assert again.content == "light mode" and again.created_at == 10.0
    assert s.apply(5, shard, "delete", {"a": "a", "ids": ["m1", "m2"]}) == ["m1"]
    assert s.get("a", "m1", 31.0) is None and s.agent_ids() == []


def test_replayed_records_are_skipped() -> None:
    s = new_set()
    rec = put("m1", "a", "x", 1.0)
    assert s.apply(1, *rec) is not None
    assert s.apply(1, *rec) is None  # already applied: a replay over a snapshot
    assert s.shard(rec[0]).applied_lsn == 1


def test_expiry_hides_then_purge_removes() -> None:
    s = new_set()
    shard = shard_of("a", SHARDS)
    apply_all(s, [put("m1", "a", "short lived", 1.0, expires_at=100), put("m2", "a", "forever", 1.0)])
    assert s.get("a", "m1", 99.0) is not None and s.get("a", "m1", 100.0) is None
    assert [m.id for m in s.newest_first("a", 100.0)] == ["m2"]
    q = RecallQuery(agent_id="a", query="short lived", top_k=5)
    assert [m.id for m, _ in s.recall(q, tokenize(q.query), EMB.embed([q.query])[0], 100.0)] == ["m2"]
    assert s.shard(shard).next_expiry() == 100
    assert s.apply(3, shard, "purge", {"now": 100.0}) == 1
    assert s.shard(shard).next_expiry() is None and s.get("a", "m1", 50.0) is None


def test_delete_where_is_evaluated_at_the_records_time() -> None:
    s = new_set()
    shard = shard_of("a", SHARDS)
    apply_all(s, [put("m1", "a", "one", 1.0, tags=("x",)), put("m2", "a", "two", 2.0),
                  put("m3", "a", "three", 3.0, tags=("x",))])
    flt = MemoryFilter(tags=("x",), created_before=2.5)
    assert s.apply(4, shard, "delete_where", {"a": "a", "f": flt.to_record(), "now": 5.0}) == 1
    assert [m.id for m in s.newest_first("a", 5.0)] == ["m3", "m2"]


def test_recall_ranks_the_matching_memory_first_and_filters() -> None:
    s = new_set()
    apply_all(s, [put("m1", "a", "The user prefers dark mode in every editor", 1.0, memory_type="semantic"),
                  put("m2", "a", "The user lives in Berlin", 2.0),
                  put("m3", "a", "Dark chocolate is the user's favourite snack", 3.0)])
    q = RecallQuery(agent_id="a", query="which editor theme does the user prefer? dark mode", top_k=3)
    hits = s.recall(q, tokenize(q.query), EMB.embed([q.query])[0], 10.0)
    assert hits[0][0].id == "m1" and hits[0][1].text_score is not None
    only_episodic = RecallQuery(agent_id="a", query=q.query, top_k=3, filter=MemoryFilter(memory_type="episodic"))
    assert "m1" not in [m.id for m, _ in s.recall(only_episodic, tokenize(q.query), EMB.embed([q.query])[0], 10.0)]
    assert s.recall(RecallQuery(agent_id="nobody", query="x"), ["x"], EMB.embed(["x"])[0], 10.0) == []


ops = st.lists(
    st.tuples(st.sampled_from(["put", "put", "patch", "delete", "delete_where", "purge"]),
              st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 6), st.integers(0, 50)),
    max_size=40)


def to_records(script: list[tuple[str, str, int, int]]) -> list[tuple[int, str, Any]]:
    words = ["alpha", "beta", "gamma", "delta", "editor", "dark", "mode", "berlin"]
    out: list[tuple[int, str, Any]] = []
    for i, (op, agent, n, t) in enumerate(script):
        shard, mid = shard_of(agent, SHARDS), f"m{n}"
        text = " ".join(words[(n + k * t) % len(words)] for k in range(3))
        if op == "put":
            out.append(put(mid, agent, text, float(t), expires_at=(t + 10 if n % 3 == 0 else None),
                           importance=(n % 5) / 4))
        elif op == "patch":
            out.append((shard, "patch", {"a": agent, "id": mid, "set": {"content": text, "importance": 0.3},
                                         "v": EMB.embed([text])[0].tobytes(), "ua": float(t + i)}))
        elif op == "delete":
            out.append((shard, "delete", {"a": agent, "ids": [mid, "m0"]}))
        elif op == "delete_where":
            out.append((shard, "delete_where", {"a": agent, "f": {"min_importance": 0.5}, "now": float(t)}))
        else:
            out.append((shard, "purge", {"now": float(t)}))
    return out


@given(ops, st.integers(0, 40))
def test_snapshot_plus_tail_equals_full_replay(script: list[tuple[str, str, int, int]], cut: int) -> None:
    records = to_records(script)
    cut = min(cut, len(records))
    full = new_set()
    apply_all(full, records)
    # snapshot every shard after `cut` records, restore into a fresh set, replay the whole log over it
    head = new_set()
    apply_all(head, records[:cut])
    restored = new_set()
    for sid, shard in head.shards.items():
        if shard.applied_lsn:
            restored.load(msgpack.unpackb(msgpack.packb(head.dump(sid)), raw=False))
    apply_all(restored, records)  # records up to each shard's snapshot LSN are skipped
    assert state(restored) == state(full)
    for agent in "abcde":
        assert [m.id for m in restored.newest_first(agent, 100.0)] == [m.id for m in full.newest_first(agent, 100.0)]


class Model:
    """An independent model of the shard state machine: a dict per agent of the fields a memory
    has, written from the API's documented behaviour, not from the code under test."""

    def __init__(self) -> None:
        self.agents: dict[str, dict[str, dict[str, Any]]] = {}

    @staticmethod
    def live(m: dict[str, Any], now: float) -> bool:
        return m["expires_at"] is None or m["expires_at"] > now

    def apply(self, script_op: tuple[str, str, int, int], i: int, text: str) -> Any:
        op, agent, n, t = script_op
        mid, mems = f"m{n}", self.agents.setdefault(agent, {})
        if op == "put":  # an upsert by id: content and fields replaced, the first created_at kept
            old = mems.get(mid)
            mems[mid] = {"content": text, "importance": (n % 5) / 4, "created_at": old["created_at"] if old else t,
                         "updated_at": t, "expires_at": t + 10 if n % 3 == 0 else None}
            return ("put", mid, mems[mid]["content"], mems[mid]["created_at"])
        if op == "patch":  # only an existing memory (expired but not yet purged counts)
            if mid not in mems:
                return None
            mems[mid].update(content=text, importance=0.3, updated_at=t + i)
            return ("patch", mid, text, mems[mid]["created_at"])
        if op == "delete":
            return [x for x in dict.fromkeys([mid, "m0"]) if mems.pop(x, None) is not None]
        if op == "delete_where":  # evaluated at the record's time: expired memories are not matched
            doomed = [x for x, m in mems.items() if self.live(m, t) and m["importance"] >= 0.5]
            for x in doomed:
                del mems[x]
            return len(doomed)
        # purge drops every expired memory of the shard (all agents hashed to it)
        purged = 0
        for other, others in self.agents.items():
            if shard_of(other, SHARDS) == shard_of(agent, SHARDS):
                for x in [x for x, m in others.items() if not self.live(m, t)]:
                    del others[x]
                    purged += 1
        return purged

    def newest_first(self, agent: str, now: float) -> list[str]:
        live = [(m["created_at"], x) for x, m in self.agents.get(agent, {}).items() if self.live(m, now)]
        return [x for _, x in sorted(live, reverse=True)]


def observed(result: Any, op: str) -> Any:
    """The part of ShardSet.apply's answer the model predicts."""
    if op in ("put", "patch") and result is not None:
        return (op, result.id, result.content, result.created_at)
    return result


def script_texts(script: list[tuple[str, str, int, int]]) -> list[str]:
    words = ["alpha", "beta", "gamma", "delta", "editor", "dark", "mode", "berlin"]
    return [" ".join(words[(n + k * t) % len(words)] for k in range(3)) for _, _, n, t in script]


# few agents, ids and instants, so that operations meet: a delete_where after an expiry, a purge
# at the very instant of one, a patch of a put
crowded_ops = st.lists(
    st.tuples(st.sampled_from(["put", "put", "patch", "delete", "delete_where", "purge"]),
              st.sampled_from(["a", "b"]), st.integers(0, 6), st.sampled_from(range(0, 51, 5))),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(crowded_ops, st.integers(0, 60))
def test_apply_agrees_with_an_independent_model(script: list[tuple[str, str, int, int]], now: int) -> None:
    """Every answer, and then get/list/recall at several times (the expiry instants among them),
    against the model and a brute-force ranking."""
    records = to_records(script)
    s, model = new_set(), Model()
    for i, ((op, *_), text, (lsn, record)) in enumerate(zip(script, script_texts(script), enumerate(records, 1),
                                                          strict=True)):
        assert observed(s.apply(lsn, *record), op) == model.apply(script[i], i, text), (i, script[i])
    expiries = {m["expires_at"] for mems in model.agents.values() for m in mems.values() if m["expires_at"]}
    for at in sorted({now, *expiries}):
        check_reads(s, model, float(at))


def check_reads(s: ShardSet, model: Model, now: float) -> None:
    for agent in "ab":
        expected = model.newest_first(agent, now)
        assert [m.id for m in s.newest_first(agent, now)] == expected
        for n in range(7):
            got = s.get(agent, f"m{n}", now)
            want = model.agents.get(agent, {}).get(f"m{n}")
            if want is None or not Model.live(want, now):
                assert got is None
            else:
                assert got is not None and (got.content, got.importance, got.created_at, got.updated_at) == (
                    want["content"], want["importance"], want["created_at"], want["updated_at"])
        # vector recall against a brute-force cosine over the model's live memories
        query = "dark mode editor"
        qvec = EMB.embed([query])[0]
        q = RecallQuery(agent_id=agent, query=query, top_k=3, routing="vector")
        hits = s.recall(q, tokenize(query), qvec, now)
        brute = sorted(((float(np.dot(EMB.embed([model.agents[agent][x]["content"]])[0], qvec)), x)
                        for x in expected), key=lambda p: (-p[0], p[1]))[:3]
        assert len(hits) == len(brute)
        for (m, hit), (score, _) in zip(hits, brute, strict=True):
            assert m.id in expected  # never an expired or deleted memory
            assert abs(hit.score - score) < 1e-5  # the k best scores, in order (ties may swap ids)
            assert abs(hit.score - float(np.dot(EMB.embed([m.content])[0], qvec))) < 1e-5


@given(ops)
def test_apply_is_deterministic(script: list[tuple[str, str, int, int]]) -> None:
    records = to_records(script)
    one, two = new_set(), new_set()
    assert [repr(r) for r in apply_all(one, records)] == [repr(r) for r in apply_all(two, records)]
    assert state(one) == state(two)


def test_unknown_op_is_a_bug_not_data() -> None:
    with pytest.raises(ValueError, match="unknown WAL op"):
        new_set().apply(1, 0, "teleport", {})


def test_vectors_round_trip_through_the_record() -> None:
    s = new_set()
    shard, op, body = put("m1", "a", "hello world", 1.0)
    s.apply(1, shard, op, body)
    image = s.dump(shard)
    assert np.frombuffer(image["memories"][0][1], dtype=np.float32).shape == (EMB.dim,)


def test_replicated_records_set_the_position_and_are_applied_once() -> None:
    s = new_set()
    shard, op, body = put("m1", "a", "tea", 1.0)
    assert s.apply(1, shard, op, body, seq=1, epoch=9) is not None
    assert s.shard(shard).position == (9, 1)
    assert s.apply(0, shard, op, body, seq=1, epoch=9) is None  # a second delivery changes nothing
    shard2, op2, body2 = put("m2", "a", "coffee", 2.0)
    s.apply(2, shard2, op2, body2, seq=2, epoch=11)
    assert s.shard(shard).position == (11, 2)
    assert s.dump(shard)["seq"] == 2 and s.dump(shard)["epoch"] == 11


def test_an_install_replaces_the_shard_and_its_position() -> None:
    primary, replica = new_set(), new_set()
    records = [put(f"m{i}", "a", f"fact {i}", float(i)) for i in range(5)]
    for lsn, (shard, op, body) in enumerate(records, 1):
        primary.apply(lsn, shard, op, body, seq=lsn, epoch=3)
    shard = records[0][0]
    stale = put("old", "a", "diverged", 0.5)
    replica.apply(1, stale[0], stale[1], stale[2], seq=1, epoch=2)
    image = primary.dump(shard)
    replica.apply(2, shard, "reset", {})
    assert replica.shard(shard).position == (0, 0) and replica.shard(shard).memory_count == 0
    replica.apply(3, shard, "load", {"memories": image["memories"][:2]})
    replica.apply(4, shard, "load", {"memories": image["memories"][2:]})
    replica.apply(5, shard, "mark", {"seq": image["seq"], "epoch": image["epoch"]})
    assert replica.shard(shard).position == (3, 5)
    assert state(replica) == state(primary)
    assert replica.get("a", "old", 10.0) is None


def test_a_snapshot_image_from_before_positions_loads_at_zero() -> None:
    s = new_set()
    shard, op, body = put("m1", "a", "tea", 1.0)
    s.apply(1, shard, op, body)
    image = s.dump(shard)
    del image["seq"], image["epoch"]
    t = new_set()
    t.load(image)
    assert t.shard(shard).position == (0, 0) and t.get("a", "m1", 2.0) is not None


def test_a_frozen_shard_images_as_it_was_however_the_shard_changes_after() -> None:
    # a snapshot is imaged in a worker thread while the loop goes on applying writes
    from dakera_actors.store.shard import image

    s = new_set()
    records = [put(f"m{i}", "a1", f"fact {i}", 10.0 + i) for i in range(5)]
    apply_all(s, records)
    shard = records[0][0]
    before = s.dump(shard)
    frozen = s.freeze(shard)
    lsn = len(records) + 1
    s.apply(lsn, shard, "patch", {"a": "a1", "id": "m0", "set": {"content": "changed"}, "v": None, "ua": 99.0})
    s.apply(lsn + 1, shard, "delete", {"a": "a1", "ids": ["m1"]})
    s.apply(lsn + 2, *put("m9", "a1", "new", 50.0))
    assert image(frozen) == before
    assert s.dump(shard) != before
