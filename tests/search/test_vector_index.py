"""VectorIndex: swap-remove bookkeeping, growth, cosine scores against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dakera_actors.search.index import VectorIndex

DIM = 8
KEYS = [f"k{i}" for i in range(8)]


def vec(seed: int) -> np.ndarray:
    if seed == 0:
        return np.zeros(DIM, dtype=np.float32)  # an empty text's embedding
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def check_consistent(ix: VectorIndex, model: dict[str, np.ndarray]) -> None:
    assert len(ix) == len(model) and set(ix) == set(model)
    assert ix.capacity >= max(1, len(ix))
    for row in range(len(ix)):
        assert ix.row_of(ix.key_at(row)) == row
    for k, v in model.items():
        assert np.allclose(ix.vector(k), unit(v), atol=1e-6)


op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(KEYS), st.integers(0, 50)),
    st.tuples(st.just("remove"), st.sampled_from(KEYS), st.just(0)),
)


@given(ops=st.lists(op, max_size=40), qseed=st.integers(1, 1000),
       cands=st.none() | st.sets(st.sampled_from(KEYS + ["ghost"])))
def test_random_sequences_match_brute_force(ops: list[tuple[str, str, int]], qseed: int,
                                            cands: set[str] | None) -> None:
    ix = VectorIndex(DIM, initial_capacity=2)
    model: dict[str, np.ndarray] = {}
    for kind, key, seed in ops:
        if kind == "add":
            ix.add(key, vec(seed))
            model[key] = vec(seed)
        else:
            assert ix.remove(key) == (key in model)
            model.pop(key, None)
        check_consistent(ix, model)
    q = vec(qseed)
    keys, scores = ix.scores(q, cands)
    want = {k: float(unit(v) @ unit(q)) for k, v in model.items() if cands is None or k in cands}
    assert sorted(keys) == sorted(want) and len(keys) == len(scores)
    assert scores.dtype == np.float64
    for k, s in zip(keys, scores, strict=True):
        assert abs(s - want[k]) < 1e-5


def test_growth_doubles_and_swap_remove() -> None:
    ix = VectorIndex(DIM, initial_capacity=2)
    for i in range(5):
        ix.add(f"k{i}", vec(i + 1))
    assert ix.capacity == 8 and len(ix) == 5
    ix.remove("k1")  # the last row (k4) moves into row 1
    assert ix.key_at(1) == "k4" and ix.row_of("k4") == 1 and "k1" not in ix
    assert np.allclose(ix.vector("k4"), unit(vec(5)), atol=1e-6)
    ix.add("k0", vec(9))  # replace in place
    assert ix.row_of("k0") == 0 and len(ix) == 4
    assert not ix.remove("k1")


def test_scores_are_cosines_and_zero_vectors_score_zero() -> None:
    ix = VectorIndex(3)
    ix.add("x", np.array([2.0, 0.0, 0.0]))
    ix.add("y", np.array([1.0, 1.0, 0.0]))
    ix.add("z", np.zeros(3))
    keys, s = ix.scores(np.array([5.0, 0.0, 0.0]))
    got = dict(zip(keys, s.tolist(), strict=True))
    assert got["x"] == pytest.approx(1.0) and got["y"] == pytest.approx(2**-0.5) and got["z"] == 0.0
    none_keys, none_scores = ix.scores(np.ones(3), set())
    assert none_keys == [] and none_scores.shape == (0,)
    empty_keys, empty_scores = VectorIndex(3).scores(np.ones(3))
    assert empty_keys == [] and empty_scores.shape == (0,)


def test_rejects_bad_vectors() -> None:
    ix = VectorIndex(3)
    with pytest.raises(ValueError, match="dimensions"):
        ix.add("a", np.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        ix.add("a", np.array([1.0, np.nan, 0.0]))
    assert len(ix) == 0
    with pytest.raises(ValueError):
        VectorIndex(0)
