"""Text embedders: the :class:`Embedder` protocol, the WordLlama default (a static embedding
model shipped inside the ``wordllama`` wheel), model-free feature hashing, and an adapter for
sentence-transformers models.

:class:`WordLlamaEmbedder` (``wordllama``, ``wordllama:<dim>``) averages the model's token
embeddings (the LLaMA 2 tokenizer's 32,000 tokens, 256 dimensions, trained so that the first 64
or 128 are an embedding too) and L2-normalises the mean: it matches meaning ("violin lessons" /
"what instrument is the kid learning"), needs only numpy and the tokenizer, and never touches the
network: both files are read from the installed package's own folder.

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
import importlib.util
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np
import xxhash

from .text import stem, words

__all__ = [
    "DEFAULT_DIM",
    "DEFAULT_EMBEDDER",
    "WORDLLAMA_DIMS",
    "Embedder",
    "EmbedderUnavailable",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "WordLlamaEmbedder",
    "make_embedder",
]

#: the spec a node uses when none is configured
DEFAULT_EMBEDDER = "wordllama"
#: the truncations of the shipped 256-dimension WordLlama model (its larger 512/1024 versions are
#: not in the wheel: they would need a download)
WORDLLAMA_DIMS = (64, 128, 256)
_WORDLLAMA_CONFIG = "l2_supercat"
_WORDLLAMA_FULL_DIM = 256
#: tokens gathered at once when pooling: bounds the (tokens x dim) float32 temporary (16 MiB at 256)
_POOL_TOKENS = 16_384


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be built here: its package or model file is missing."""

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
        """The embedder's vector space, e.g. ``wordllama:256`` or ``hashing:384``: equal identities
        give comparable vectors, different ones never mix (the cluster compares it). The same
        string as :attr:`name`, and :func:`make_embedder` accepts it."""
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
        """The vector space: the same as :attr:`name`."""
        return self.name

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
        """The vector space: the same as :attr:`name`."""
        return self.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32, shape ``(len(texts), dim)``, rows L2-normalised."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        m = np.asarray(self._model.encode(list(texts), convert_to_numpy=True), dtype=np.float32)
        m = m.reshape(len(texts), self._dim).copy()
        return _normalise_rows(m)


