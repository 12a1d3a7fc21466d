"""Re-embedding, pure: shards record their embedder; ``revec`` stages new vectors (dropping those a
write made stale), ``reembed`` switches a shard only when every memory has one; staged vectors
survive a snapshot (a restart resumes); two copies applying the same records end identical."""

from __future__ import annotations

from typing import Any

import numpy as np

from dakera_actors.search import make_embedder
from dakera_actors.store.model import Memory, RecallQuery
from dakera_actors.store.reembed import progress
from dakera_actors.store.shard import ShardSet, content_hash, pending

OLD, NEW = make_embedder("hashing:256"), make_embedder("hashing:384")
SHARDS = 4


def put_body(mid: str, agent: str, content: str, embedder: Any = OLD, *, tagged: bool = True) -> dict[str, Any]:
    memory = Memory(id=mid, agent_id=agent, content=content, created_at=1.0, updated_at=1.0)
    body = {"m": memory.to_record(), "v": embedder.embed([content])[0].tobytes()}
    if tagged:
        body["e"] = embedder.identity
    return body


def written(identity_of_node: Any = NEW) -> tuple[ShardSet, list[tuple[int, str, Any]]]:
    """A node now on ``identity_of_node`` over records written with hashing:256."""
    shards = ShardSet(SHARDS, identity_of_node.dim, lambda t: t.lower().split(), identity_of_node.identity)
    records = [(shards.shard_of("a"), "put", put_body(f"m{i}", "a", f"fact {i} about tea")) for i in range(10)]
    lsn = 0
    for shard, op, body in records:
        lsn += 1
        shards.apply(lsn, shard, op, body)
    return shards, records


def revec(shards: ShardSet, shard: int, limit: int) -> dict[str, Any]:
    work = pending(shards.shard(shard), NEW.identity, NEW.dim)[:limit]
    vectors = NEW.embed([c for _a, _m, c in work])
    return {"e": NEW.identity, "d": NEW.dim,
            "vs": [[a, m, content_hash(c), vectors[n].tobytes()] for n, (a, m, c) in enumerate(work)]}


def test_a_shard_records_the_embedder_of_its_vectors() -> None:
    shards, _ = written()
    sid = shards.shard_of("a")
    assert shards.embedder_of(sid) == ("hashing:256", 256)
    assert shards.embedder_of((sid + 1) % SHARDS) == ("hashing:384", 384)  # an empty shard: the node's
    # records from before embedders were recorded: a vector of another length is hashing's
    legacy = ShardSet(SHARDS, 384, str.split, "hashing:384")
    legacy.apply(1, sid, "put", put_body("m", "a", "tea", tagged=False))
    assert legacy.embedder_of(sid) == ("hashing:256", 256)
    # and a snapshot says it
    again = ShardSet(SHARDS, 384, str.split, "hashing:384")
    again.load(shards.dump(sid))
    assert again.embedder_of(sid) == ("hashing:256", 256)


def test_staged_vectors_switch_the_shard_only_when_complete() -> None:
    shards, _ = written()
    sid = shards.shard_of("a")
    led = lambda s: True  # noqa: E731
    assert progress(shards, led).memories_remaining == 10 and progress(shards, led).shards_remaining == 1
    assert shards.apply(11, sid, "revec", revec(shards, sid, 4)) == 4
    assert progress(shards, led).memories_remaining == 6
    assert shards.apply(12, sid, "reembed", {"e": NEW.identity, "d": NEW.dim}) is False  # six missing
    assert shards.embedder_of(sid) == ("hashing:256", 256)  # queries still use the old vectors
    assert shards.apply(13, sid, "revec", revec(shards, sid, 100)) == 6
    # a write changes a staged memory's content: its staged vector is stale, the switch waits
    shards.apply(14, sid, "put", put_body("m3", "a", "fact 3 about coffee now"))
    assert [m for _a, m, _c in pending(shards.shard(sid), NEW.identity, NEW.dim)] == ["m3"]
    assert shards.apply(15, sid, "reembed", {"e": NEW.identity, "d": NEW.dim}) is False
    shards.apply(16, sid, "revec", revec(shards, sid, 100))
    assert shards.apply(17, sid, "reembed", {"e": NEW.identity, "d": NEW.dim}) is True
    assert shards.embedder_of(sid) == ("hashing:384", 384)
    assert progress(shards, led).shards_remaining == 0
    data = shards.shard(sid).agents["a"]
    for mid, memory in data.memories.items():
        assert data.vectors[mid] == NEW.embed([memory.content])[0].tobytes()
    query = "fact 7 about tea"
    hits = shards.recall(RecallQuery(agent_id="a", query=query, top_k=1, routing="vector"), query.split(),
                         NEW.embed([query])[0], 2.0)
    assert hits[0][0].id == "m7"


