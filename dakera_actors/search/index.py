"""Per-agent retrieval indexes, maintained one memory at a time: BM25, vectors, and both fused.

Memories are stored, updated and forgotten one by one, so every index supports ``add`` (which
replaces a key already present), ``remove`` (a no-op for an absent key, so replays are safe) and
queries that score either everything or a caller-chosen subset of keys (``candidates``: the
memories left after the caller's filters on type, importance, time and tags).

Pure: no I/O, no clock, no randomness; the same operations give the same results, ties included
(they are broken by key).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Literal

import attrs
import numpy as np

__all__ = [
    "DEFAULT_VECTOR_WEIGHT",
    "DimensionMismatch",
    "FUSIONS",
    "RRF_K",
    "ROUTINGS",
    "AgentIndex",
    "Bm25Index",
    "Fusion",
    "Hit",
    "Routing",
    "VectorIndex",
]

Routing = Literal["hybrid", "vector", "bm25", "auto"]
Fusion = Literal["minmax", "rrf"]
ROUTINGS: tuple[str, ...] = ("hybrid", "vector", "bm25", "auto")
FUSIONS: tuple[str, ...] = ("minmax", "rrf")
RRF_K = 60  # the constant of Cormack et al. (2009), also Elasticsearch's and OpenSearch's default
#: hybrid recall's default weight of the vector side (min-max fusion). Chosen by
#: bench/recall_quality.py with the WordLlama embedder (bench/RESULTS.md): from 0.3 to 0.6 a single
#: shared word in a distractor outranks a paraphrase's memory; 0.7 puts more paraphrases first while
#: every exact-term query (names, ids, code words) still ranks its memory first with a margin (0.75
#: keeps the closest one ahead by 0.006 only); from 0.8 those lose to near-miss ids the vectors
#: cannot tell apart.
DEFAULT_VECTOR_WEIGHT = 0.7


class DimensionMismatch(ValueError):
    """A vector of another length than the index's: made by another embedder (or damaged)."""

    def __init__(self, got: float, expected: int) -> None:
        super().__init__(f"vector has {got:g} dimensions, index has {expected}")
        self.got = got
        self.expected = expected


class Bm25Index:
    """Okapi BM25 over an incrementally maintained inverted index.

    ``score(d) = sum over distinct query terms t of
    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * len(d) / avglen))`` with
    ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))`` (Lucene's, never negative). A query
    term repeated counts once. Documents with no tokens count in ``N`` and in the average length.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        if not (k1 >= 0 and math.isfinite(k1)):
            raise ValueError(f"k1 must be a finite number >= 0, got {k1!r}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        self.k1 = k1
        self.b = b
        self._postings: dict[str, dict[str, int]] = {}
        self._doc_tf: dict[str, dict[str, int]] = {}
        self._doc_len: dict[str, int] = {}
        self._total_len = 0

    def __len__(self) -> int:
        return len(self._doc_len)

    def __contains__(self, key: object) -> bool:
        return key in self._doc_len

    def __iter__(self) -> Iterator[str]:
        return iter(self._doc_len)

    @property
    def total_length(self) -> int:
        """Sum of all documents' token counts."""
        return self._total_len

    def document_frequency(self, term: str) -> int:
        """How many documents contain ``term``."""
        return len(self._postings.get(term, ()))

    def add(self, key: str, tokens: Sequence[str]) -> None:
        """Index ``key`` with ``tokens``, replacing what ``key`` had before."""
        self.remove(key)
        tf = dict(Counter(tokens))
        self._doc_tf[key] = tf
        self._doc_len[key] = len(tokens)
        self._total_len += len(tokens)
        for term, n in tf.items():
            self._postings.setdefault(term, {})[key] = n

    def term_counts(self, key: str) -> dict[str, int]:
        """How often each term occurs in ``key`` (KeyError if absent). The index's own dict, never
        changed in place (re-indexing replaces it), so a snapshot may keep it: do not mutate it."""
        return self._doc_tf[key]

    def add_counts(self, key: str, counts: dict[str, int]) -> None:
        """Index ``key`` from its term counts: the same state as :meth:`add` with any tokens having
        those counts (a snapshot carries the counts so loading it does not tokenize again)."""
        self.remove(key)
        tf = dict(counts)
        length = sum(tf.values())
        self._doc_tf[key] = tf
        self._doc_len[key] = length
        self._total_len += length
        postings = self._postings
        for term, n in tf.items():
            posting = postings.get(term)
            if posting is None:
                postings[term] = {key: n}
            else:
                posting[key] = n

    def load_counts(self, keys: Sequence[str], counts: Sequence[dict[str, int]]) -> None:
        """:meth:`add_counts` for each key in order, into an empty index, taking ``counts`` as they are
        (the caller hands them over: a snapshot's freshly decoded dicts)."""
        if self._doc_len:
            raise ValueError("load_counts fills an empty index")
        postings, doc_tf, doc_len = self._postings, self._doc_tf, self._doc_len
        total = 0
        for key, tf in zip(keys, counts, strict=True):
            if key in doc_tf:
                raise ValueError(f"load_counts got {key!r} twice")
            length = sum(tf.values())
            doc_tf[key] = tf
            doc_len[key] = length
            total += length
            for term, n in tf.items():
                posting = postings.get(term)
                if posting is None:
                    postings[term] = {key: n}
                else:
                    posting[key] = n
        self._total_len = total

    def remove(self, key: str) -> bool:
        """Forget ``key``; False if it was not indexed."""
        tf = self._doc_tf.pop(key, None)
        if tf is None:
            return False
        self._total_len -= self._doc_len.pop(key)
        for term in tf:
            posting = self._postings[term]
            del posting[key]
            if not posting:  # keeps the vocabulary from growing with forgotten words
                del self._postings[term]
        return True

    def idf(self, term: str) -> float:
        """Inverse document frequency of ``term`` (> 0 for any term, 0 on an empty index)."""
        n = len(self._doc_len)
        if n == 0:
            return 0.0
        df = len(self._postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query_tokens: Iterable[str], candidates: Collection[str] | None = None) -> dict[str, float]:
        """BM25 score of every document (among ``candidates`` when given) matching a query term."""
        n = len(self._doc_len)
        out: dict[str, float] = {}
        if n == 0:
            return out
        doc_len = self._doc_len
        # k1 * (1 - b + b * len / avg) as c1 + c2 * len, hoisted out of the posting loops
        c1 = self.k1 * (1.0 - self.b)
        c2 = self.k1 * self.b * n / self._total_len if self._total_len else 0.0
        kp1 = self.k1 + 1.0
        for term in dict.fromkeys(query_tokens):  # distinct, in query order (stable float sums)
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            if candidates is None:
                matches: Iterable[tuple[str, int]] = posting.items()
            elif len(candidates) < len(posting):
                matches = ((k, posting[k]) for k in candidates if k in posting)
            else:
                matches = ((k, tf) for k, tf in posting.items() if k in candidates)
            get = out.get
            for key, tf in matches:
                out[key] = get(key, 0.0) + idf * tf * kp1 / (tf + c1 + c2 * doc_len[key])
        return out


