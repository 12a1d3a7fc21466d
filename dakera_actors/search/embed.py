"""Text embedders: the :class:`Embedder` protocol, a model-free hashing default, and an adapter
for sentence-transformers models.

:class:`HashingEmbedder` needs no download and gives the same vector for the same text in every
process (xxhash with a fixed seed, never Python's salted ``hash``). Each text becomes a sparse
bag of three kinds of features, hashed into ``dim`` signed buckets:

* ``word``: stems of the non-stop words (see :mod:`.text`), weight 1.0;
* ``bigram``: adjacent stem pairs, weight 0.5 (word order, "dark mode" vs "mode dark");
* ``char``: 3- to 5-grams of each non-stop word wrapped in ``<``/``>``, weight 0.7 (shared
  morphology and spelling variants the stemmer misses: "favourite"/"favorite", compounds).

Counts are sublinear (``1 + ln tf``), each kind's vector is L2-normalised before the weighted
sum, and the sum is normalised again, so the cosine of two texts is close to
``sum(w_k**2 * cos_k) / sum(w_k**2)``: about 57 % shared words, 14 % shared bigrams and 28 %
shared character n-grams. Unrelated texts land near zero (the random signs cancel: about
``1/sqrt(dim)`` of noise).
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np
import xxhash

from .text import stem, words

__all__ = [
    "DEFAULT_DIM",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "make_embedder",
]

DEFAULT_DIM = 384
_MAX_DIM = 1 << 16
_SEED = 0x6D656D6F7279  # fixed: vectors must agree across processes and releases
_WORD_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.5
_CHAR_WEIGHT = 0.7
_CHAR_NGRAMS = (3, 4, 5)
_WORD_CACHE_MAX = 1 << 16


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    @property
    def name(self) -> str:
        """The spec that rebuilds this embedder (vectors from different names do not mix)."""
        ...

    @property
    def identity(self) -> str:
        """What made the vectors, as a spec :func:`make_embedder` rebuilds it from: two embedders with
        the same identity give the same vectors (a cluster and each shard's vectors record it)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape ``(len(texts), dim)``; rows are L2-normalised or all zero."""
        ...


def _normalise_rows(m: np.ndarray) -> np.ndarray:
    """Scale each row to unit length in place, leaving all-zero rows at zero."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    np.divide(m, norms, out=m, where=norms > 0)
    return m


@attrs.define
class HashingEmbedder:
    """Feature-hashing embedder: word unigrams, word bigrams and character n-grams (module doc)."""

    dim: int = attrs.field(default=DEFAULT_DIM)
    # per-word char n-gram buckets; bounded, cleared when full (vocabularies repeat a lot)
    _char_cache: dict[str, np.ndarray] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    @dim.validator
    def _check_dim(self, _attr: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_DIM:
            raise ValueError(f"HashingEmbedder dim must be an integer in 1..{_MAX_DIM}, got {value!r}")

    @property
    def name(self) -> str:
        """``hashing:<dim>``, the spec :func:`make_embedder` accepts."""
        return f"hashing:{self.dim}"

    @property
    def identity(self) -> str:
        """``hashing:<dim>``: what made the vectors (see :class:`Embedder`)."""
        return f"hashing:{self.dim}"

    def _bucket(self, feature: str) -> tuple[int, float]:
        h = xxhash.xxh64_intdigest(feature.encode(), seed=_SEED)
        # low bits pick the bucket, the top bit the sign: independent enough for hashing
        return (h & 0xFFFFFFFF) % self.dim, (1.0 if h >> 63 else -1.0)

    def _hashed(self, counts: Counter[str], prefix: str) -> np.ndarray:
        """A unit vector of the sublinear counts of ``counts``' features (zero if none)."""
        v = np.zeros(self.dim, dtype=np.float64)
        for feature, tf in counts.items():
            i, sign = self._bucket(prefix + feature)
            v[i] += sign * (1.0 + math.log(tf))
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def _char_hashes(self, word: str) -> np.ndarray:
        """64-bit hashes of the character n-grams of one word (cached per word)."""
        hit = self._char_cache.get(word)
        if hit is not None:
            return hit
        padded = f"<{word}>"
        grams = [padded[i : i + n] for n in _CHAR_NGRAMS for i in range(len(padded) - n + 1)]
        # words shorter than the smallest n-gram ("7" -> "<7>") still get one feature
        out = np.fromiter(
            (xxhash.xxh64_intdigest(("c:" + g).encode(), seed=_SEED) for g in grams or [padded]), dtype=np.uint64
        )
        if len(self._char_cache) >= _WORD_CACHE_MAX:
            self._char_cache.clear()
        self._char_cache[word] = out
        return out

    def _char_vector(self, ws: list[str]) -> np.ndarray:
        """A unit vector of the sublinear counts of the character n-grams of ``ws``."""
        v = np.zeros(self.dim, dtype=np.float64)
        if not ws:
            return v
        hashes, tf = np.unique(np.concatenate([self._char_hashes(w) for w in ws]), return_counts=True)
        buckets = ((hashes & np.uint64(0xFFFFFFFF)) % np.uint64(self.dim)).astype(np.intp)
        signs = np.where(hashes >> np.uint64(63), 1.0, -1.0)
        np.add.at(v, buckets, signs * (1.0 + np.log(tf)))
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def embed_one(self, text: str) -> np.ndarray:
        """The float32 unit vector of one text (all zero when it has no non-stop word)."""
        ws = words(text)
        stems = [stem(w) for w in ws]
        v = (
            _WORD_WEIGHT * self._hashed(Counter(stems), "w:")
            + _BIGRAM_WEIGHT * self._hashed(Counter(f"{a} {b}" for a, b in zip(stems, stems[1:], strict=False)), "b:")
            + _CHAR_WEIGHT * self._char_vector(ws)
        )
        n = float(np.linalg.norm(v))
        return (v / n if n > 0 else v).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32, shape ``(len(texts), dim)``, rows unit length or zero."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self.embed_one(t)
        return out


class SentenceTransformerEmbedder:
    """A sentence-transformers model (name or local path), loaded once at construction.

    The package is imported only here, so it stays an optional dependency; without it the
    constructor raises :class:`ImportError` saying what to install. Whether a model *name* can be
    fetched depends on the network; a local path always works.
    """

    def __init__(self, model_name_or_path: str, *, device: str | None = None) -> None:
        if not model_name_or_path:
            raise ValueError("SentenceTransformerEmbedder needs a model name or path")
        try:
            st = importlib.import_module("sentence_transformers")
        except ImportError as e:
            raise ImportError(
                "the 'sentence-transformers' package is not installed; "
                "install it (pip install sentence-transformers) or use the 'hashing' embedder"
            ) from e
        self._model: Any = st.SentenceTransformer(model_name_or_path, device=device)
        self._model_name = model_name_or_path
        dim = self._model.get_sentence_embedding_dimension()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"model {model_name_or_path!r} does not report a fixed embedding dimension")
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of the model's vectors."""
        return self._dim

    @property
    def name(self) -> str:
        """``sentence-transformers:<model>``, the spec :func:`make_embedder` accepts."""
        return f"sentence-transformers:{self._model_name}"

    @property
    def identity(self) -> str:
        """``sentence-transformers:<model>``: what made the vectors (see :class:`Embedder`)."""
        return f"sentence-transformers:{self._model_name}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32, shape ``(len(texts), dim)``, rows L2-normalised."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        m = np.asarray(self._model.encode(list(texts), convert_to_numpy=True), dtype=np.float32)
        m = m.reshape(len(texts), self._dim).copy()
        return _normalise_rows(m)


def make_embedder(spec: str = "hashing") -> Embedder:
    """Build an embedder from a spec: ``hashing`` (384 dims), ``hashing:<dim>`` or
    ``sentence-transformers:<model name or path>``.

    Raises :class:`ValueError` for a malformed spec, :class:`ImportError` when the spec names
    sentence-transformers and it is not installed.
    """
    s = spec.strip()
    if not s:
        return HashingEmbedder()
    kind, sep, arg = s.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "hashing":
        if not sep:
            return HashingEmbedder()
        try:
            dim = int(arg)
        except ValueError:
            dim = 0
        if not 1 <= dim <= _MAX_DIM:
            raise ValueError(f"embedder spec {spec!r}: 'hashing:<dim>' needs an integer dim in 1..{_MAX_DIM}")
        return HashingEmbedder(dim)
    if kind in ("sentence-transformers", "sentence_transformers"):
        if not arg:
            raise ValueError(f"embedder spec {spec!r}: 'sentence-transformers:<model>' needs a model name or path")
        return SentenceTransformerEmbedder(arg)
    raise ValueError(
        f"unknown embedder spec {spec!r}: use 'hashing', 'hashing:<dim>' or 'sentence-transformers:<model>'"
    )