def test_a_snapshot_keeps_the_staged_vectors_so_a_restart_resumes() -> None:
    shards, _ = written()
    sid = shards.shard_of("a")
    shards.apply(11, sid, "revec", revec(shards, sid, 4))
    restarted = ShardSet(SHARDS, NEW.dim, lambda t: t.lower().split(), NEW.identity)
    restarted.load(shards.snapshot(sid))
    left = pending(restarted.shard(sid), NEW.identity, NEW.dim)
    assert len(left) == 6  # the four staged before the restart are not embedded again


def test_two_copies_applying_the_same_records_end_identical() -> None:
    primary, records = written()
    replica = ShardSet(SHARDS, NEW.dim, lambda t: t.lower().split(), NEW.identity)
    for lsn, (shard, op, body) in enumerate(records, 1):
        replica.apply(lsn, shard, op, body)
    sid = primary.shard_of("a")
    log = [("revec", revec(primary, sid, 5))]
    log.append(("revec", revec(primary, sid, 100)))
    log.append(("reembed", {"e": NEW.identity, "d": NEW.dim}))
    for n, (op, body) in enumerate(log, 100):
        assert primary.apply(n, sid, op, body) == replica.apply(n, sid, op, body)
    assert primary.shard(sid).agents["a"].vectors == replica.shard(sid).agents["a"].vectors
    assert replica.embedder_of(sid) == ("hashing:384", 384)


def test_a_vector_of_another_embedder_is_not_mixed_in() -> None:
    shards, _ = written()
    sid = shards.shard_of("a")
    # in the instant of a switch a write embedded by the other embedder: indexed without a vector
    shards.apply(11, sid, "put", put_body("x", "a", "tea", NEW))
    vector = np.frombuffer(shards.shard(sid).agents["a"].vectors["x"], dtype=np.float32)
    assert vector.shape == (256,) and not vector.any()


def test_vectors_of_the_shards_own_embedder_replace_the_live_ones() -> None:
    shards, _ = written()
    sid = shards.shard_of("a")
    shards.apply(11, sid, "put", put_body("x", "a", "tea", NEW))  # indexed without a vector (above)
    fixed = OLD.embed(["tea"])[0].tobytes()
    body = {"e": OLD.identity, "d": OLD.dim, "vs": [["a", "x", content_hash("tea"), fixed]]}
    assert shards.apply(12, sid, "revec", body) == 1
    assert shards.shard(sid).agents["a"].vectors["x"] == fixed and shards.shard(sid).stage is None
    hits = shards.recall(RecallQuery(agent_id="a", query="tea", top_k=1, routing="vector"), ["tea"],
                         OLD.embed(["tea"])[0], 2.0)
    assert hits[0][0].id == "x"


def test_a_write_of_the_old_space_that_lands_after_the_switch_is_a_stand_in_and_gets_a_real_vector() -> None:
    """The race the service cannot close alone: a store embedded with the old embedder is committed
    just after its shard switched. It is kept with an all-zero stand-in (BM25 still finds it),
    listed in ``stand_ins``, and a ``revec`` in the shard's own space gives it a real vector."""
    shards, _ = written()
    sid = shards.shard_of("a")
    shards.apply(100, sid, "revec", revec(shards, sid, 100))
    shards.apply(101, sid, "reembed", {"e": NEW.identity, "d": NEW.dim})
    assert shards.embedder_of(sid) == (NEW.identity, NEW.dim) and not shards.shard(sid).stand_ins
    shards.apply(102, sid, "put", put_body("late", "a", "a late fact about coffee"))  # embedded by OLD
    shard = shards.shard(sid)
    assert shard.stand_ins == {("a", "late")}
    assert not shard.agents["a"].vectors["late"].strip(b"\x00")
    vector = NEW.embed(["a late fact about coffee"])[0].tobytes()
    body = {"e": NEW.identity, "d": NEW.dim, "vs": [["a", "late", content_hash("a late fact about coffee"), vector]]}
    shards.apply(103, sid, "revec", body)
    assert not shard.stand_ins and shard.agents["a"].vectors["late"] == vector
    # a snapshot of a shard with a stand-in brings it back listed (a restart still repairs it)
    shards.apply(104, sid, "put", put_body("late2", "a", "another late one"))
    again = ShardSet(SHARDS, NEW.dim, lambda t: t.lower().split(), NEW.identity)
    again.load(shards.dump(sid))
    assert again.shard(sid).stand_ins == {("a", "late2")}