class VectorIndex:
    """Unit vectors in one growable float32 matrix; cosine scores by one matrix-vector product.

    Rows ``0 .. len-1`` are live. ``add`` appends (doubling the capacity when full) or overwrites
    the key's row; ``remove`` moves the last row into the hole, so both are O(1) amortised.
    Vectors are L2-normalised on the way in (an all-zero vector stays zero and scores 0).
    """

    def __init__(self, dim: int, *, initial_capacity: int = 64) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got {dim!r}")
        self.dim = dim
        self._mat = np.zeros((max(1, initial_capacity), dim), dtype=np.float32)
        self._keys: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    @property
    def capacity(self) -> int:
        """Rows allocated (live or free)."""
        return int(self._mat.shape[0])

    def row_of(self, key: str) -> int:
        """The matrix row holding ``key`` (KeyError if absent)."""
        return self._rows[key]

    def key_at(self, row: int) -> str:
        """The key stored in live row ``row``."""
        return self._keys[row]

    def vector(self, key: str) -> np.ndarray:
        """A copy of the stored (normalised) vector of ``key``."""
        return self._mat[self._rows[key]].copy()

    def _unit(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise DimensionMismatch(v.shape[0], self.dim)
        n = float(np.linalg.norm(v))
        if not math.isfinite(n):
            raise ValueError("vector has a non-finite component")
        return v / n if n > 0 else v

    def add(self, key: str, vector: np.ndarray) -> None:
        """Store ``vector`` under ``key``, replacing the key's previous vector."""
        v = self._unit(vector)
        row = self._rows.get(key)
        if row is None:
            row = len(self._keys)
            if row == self._mat.shape[0]:
                grown = np.zeros((2 * row, self.dim), dtype=np.float32)
                grown[:row] = self._mat
                self._mat = grown
            self._keys.append(key)
            self._rows[key] = row
        self._mat[row] = v

    def add_many(self, keys: Sequence[str], vectors: Sequence[bytes]) -> None:
        """Store float32 ``vectors`` (raw bytes) under new ``keys``, in order, into an empty index: the
        same matrix, rows and capacity as :meth:`add` one by one, bit for bit, without its per-call
        cost (loading a snapshot adds every vector of an agent at once). ValueError as :meth:`add`."""
        if self._keys:
            raise ValueError("add_many fills an empty index")
        if len(set(keys)) != len(keys) or len(keys) != len(vectors):
            raise ValueError("add_many needs distinct keys, one vector each")
        size = 4 * self.dim
        for raw in vectors:
            if len(raw) != size:
                raise DimensionMismatch(len(raw) / 4, self.dim)
        count = len(keys)
        capacity = self.capacity
        while capacity < count:  # the capacity add's doubling would have reached
            capacity *= 2
        mat = np.zeros((capacity, self.dim), dtype=np.float32)
        rows = mat[:count]
        rows[:] = np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(count, self.dim)
        # each norm as np.linalg.norm takes it for one vector (sqrt of x.dot(x), float32), so every
        # row is divided by the very number add's _unit would use; an all-zero row stays zero
        norms = np.empty(count, dtype=np.float64)
        for i in range(count):
            row = rows[i]
            norms[i] = float(np.sqrt(row.dot(row)))
        if not np.isfinite(norms).all():
            raise ValueError("vector has a non-finite component")
        nonzero = norms > 0
        rows[nonzero] = rows[nonzero] / norms[nonzero].astype(np.float32)[:, None]
        self._mat = mat
        self._keys = list(keys)
        self._rows = {k: i for i, k in enumerate(self._keys)}

    def remove(self, key: str) -> bool:
        """Forget ``key``; False if it was not stored."""
        row = self._rows.pop(key, None)
        if row is None:
            return False
        last = len(self._keys) - 1
        if row != last:
            moved = self._keys[last]
            self._mat[row] = self._mat[last]
            self._keys[row] = moved
            self._rows[moved] = row
        self._keys.pop()
        self._mat[last] = 0.0  # a freed row holds no stale data
        return True

    def score_rows(
        self, query_vec: np.ndarray, candidates: Collection[str] | None = None
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """(rows, cosines as float64): rows is None when every live row was scored (then
        position i is row i), else the ascending rows of the known ``candidates``."""
        q = self._unit(query_vec)
        if candidates is None:
            return None, _dots(self._mat[: len(self._keys)], q)
        rows = np.fromiter((r for r in map(self._rows.get, candidates) if r is not None), dtype=np.intp)
        rows.sort()
        return rows, _dots(self._mat[rows], q)

    def scores(
        self, query_vec: np.ndarray, candidates: Collection[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """(keys, cosine similarities as float64) for every stored key, or for ``candidates``.

        Keys come in row order; unknown candidates are skipped.
        """
        rows, sims = self.score_rows(query_vec, candidates)
        keys = list(self._keys) if rows is None else [self._keys[r] for r in rows.tolist()]
        return keys, sims


def _dots(mat: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each row's dot product with ``q``, as float64, computed the same way for every row.

    Not ``mat @ q``: BLAS's matrix-vector kernels take rows in blocks of different widths, so two
    equal rows can differ in the last bit by where they sit, and rows sit differently on a primary
    and on a replica that loaded a snapshot, and min-max fusion stretches that last bit into a
    whole rank. einsum runs the same loop for every row; bench/recall.py compares the two
    (10,000 rows of 384: 0.75 ms against BLAS's 0.43)."""
    return np.einsum("ij,j->i", mat, q).astype(np.float64)


@attrs.frozen
class Hit:
    """One search result. ``score`` is the fused (or single-list) score that orders results;
    ``vector_score`` is the raw cosine and ``text_score`` the raw BM25 score, None when that list
    did not score the memory (not searched, or no query term matched)."""

    key: str
    score: float
    vector_score: float | None
    text_score: float | None


def _minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by min-max; a single value or all-equal values map to 1.0 if > 0 else 0.0."""
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        return (values - lo) / (hi - lo)
    return np.full_like(values, 1.0 if hi > 0 else 0.0)


def _ranks(keys: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` (descending, ties by key)."""
    order = np.lexsort((np.asarray(keys, dtype=str), -scores)) if len(keys) else np.zeros(0, dtype=np.intp)
    ranks = np.empty(len(keys), dtype=np.float64)
    ranks[order] = np.arange(1, len(keys) + 1, dtype=np.float64)
    return ranks


def _top(key_of: Callable[[int], str], scores: np.ndarray, k: int) -> list[int]:
    """Positions of the ``k`` best scores, descending, ties by key; exact at the cut-off."""
    n = scores.shape[0]
    if n > k:
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        pool: Iterable[int] = np.flatnonzero(scores >= threshold).tolist()  # every tie at the cut
    else:
        pool = range(n)
    return heapq.nsmallest(k, pool, key=lambda i: (-scores[i], key_of(i)))


class AgentIndex:
    """One agent's memories: a :class:`Bm25Index` and a :class:`VectorIndex` kept in step."""

    def __init__(self, dim: int, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.dim = dim
        self.text = Bm25Index(k1=k1, b=b)
        self.vectors = VectorIndex(dim)

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, key: object) -> bool:
        return key in self.vectors

    def __iter__(self) -> Iterator[str]:
        return iter(self.vectors)

    def add(self, key: str, text_tokens: Sequence[str], vector: np.ndarray) -> None:
        """Index (or re-index) memory ``key`` from its tokens and its embedding."""
        self.vectors.add(key, vector)  # first: it validates the vector, so a bad one changes nothing
        self.text.add(key, text_tokens)

    def load(self, keys: Sequence[str], counts: Sequence[dict[str, int]], vectors: Sequence[bytes]) -> None:
        """Fill an empty index with memories ``keys``, their term counts and raw float32 vectors:
        the same state as :meth:`add` for each in order (a snapshot load)."""
        self.vectors.add_many(keys, vectors)  # first: it validates every vector
        self.text.load_counts(keys, counts)

    def remove(self, key: str) -> bool:
        """Forget memory ``key``; False if it was not indexed."""
        found = self.vectors.remove(key)
        return self.text.remove(key) or found

    def search(
        self,
        query_tokens: Sequence[str],
        query_vec: np.ndarray | None,
        *,
        top_k: int = 10,
        routing: Routing | str = "hybrid",
        fusion: Fusion | str = "minmax",
        vector_weight: float = DEFAULT_VECTOR_WEIGHT,
        candidates: Collection[str] | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best memories for a query, best first (ties by key).

        ``routing``: ``vector`` ranks by cosine alone, ``bm25`` by BM25 alone (memories matching no
        query term are left out), ``hybrid`` (and ``auto``) fuses both. ``fusion``: ``minmax``
        scales each list to [0, 1] over the memories it scored, then
        ``w * vector + (1 - w) * text``; ``rrf`` uses ``w / (60 + vector_rank) + (1 - w) /
        (60 + text_rank)``. ``w`` is ``vector_weight``; a memory missing from a list gets 0 for it.
        For a single-list routing ``score`` is that list's raw score. ``query_vec`` may be None only
        for ``bm25``. ``candidates`` restricts the search to those keys.

        Min-max gives each list's lowest score 0, the same as a memory missing from that list:
        with ``vector_weight=0`` the weakest text match ties with non-matches (ties go by key).
        """
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if not 0.0 <= vector_weight <= 1.0:
            raise ValueError(f"vector_weight must be in [0, 1], got {vector_weight!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if routing != "bm25" and query_vec is None:
            raise ValueError(f"routing {routing!r} needs a query vector")

        if routing == "bm25":
            text = self.text.scores(query_tokens, candidates)
            tkeys = list(text)
            tvals = np.fromiter(text.values(), dtype=np.float64, count=len(tkeys))
            return [Hit(tkeys[i], float(tvals[i]), None, float(tvals[i]))
                    for i in _top(tkeys.__getitem__, tvals, top_k)]

        assert query_vec is not None
        rows, vvals = self.vectors.score_rows(query_vec, candidates)
        all_keys = self.vectors._keys  # same module: read-only use of the live row -> key list
        # position i of the vector list holds row i, or rows[i] with candidates
        key_of: Callable[[int], str] = (
            all_keys.__getitem__ if rows is None else (lambda i: all_keys[rows[i]])
        )
        if routing == "vector":
            return [Hit(key_of(i), float(vvals[i]), float(vvals[i]), None) for i in _top(key_of, vvals, top_k)]

        # both indexes hold the same keys, so every text hit has a place in the vector list
        text = self.text.scores(query_tokens, candidates)
        row_of = self.vectors._rows
        trows = np.array(list(map(row_of.__getitem__, text)), dtype=np.intp)
        tpos = trows if rows is None else np.searchsorted(rows, trows)
        tvals = np.fromiter(text.values(), dtype=np.float64, count=len(text))
        n = vvals.shape[0]
        txt_raw = np.full(n, np.nan)
        txt_raw[tpos] = tvals
        txt_part = np.zeros(n)
        w = float(vector_weight)
        if fusion == "minmax":
            vec_part = _minmax(vvals)
            txt_part[tpos] = _minmax(tvals)
        else:
            vkeys = all_keys[:n] if rows is None else [all_keys[r] for r in rows.tolist()]
            vec_part = 1.0 / (RRF_K + _ranks(vkeys, vvals))
            txt_part[tpos] = 1.0 / (RRF_K + _ranks(list(text), tvals))
        fused = w * vec_part + (1.0 - w) * txt_part

        hits = []
        for i in _top(key_of, fused, top_k):
            t = float(txt_raw[i])
            hits.append(Hit(key_of(i), float(fused[i]), float(vvals[i]), None if math.isnan(t) else t))
        return hits
