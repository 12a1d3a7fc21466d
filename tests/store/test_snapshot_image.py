"""Snapshot images: version 2 carries each memory's term counts so loading does not tokenize again,
and loads to exactly the state a version 1 image (or the log) gives; version 1 images still load."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import numpy as np
import pytest

from dakera_actors.search import TOKENIZER_ID, HashingEmbedder, tokenize
from dakera_actors.store.model import Memory, RecallQuery
from dakera_actors.store.shard import ShardSet, image, shard_of, snapshot_image

EMB = HashingEmbedder(dim=32)
SHARDS = 2
WORDS = "dark mode editor flight lisbon vegan pizza tax return yoga class guitar coffee running shoes".split()


def build(n: int = 300, seed: int = 7) -> ShardSet:
    """Puts, re-puts, patches, deletes and expiries over a few agents, through the log path."""
    rng = random.Random(seed)
    s = ShardSet(SHARDS, EMB.dim, tokenize)
    lsn = 0
    for i in range(n):
        agent = f"agent-{rng.randrange(5)}"
        mid = f"m{rng.randrange(n // 2)}"  # ids repeat: upserts re-index
        content = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 9)))
        vec = EMB.embed([content])[0] * rng.choice([1.0, 3.5, 0.25])  # not always unit length
        if rng.random() < 0.05:
            vec = np.zeros(EMB.dim, dtype=np.float32)
        expires = rng.choice([None, None, 500 + i])
        m = Memory(id=mid, agent_id=agent, content=content, created_at=float(i), updated_at=float(i),
                   expires_at=expires)
        lsn += 1
        s.apply(lsn, shard_of(agent, SHARDS), "put", {"m": m.to_record(), "v": vec.astype(np.float32).tobytes()})
        if rng.random() < 0.1:
            lsn += 1
            s.apply(lsn, shard_of(agent, SHARDS), "patch", {"a": agent, "id": mid, "set": {"content": "yoga yoga"},
                                                           "v": None, "ua": float(i)})
        if rng.random() < 0.1:
            lsn += 1
            s.apply(lsn, shard_of(agent, SHARDS), "delete", {"a": agent, "ids": [f"m{rng.randrange(n // 2)}"]})
    return s


def on_disk(img: dict[str, Any]) -> dict[str, Any]:
    """As a snapshot file gives it back (msgpack round trip)."""
    return msgpack.unpackb(msgpack.packb(img, use_bin_type=True), raw=False, strict_map_key=False)


def loaded(images: list[dict[str, Any]]) -> ShardSet:
    s = ShardSet(SHARDS, EMB.dim, tokenize)
    for img in images:
        s.load(on_disk(img))
    return s


def index_state(s: ShardSet) -> dict[str, Any]:
    """Everything the indexes hold, bit for bit."""
    out: dict[str, Any] = {}
    for shard in s.shards.values():
        for agent, data in shard.agents.items():
            v, t = data.index.vectors, data.index.text
            out[agent] = (v._keys, v._mat.tobytes(), v.capacity, t._doc_tf, t._doc_len, t._total_len,
                          {term: dict(p) for term, p in t._postings.items()}, data.memories, data.vectors)
        out[f"expiries-{shard.id}"] = sorted(shard.expiries)
        out[f"pos-{shard.id}"] = (shard.applied_lsn, shard.seq, shard.epoch)
    return out


def recalls(s: ShardSet) -> list[Any]:
    found = []
    for agent in (f"agent-{i}" for i in range(5)):
        for text in ("dark mode", "vegan pizza in lisbon", "yoga", "tax"):
            for routing in ("hybrid", "vector", "bm25"):
                for fusion in ("minmax", "rrf"):
                    q = RecallQuery(agent_id=agent, query=text, top_k=7, routing=routing, fusion=fusion)
                    hits = s.recall(q, tokenize(text), EMB.embed([text])[0], now=0.0)
                    found.append([(m.id, h.score, h.vector_score, h.text_score) for m, h in hits])
    return found


def rounded(found: list[Any]) -> list[Any]:
    return [[(mid, *(None if x is None else round(x, 5) for x in scores)) for mid, *scores in hits] for hits in found]


def test_version_2_image_carries_term_counts_and_loads_to_the_same_state_as_version_1() -> None:
    src = build()
    v2 = [src.snapshot(sid) for sid in src.shards]
    v1 = [src.dump(sid) for sid in src.shards]
    assert all(img["v"] == 2 and img["tok"] == TOKENIZER_ID and len(img["tf"]) == len(img["memories"]) for img in v2)
    assert all(img["v"] == 1 and "tf" not in img for img in v1)
    from_v2, from_v1 = loaded(v2), loaded(v1)
    # bit for bit the state a version 1 image gives (row order follows the image, not the history)
    assert index_state(from_v2) == index_state(from_v1)
    assert recalls(from_v2) == recalls(from_v1)
    # against the live set only to float32 rounding: a matrix-vector product's last bits depend on
    # where a row sits, and a restore (of either version) lays rows out in image order
    assert rounded(recalls(from_v2)) == rounded(recalls(src))
    assert any(hits for hits in recalls(from_v2))


def test_the_counts_are_what_loading_uses() -> None:
    """A version 2 image is indexed from its counts (so the test above can fail): doctored counts
    show up in BM25 results."""
    src = build()
    sid = next(iter(src.shards))
    img = on_disk(src.snapshot(sid))
    img["tf"] = [{"zzzunique": 1} for _ in img["tf"]]
    s = ShardSet(SHARDS, EMB.dim, tokenize)
    s.load(img)
    agent = img["memories"][0][0]["a"]
    q = RecallQuery(agent_id=agent, query="zzzunique", top_k=3, routing="bm25")
    assert s.recall(q, ["zzzunique"], EMB.embed(["x"])[0], now=0.0)


def test_counts_from_another_tokenizer_are_ignored() -> None:
    src = build()
    images = [on_disk(src.snapshot(sid)) for sid in src.shards]
    for img in images:
        img["tok"] = "t0:an-older-tokenizer"
        img["tf"] = [{"zzzunique": 1} for _ in img["tf"]]
    assert index_state(loaded(images)) == index_state(loaded([image(src.freeze(sid)) for sid in src.shards]))


def test_a_set_with_its_own_tokenizer_writes_and_reads_no_counts() -> None:
    src = build()
    custom = ShardSet(SHARDS, EMB.dim, lambda text: text.split())
    assert custom.tokenizer_id is None
    for sid in src.shards:
        custom.load(on_disk(src.snapshot(sid)))  # counts of the default tokenizer: not used
        assert "tf" not in custom.snapshot(sid)
    agent = next(a for sh in custom.shards.values() for a in sh.agents)
    data = custom._agent(agent, create=False)
    assert data is not None
    for mid, m in data.memories.items():
        assert data.index.text.term_counts(mid) == {w: m.content.split().count(w) for w in m.content.split()}


def test_a_version_1_snapshot_file_still_loads(tmp_path: Any) -> None:
    from dakera_actors.wal.snapshot import SnapshotStore

    src = build()
    store = SnapshotStore(tmp_path)
    for sid in src.shards:
        store.write(sid, src.shard(sid).applied_lsn, image(src.freeze(sid)))
    s = ShardSet(SHARDS, EMB.dim, tokenize)
    for sid in store.all_latest():
        found = store.latest(sid)
        assert found is not None and found[1]["v"] == 1
        s.load(found[1])
    assert index_state(s) == index_state(loaded([src.snapshot(sid) for sid in src.shards]))
    assert rounded(recalls(s)) == rounded(recalls(src))


def test_snapshot_image_without_counts_is_version_1() -> None:
    src = build()
    sid = next(iter(src.shards))
    assert snapshot_image(src.freeze(sid)) == image(src.freeze(sid))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_vector_load_is_bit_for_bit_add(seed: int) -> None:
    from dakera_actors.search import VectorIndex

    rng = np.random.default_rng(seed)
    for count in (1, 63, 64, 65, 200, 1000):
        mat = rng.standard_normal((count, 24)).astype(np.float32) * rng.uniform(0.01, 100, (count, 1)).astype(np.float32)
        mat[:: 17] = 0.0
        keys = [f"k{i}" for i in range(count)]
        one, bulk = VectorIndex(24), VectorIndex(24)
        for k, row in zip(keys, mat, strict=True):
            one.add(k, row)
        bulk.add_many(keys, [row.tobytes() for row in mat])
        assert one.capacity == bulk.capacity and one._keys == bulk._keys and one._rows == bulk._rows
        assert one._mat.tobytes() == bulk._mat.tobytes()


def test_bulk_vector_load_refuses_what_add_refuses() -> None:
    from dakera_actors.search import VectorIndex

    with pytest.raises(ValueError, match="non-finite"):
        VectorIndex(3).add_many(["a", "b"], [np.ones(3, np.float32).tobytes(),
                                             np.array([1, np.inf, 0], np.float32).tobytes()])
    with pytest.raises(ValueError, match="dimensions"):
        VectorIndex(3).add_many(["a"], [np.ones(4, np.float32).tobytes()])
    full = VectorIndex(3)
    full.add("x", np.ones(3, np.float32))
    with pytest.raises(ValueError, match="empty"):
        full.add_many(["a"], [np.ones(3, np.float32).tobytes()])


def test_a_frozen_shard_with_counts_images_as_it_was_however_the_shard_changes_after() -> None:
    # the counts are the index's own dicts: re-indexing must replace them, never change them
    s = build()
    sid = next(iter(s.shards))
    before = on_disk(s.snapshot(sid))
    frozen = s.freeze(sid, terms=True)
    agent = before["memories"][0][0]["a"]
    mid = before["memories"][0][0]["id"]
    lsn = s.shard(sid).applied_lsn
    s.apply(lsn + 1, sid, "patch", {"a": agent, "id": mid, "set": {"content": "changed words"}, "v": None, "ua": 9.0})
    s.apply(lsn + 2, sid, "delete", {"a": agent, "ids": [before["memories"][1][0]["id"]]})
    assert on_disk(snapshot_image(frozen)) == before
    assert on_disk(s.snapshot(sid)) != before


def test_term_counts_load_to_the_index_tokens_build() -> None:
    from dakera_actors.search import Bm25Index

    docs = {f"d{i}": tokenize(text) for i, text in enumerate(
        ["dark mode dark", "", "running runs ran", "tax return in march", "the the the", "dark tax"])}
    one, counted, loaded_ = Bm25Index(), Bm25Index(), Bm25Index()
    for key, tokens in docs.items():
        one.add(key, tokens)
        counted.add_counts(key, {t: tokens.count(t) for t in tokens})
    loaded_.load_counts(list(docs), [{t: tokens.count(t) for t in tokens} for tokens in docs.values()])
    for index in (counted, loaded_):
        assert (index._doc_tf, index._doc_len, index._total_len, index._postings) == \
               (one._doc_tf, one._doc_len, one._total_len, one._postings)
        assert index.scores(tokenize("dark tax running")) == one.scores(tokenize("dark tax running"))
    with pytest.raises(ValueError, match="empty"):
        loaded_.load_counts(["x"], [{}])
