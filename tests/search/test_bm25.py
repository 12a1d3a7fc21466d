"""Bm25Index: exact values on a hand-computed example; incremental upkeep equals a rebuild."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.search.index import Bm25Index

# N = 3, lengths 3, 1, 2: average 2; k1 = 1.2, b = 0.75
DOCS = {"d1": ["cat", "cat", "dog"], "d2": ["dog"], "d3": ["bird", "fish"]}


def small() -> Bm25Index:
    ix = Bm25Index()
    for k, toks in DOCS.items():
        ix.add(k, toks)
    return ix


def test_hand_computed_scores() -> None:
    ix = small()
    assert len(ix) == 3 and ix.total_length == 6
    # idf(cat) = ln(1 + (3 - 1 + 0.5) / (1 + 0.5)) = ln(8/3); idf(dog) = ln(1 + 1.5 / 2.5) = ln(1.6)
    assert ix.idf("cat") == pytest.approx(math.log(8 / 3), rel=1e-15)
    assert ix.idf("dog") == pytest.approx(math.log(1.6), rel=1e-15)
    # d1: tf(cat) = 2, |d1| = 3: denominator term k1 * (1 - b + b * 3/2) = 1.2 * 1.375 = 1.65
    cat_d1 = math.log(8 / 3) * 2 * 2.2 / (2 + 1.65)
    dog_d1 = math.log(1.6) * 1 * 2.2 / (1 + 1.65)
    # d2: |d2| = 1: 1.2 * (0.25 + 0.75 * 0.5) = 0.75
    dog_d2 = math.log(1.6) * 2.2 / (1 + 0.75)
    assert ix.scores(["cat"]) == {"d1": pytest.approx(cat_d1, rel=1e-12)}
    assert cat_d1 == pytest.approx(1.1823695104798893, abs=1e-12)
    s = ix.scores(["dog"])
    assert s.keys() == {"d1", "d2"}
    assert s["d1"] == pytest.approx(0.39019169220400696, abs=1e-12)
    assert s["d2"] == pytest.approx(0.5908617053374963, abs=1e-12)
    assert s["d2"] == pytest.approx(dog_d2, rel=1e-12)
    both = ix.scores(["cat", "dog", "cat"])  # a repeated query term counts once
    assert both["d1"] == pytest.approx(cat_d1 + dog_d1, rel=1e-12)
    assert both["d2"] == pytest.approx(dog_d2, rel=1e-12)
    assert ix.scores(["unicorn"]) == {} and ix.scores([]) == {}


def test_candidates_restrict() -> None:
    ix = small()
    full = ix.scores(["dog", "fish"])
    assert ix.scores(["dog", "fish"], {"d2", "d3", "nope"}) == {"d2": full["d2"], "d3": full["d3"]}
    assert ix.scores(["dog"], set()) == {}
    assert ix.scores(["dog"], ["d1"]) == {"d1": full["d1"]}


def test_idf_never_negative() -> None:
    ix = Bm25Index()
    for i in range(10):
        ix.add(f"k{i}", ["common"])
    assert 0 < ix.idf("common") < 0.1
    assert all(v > 0 for v in ix.scores(["common"]).values())


def test_remove_replace_and_empty_docs() -> None:
    ix = small()
    assert ix.remove("d3") and not ix.remove("d3")
    assert ix.document_frequency("bird") == 0 and ix.total_length == 4
    ix.add("d1", ["bird"])  # replace
    assert ix.scores(["cat"]) == {} and set(ix.scores(["bird"])) == {"d1"}
    ix.add("empty", [])
    assert len(ix) == 3 and "empty" not in ix.scores(["bird", "dog"])
    empty = Bm25Index()
    assert empty.scores(["x"]) == {} and empty.idf("x") == 0.0


def test_parameters_validated() -> None:
    with pytest.raises(ValueError):
        Bm25Index(b=1.5)
    with pytest.raises(ValueError):
        Bm25Index(k1=-1)


VOCAB = ["a", "b", "c", "d", "e", "f"]
KEYS = [f"k{i}" for i in range(6)]
op: st.SearchStrategy[tuple[str, str, list[str]]] = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(KEYS), st.lists(st.sampled_from(VOCAB), max_size=6)),
    st.tuples(st.just("remove"), st.sampled_from(KEYS), st.just([])),
)


@given(ops=st.lists(op, max_size=30), query=st.lists(st.sampled_from(VOCAB + ["zz"]), min_size=1, max_size=4),
       cands=st.none() | st.sets(st.sampled_from(KEYS + ["ghost"])))
def test_incremental_equals_rebuild(ops: list[tuple[str, str, list[str]]], query: list[str],
                                    cands: set[str] | None) -> None:
    ix = Bm25Index()
    model: dict[str, list[str]] = {}
    for kind, key, toks in ops:
        if kind == "add":
            ix.add(key, toks)
            model[key] = toks
        else:
            assert ix.remove(key) == (key in model)
            model.pop(key, None)
    fresh = Bm25Index()
    for key in sorted(model):
        fresh.add(key, model[key])
    assert len(ix) == len(model) and ix.total_length == sum(map(len, model.values()))
    for term in VOCAB:
        assert ix.document_frequency(term) == sum(term in t for t in model.values())
    for q in [query, *([t] for t in VOCAB)]:
        got, want = ix.scores(q, cands), fresh.scores(q, cands)
        assert got.keys() == want.keys()
        for k in want:
            assert abs(got[k] - want[k]) <= 1e-9