def wordllama_dir() -> Path:
    """The installed ``wordllama`` package's folder (it holds ``weights/`` and ``tokenizers/``),
    found without importing it; :class:`EmbedderUnavailable` if it is not installed."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or spec.origin is None:
        raise EmbedderUnavailable("the 'wordllama' package is not installed "
                                  "(pip install 'wordllama==0.4.0.post1'), or choose 'hashing'")
    return Path(spec.origin).parent


def _import_wordllama() -> Any:
    """``wordllama.WordLlama``, imported without keeping the ``logging.basicConfig`` its package
    runs on import (it would add a handler to the host program's root logger)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return importlib.import_module("wordllama").WordLlama
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


#: (folder, dim) -> (token embedding matrix, tokenizer): immutable once loaded, so every node
#: of one process (tests, simulations, an embedding host) shares one copy and loads it once
_WORDLLAMA_MODELS: dict[tuple[Path, int], tuple[np.ndarray, Any]] = {}
_WORDLLAMA_LOCK = threading.Lock()


def _load_wordllama(folder: Path, dim: int) -> tuple[np.ndarray, Any]:
    with _WORDLLAMA_LOCK:
        hit = _WORDLLAMA_MODELS.get((folder, dim))
        if hit is not None:
            return hit
        weights = folder / "weights" / f"{_WORDLLAMA_CONFIG}_{_WORDLLAMA_FULL_DIM}.safetensors"
        tokenizer = folder / "tokenizers" / f"{_WORDLLAMA_CONFIG}_tokenizer_config.json"
        for path in (weights, tokenizer):
            if not path.is_file():
                raise EmbedderUnavailable(f"the WordLlama model file {path} is missing "
                                          "(reinstall wordllama==0.4.0.post1, or choose 'hashing')")
        wordllama = _import_wordllama()
        # WordLlama.load() alone looks for the tokenizer under wordllama/tokenizer/ (the wheel has
        # tokenizers/) and then downloads it; the package's own folder as cache_dir finds both
        # files, and disable_download makes a missing one an error instead of a network call
        model = wordllama.load(config=_WORDLLAMA_CONFIG, cache_dir=folder, dim=_WORDLLAMA_FULL_DIM,
                               trunc_dim=None if dim == _WORDLLAMA_FULL_DIM else dim, disable_download=True)
        matrix = np.ascontiguousarray(model.embedding, dtype=np.float32)
        matrix.setflags(write=False)
        tok = model.tokenizer
        tok.no_padding()  # each text's own tokens; pooling is done here (see WordLlamaEmbedder.embed)
        tok.no_truncation()
        _WORDLLAMA_MODELS[(folder, dim)] = (matrix, tok)
        return matrix, tok


class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` (MIT; module doc): the mean of a text's token embeddings, the
    first ``dim`` of 256 dimensions, L2-normalised. Loaded from ``folder`` (default: the installed
    package's) and never from the network; :class:`EmbedderUnavailable` when a file is missing."""

    def __init__(self, dim: int = _WORDLLAMA_FULL_DIM, *, folder: Path | None = None) -> None:
        if dim not in WORDLLAMA_DIMS:
            raise ValueError(f"WordLlama dim must be one of {', '.join(map(str, WORDLLAMA_DIMS))}, got {dim!r}")
        self._dim = dim
        self._matrix, self._tokenizer = _load_wordllama(folder or wordllama_dir(), dim)

    @property
    def dim(self) -> int:
        """Length of every vector: 64, 128 or 256."""
        return self._dim

    @property
    def name(self) -> str:
        """``wordllama:<dim>``, the spec :func:`make_embedder` accepts."""
        return f"wordllama:{self._dim}"

    @property
    def identity(self) -> str:
        """The vector space: the same as :attr:`name`."""
        return self.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32, shape ``(len(texts), dim)``, rows unit length, or zero
        for a text with no token. Each row depends on its text alone (not on the batch), and the
        temporary memory is bounded whatever the text's length."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        # one text at a time: encode_batch hands the batch to the tokenizers library's own thread
        # pool, which on 2 cores took more wall and CPU time than this loop (the node already runs
        # embedding in its worker threads)
        encode = self._tokenizer.encode
        matrix = self._matrix
        for i, text in enumerate(texts):
            ids = np.asarray(encode(text, add_special_tokens=False).ids, dtype=np.intp)
            if ids.size == 0:
                continue
            np.clip(ids, 0, matrix.shape[0] - 1, out=ids)
            acc = np.zeros(self._dim, dtype=np.float64)
            for start in range(0, ids.size, _POOL_TOKENS):
                acc += matrix[ids[start:start + _POOL_TOKENS]].sum(axis=0, dtype=np.float64)
            n = float(np.linalg.norm(acc))  # the mean's direction: no need to divide by the count
            if n > 0:
                out[i] = acc / n
        return out


def make_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """Build an embedder from a spec: ``wordllama`` (the default, 256 dims), ``wordllama:<dim>``
    (64, 128 or 256), ``hashing`` (384 dims), ``hashing:<dim>`` or
    ``sentence-transformers:<model name or path>``.

    Raises :class:`ValueError` for a malformed spec, :class:`EmbedderUnavailable` when the
    WordLlama package or model file is missing, :class:`ImportError` when the spec names
    sentence-transformers and it is not installed.
    """
    s = spec.strip()
    if not s:
        return make_embedder(DEFAULT_EMBEDDER)
    kind, sep, arg = s.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "wordllama":
        if not sep:
            return WordLlamaEmbedder()
        if arg not in {str(d) for d in WORDLLAMA_DIMS}:
            raise ValueError(f"embedder spec {spec!r}: 'wordllama:<dim>' needs dim "
                             f"{', '.join(map(str, WORDLLAMA_DIMS))} (the model's truncations)")
        return WordLlamaEmbedder(int(arg))
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
        f"unknown embedder spec {spec!r}: use 'wordllama', 'wordllama:<dim>', 'hashing', 'hashing:<dim>' "
        "or 'sentence-transformers:<model>'"
    )
