"""AgentIndex.search: routings, fusions, filters, min-max edge cases, scale."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dakera_actors.search import AgentIndex, HashingEmbedder, Hit, tokenize

EMB = HashingEmbedder()
EXAMPLE = {
    "pref": "The user prefers dark mode in every editor",
    "city": "The user lives in Berlin",
    "food": "Dark chocolate is the user's favourite snack",
}
QUERY = "which editor theme does the user prefer? dark mode"


def build(docs: dict[str, str]) -> AgentIndex:
    ix = AgentIndex(EMB.dim)
    vecs = EMB.embed(list(docs.values()))
    for (key, text), v in zip(docs.items(), vecs, strict=True):
        ix.add(key, tokenize(text), v)
    return ix


def search(ix: AgentIndex, query: str, **kw: object) -> list[Hit]:
    return ix.search(tokenize(query), EMB.embed([query])[0], **kw)  # type: ignore[arg-type]


def corpus(n: int, seed: int = 7) -> dict[str, str]:
    rng = random.Random(seed)
    subjects = ["The user", "My sister", "Our team", "The manager", "Alice", "Bob"]
    verbs = ["likes", "prefers", "visited", "bought", "cooked", "reviewed", "booked", "fixed"]
    objects = ["dark mode", "green tea", "a trip to Lisbon", "the new laptop", "pasta carbonara",
               "the quarterly report", "a flight to Tokyo", "the kitchen sink", "jazz concerts",
               "mountain bikes", "python scripts", "the garden fence"]
    tails = ["yesterday", "every morning", "last summer", "on Fridays", "with friends", "again", ""]
    return {f"m{i:05d}": " ".join(filter(None, [rng.choice(subjects), rng.choice(verbs), rng.choice(objects),
                                                 rng.choice(tails)])) for i in range(n)}


@pytest.mark.parametrize("routing", ["hybrid", "auto", "bm25", "vector"])
@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_example_ranks_the_matching_memory_first(routing: str, fusion: str) -> None:
    hits = search(build(EXAMPLE), QUERY, routing=routing, fusion=fusion)
    assert hits[0].key == "pref"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if routing in ("hybrid", "auto"):
        assert all(h.vector_score is not None and h.text_score is not None for h in hits)
    elif routing == "bm25":
        assert all(h.vector_score is None and h.text_score == h.score for h in hits)
    else:
        assert all(h.text_score is None and h.vector_score == h.score for h in hits)


def test_raw_scores_are_reported() -> None:
    ix = build(EXAMPLE)
    q_tok, q_vec = tokenize(QUERY), EMB.embed([QUERY])[0]
    vec = {h.key: h.vector_score for h in ix.search(q_tok, q_vec, routing="vector")}
    txt = {h.key: h.text_score for h in ix.search(q_tok, q_vec, routing="bm25")}
    for h in ix.search(q_tok, q_vec, routing="hybrid"):
        assert h.vector_score == vec[h.key] and h.text_score == txt[h.key]


def test_minmax_values_on_the_example() -> None:
    hits = {h.key: h for h in search(build(EXAMPLE), QUERY, vector_weight=0.25)}
    v = {k: h.vector_score for k, h in hits.items()}
    t = {k: h.text_score for k, h in hits.items()}
    for k, h in hits.items():
        assert v[k] is not None and t[k] is not None
        vn = (v[k] - min(v.values())) / (max(v.values()) - min(v.values()))  # type: ignore[operator,type-var]
        tn = (t[k] - min(t.values())) / (max(t.values()) - min(t.values()))  # type: ignore[operator,type-var]
        assert h.score == pytest.approx(0.25 * vn + 0.75 * tn, abs=1e-12)
    assert hits["pref"].score == pytest.approx(1.0)


def test_rrf_values() -> None:
    hits = search(build(EXAMPLE), QUERY, fusion="rrf", vector_weight=0.3)
    # the example's two lists agree on the order pref, food, city
    assert [h.key for h in hits] == ["pref", "food", "city"]
    for rank, h in enumerate(hits, start=1):
        assert h.score == pytest.approx(0.3 / (60 + rank) + 0.7 / (60 + rank), abs=1e-15)


def test_rrf_missing_from_text_list_gets_zero_text_part() -> None:
    ix = build({"a": "green tea every morning", "b": "black coffee at night"})
    hits = {h.key: h for h in search(ix, "green tea", fusion="rrf", vector_weight=0.5)}
    assert hits["b"].text_score is None
    assert hits["b"].score == pytest.approx(0.5 / 62, abs=1e-15)
    assert hits["a"].score == pytest.approx(0.5 / 61 + 0.5 / 61, abs=1e-15)


def test_top_k_respected() -> None:
    ix = build(corpus(50))
    for k in (1, 3, 10, 50, 80):
        for routing in ("hybrid", "vector", "bm25"):
            hits = search(ix, "the user likes green tea", top_k=k, routing=routing)
            assert len(hits) <= k and len({h.key for h in hits}) == len(hits)
            if routing != "bm25":
                assert len(hits) == min(k, 50)
    full = search(ix, "the user likes green tea", top_k=50)
    assert search(ix, "the user likes green tea", top_k=5) == full[:5]


def test_candidates_filter_respected() -> None:
    docs = corpus(60)
    ix = build(docs)
    allowed = {k for i, k in enumerate(sorted(docs)) if i % 3 == 0} | {"not-indexed"}
    for routing in ("hybrid", "vector", "bm25"):
        for fusion in ("minmax", "rrf"):
            hits = search(ix, "Alice bought a flight to Tokyo", top_k=100, routing=routing, fusion=fusion,
                          candidates=allowed)
            assert hits and {h.key for h in hits} <= allowed
    assert search(ix, "Alice", candidates=set()) == []
    # scores over a subset are the full search's raw scores for those keys
    sub = {h.key: h.vector_score for h in search(ix, "green tea", routing="vector", candidates=allowed, top_k=100)}
    full = {h.key: h.vector_score for h in search(ix, "green tea", routing="vector", top_k=100)}
    assert sub == {k: full[k] for k in sub}


def test_minmax_single_document() -> None:
    ix = build({"only": "The user prefers dark mode"})
    [hit] = search(ix, "dark mode", vector_weight=0.4)
    assert hit.score == pytest.approx(1.0)  # both lists have one positive score: each normalises to 1
    [hit] = search(ix, "zebra crossings", vector_weight=0.4)
    assert hit.text_score is None and hit.score == pytest.approx(0.4 if hit.vector_score > 0 else 0.0)  # type: ignore[operator]


def test_minmax_all_equal_scores() -> None:
    ix = build({"b": "green tea", "a": "green tea", "c": "green tea"})
    hits = search(ix, "green tea", vector_weight=0.5)
    assert [h.key for h in hits] == ["a", "b", "c"]  # ties broken by key
    assert all(h.score == pytest.approx(1.0) for h in hits)
    # all-equal non-positive scores normalise to 0
    ix2 = AgentIndex(4)
    ix2.add("x", ["tea"], np.array([1.0, 0, 0, 0]))
    ix2.add("y", ["tea"], np.array([1.0, 0, 0, 0]))
    hits = ix2.search(["coffee"], np.array([0, 1.0, 0, 0]), vector_weight=0.5)
    assert [(h.key, h.score, h.text_score) for h in hits] == [("x", 0.0, None), ("y", 0.0, None)]


@pytest.mark.parametrize("routing", ["hybrid", "vector"])
def test_identical_memories_score_identically_at_any_row(routing: str) -> None:
    """The same vector scores the same wherever its row sits: BLAS's matrix-vector product does not
    (its kernels take rows in blocks of different widths), and min-max then stretched that last-bit
    noise into a 0-versus-1 split, so which duplicate came first depended on row positions, which
    differ between a primary and a replica that loaded a snapshot."""
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 7, 9, 17, 33):
        ix = AgentIndex(EMB.dim)
        vec = EMB.embed(["note about the topic of agent one"])[0]
        for i in range(n):
            ix.add(f"m{i:02d}", tokenize("note about the topic of agent one"), vec)
        for _ in range(20):
            query = (vec * 0.6 + rng.standard_normal(EMB.dim) * 0.3).astype(np.float32)
            hits = ix.search(tokenize("note topic"), query, top_k=n, routing=routing)
            assert len({h.score for h in hits}) == 1, (n, [h.score for h in hits])
            assert [h.key for h in hits] == [f"m{i:02d}" for i in range(n)]  # every tie by key


def test_no_text_match() -> None:
    ix = build(EXAMPLE)
    assert search(ix, "zebra crossings", routing="bm25") == []
    assert search(ix, "", routing="bm25") == []
    hybrid = search(ix, "zebra crossings", vector_weight=0.5)
    assert len(hybrid) == 3 and all(h.text_score is None for h in hybrid)
    assert max(h.score for h in hybrid) == pytest.approx(0.5)
    assert [h.key for h in hybrid] == [h.key for h in search(ix, "zebra crossings", routing="vector")]


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_weights_zero_and_one_reduce_to_single_lists(fusion: str) -> None:
    ix = build(corpus(200, seed=3))
    for q in ("Bob cooked pasta carbonara with friends", "the manager reviewed the quarterly report",
              "a trip to Lisbon last summer"):
        vec = [h.key for h in search(ix, q, routing="vector", top_k=200)]
        txt = [h.key for h in search(ix, q, routing="bm25", top_k=200)]
        w1 = search(ix, q, fusion=fusion, vector_weight=1.0, top_k=200)
        w0 = search(ix, q, fusion=fusion, vector_weight=0.0, top_k=200)
        assert [h.key for h in w1] == vec
        # with w = 0 the text list's order holds (min-max gives its last entry 0, like a non-match)
        assert [h.key for h in w0 if h.text_score is not None] == txt
        if fusion == "rrf":
            assert [h.key for h in w0][: len(txt)] == txt


def test_remove_and_replace() -> None:
    ix = build(EXAMPLE)
    assert len(ix) == 3 and "pref" in ix
    assert ix.remove("pref") and not ix.remove("pref")
    assert len(ix) == 2 and "pref" not in {h.key for h in search(ix, QUERY)}
    ix.add("city", tokenize("The user prefers dark mode in vim"), EMB.embed(["The user prefers dark mode in vim"])[0])
    assert len(ix) == 2 and search(ix, QUERY)[0].key == "city"
    assert sorted(ix) == ["city", "food"]


def test_bad_arguments() -> None:
    ix = build(EXAMPLE)
    q, v = tokenize(QUERY), EMB.embed([QUERY])[0]
    for kw, msg in [({"routing": "fuzzy"}, "routing"), ({"fusion": "sum"}, "fusion"),
                    ({"vector_weight": 1.5}, "vector_weight"), ({"vector_weight": -0.1}, "vector_weight"),
                    ({"top_k": 0}, "top_k")]:
        with pytest.raises(ValueError, match=msg):
            ix.search(q, v, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query vector"):
        ix.search(q, None)
    assert ix.search(q, None, routing="bm25")[0].key == "pref"
    with pytest.raises(ValueError):
        ix.add("bad", ["x"], np.ones(3))
    assert len(ix) == 3


def test_scale_ten_thousand_memories() -> None:
    docs = corpus(10_000, seed=11)
    ix = AgentIndex(EMB.dim)
    vecs = EMB.embed(list(docs.values()))
    for (key, text), v in zip(docs.items(), vecs, strict=True):
        ix.add(key, tokenize(text), v)
    assert len(ix) == 10_000
    hits = search(ix, "Alice booked a flight to Tokyo on Fridays", top_k=10)
    assert len(hits) == 10 and len({h.key for h in hits}) == 10
    assert all(isinstance(h, Hit) and h.vector_score is not None for h in hits)
