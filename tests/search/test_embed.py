"""Embedders: the hashing default, the sentence-transformers adapter, spec parsing."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from dakera_actors.search.embed import (
    DEFAULT_DIM,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)

TEXTS = [
    "The user prefers dark mode in every editor",
    "The user lives in Berlin",
    "Dark chocolate is the user's favourite snack",
    "My favorite snacks are chocolates",
    "The quarterly tax report is due on Friday",
]


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_shape_dtype_and_unit_rows() -> None:
    e = HashingEmbedder()
    m = e.embed(TEXTS)
    assert isinstance(e, Embedder)
    assert e.dim == DEFAULT_DIM == 384 and e.name == e.identity == "hashing:384"
    assert m.shape == (len(TEXTS), 384) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
    assert e.embed([]).shape == (0, 384)


def test_empty_text_gives_zero_row() -> None:
    m = HashingEmbedder().embed(["", "   ", "the of and", "?!"])
    assert m.shape == (4, 384)
    assert not m.any()


def test_deterministic_across_instances() -> None:
    a = HashingEmbedder().embed(TEXTS)
    b = HashingEmbedder().embed(TEXTS)
    assert np.array_equal(a, b)
    # batch and one-by-one agree (nothing depends on the batch)
    assert np.array_equal(a[2], HashingEmbedder().embed([TEXTS[2]])[0])


def test_deterministic_across_processes() -> None:
    code = (
        "import sys, numpy as np; from dakera_actors.search.embed import HashingEmbedder;"
        "sys.stdout.write(HashingEmbedder().embed([sys.argv[1]])[0].tobytes().hex())"
    )
    local = HashingEmbedder().embed([TEXTS[0]])[0].tobytes().hex()
    for seed in ("1", "2"):  # Python's own str hash differs between these runs
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, TEXTS[0]], env=env, capture_output=True,
                             text=True, check=True, timeout=60)
        assert out.stdout == local


def test_related_texts_score_higher_than_unrelated() -> None:
    e = HashingEmbedder()
    m = e.embed(TEXTS)
    q = e.embed(["which editor theme does the user prefer? dark mode"])[0]
    sims = m @ q
    assert int(np.argmax(sims)) == 0 and sims[0] > 0.7
    # morphology and spelling variants ("favourite"/"favorite", "snack"/"snacks") still meet
    assert cos(m[2], m[3]) > 0.35
    assert abs(cos(m[3], m[4])) < 0.15 and abs(cos(m[0], m[4])) < 0.15


def test_unrelated_texts_near_zero_on_average() -> None:
    e = HashingEmbedder()
    a = e.embed([f"alpha{i} bravo{i} charlie{i}" for i in range(50)])
    b = e.embed([f"xray{i} yankee{i} zulu{i}" for i in range(50)])
    sims = np.sum(a * b, axis=1)
    assert abs(float(sims.mean())) < 0.05


def test_dimension_argument() -> None:
    e = HashingEmbedder(dim=64)
    m = e.embed(TEXTS)
    assert m.shape == (5, 64) and e.name == "hashing:64"
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
    assert HashingEmbedder(1).embed(["x"]).shape == (1, 1)
    for bad in (0, -3, 1 << 20):
        with pytest.raises(ValueError, match="dim"):
            HashingEmbedder(bad)


def test_make_embedder_parsing() -> None:
    assert make_embedder("hashing") == HashingEmbedder(384)
    assert make_embedder(" Hashing : 128 ") == HashingEmbedder(128)
    assert make_embedder("hashing:384").name == "hashing:384"


@pytest.mark.parametrize(
    "spec",
    ["hashing:", "hashing:abc", "hashing:0", "hashing:-1", "hashing:1.5", "sentence-transformers:",
     "sentence-transformers", "openai:text-embedding-3", "bogus", ":384", "wordllama:512"],
)
def test_make_embedder_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="spec"):
        make_embedder(spec)


def test_sentence_transformers_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(ImportError, match="sentence-transformers"):
        make_embedder("sentence-transformers:all-MiniLM-L6-v2")


def test_sentence_transformers_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeModel:
        def __init__(self, name: str, device: str | None = None) -> None:
            self.name = name

        def get_sentence_embedding_dimension(self) -> int:
            return 3

        def encode(self, texts: list[str], convert_to_numpy: bool = True) -> np.ndarray:
            return np.array([[len(t), 1.0, 0.0] if t else [0.0, 0.0, 0.0] for t in texts], dtype=np.float64)

    fake = types.ModuleType("sentence_transformers")
    fake.SentenceTransformer = FakeModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    e = make_embedder("sentence-transformers:/models/mini")
    assert isinstance(e, SentenceTransformerEmbedder) and isinstance(e, Embedder)
    assert e.dim == 3 and e.name == "sentence-transformers:/models/mini"
    m = e.embed(["abc", ""])
    assert m.dtype == np.float32 and m.shape == (2, 3)
    assert np.isclose(np.linalg.norm(m[0]), 1.0) and not m[1].any()
    assert e.embed([]).shape == (0, 3)
