"""Recall benchmark: index build throughput and query latency of the pure retrieval core.

Builds an AgentIndex over 1,000 and 10,000 synthetic memories (a seeded generator of varied
sentences), then times 200 queries per routing, each query including its own tokenizing and
embedding (what a recall request pays). Prints figures; passes or fails nothing.

    .venv/bin/python bench/recall.py [--sizes 1000,10000] [--queries 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from dakera_actors.search import AgentIndex, HashingEmbedder, tokenize

SUBJECTS = ["The user", "My sister", "Our team lead", "The landlord", "Grandma", "The new intern", "My doctor",
            "The client", "Our neighbour", "The project manager"]
VERBS = ["prefers", "mentioned", "booked", "cancelled", "bought", "recommended", "complained about",
         "is allergic to", "asked about", "scheduled", "forgot", "loves", "hates", "paid for", "reviewed"]
ADJECTIVES = ["cheap", "vegan", "quiet", "early", "expensive", "spicy", "remote", "weekly", "blue", "noisy",
              "ergonomic", "organic", "refurbished", "overdue", "annual"]
NOUNS = ["flight", "dentist appointment", "pizza", "standing desk", "laptop", "hotel room", "yoga class",
         "tax return", "train ticket", "birthday party", "coffee beans", "running shoes", "insurance policy",
         "guitar lessons", "car repair", "book club", "dark mode", "password manager", "sushi", "holiday"]
PLACES = ["in Berlin", "in Lisbon", "near the office", "at home", "in Tokyo", "downtown", "in the mountains",
          "by the lake", "in Madrid", "online"]
TIMES = ["yesterday", "last week", "every Monday", "next month", "in March", "on weekends", "this morning",
         "twice a year", "before lunch", ""]


def sentence(rng: random.Random) -> str:
    """One synthetic memory: a subject, a verb, an object phrase, a place, a time, and a rare tag."""
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), "a", rng.choice(ADJECTIVES), rng.choice(NOUNS),
             rng.choice(PLACES), rng.choice(TIMES)]
    if rng.random() < 0.5:  # a rare word (ticket number, name) like real memories carry
        parts.append(f"ref {rng.choice('ABCDEFGH')}{rng.randrange(10_000)}")
    return " ".join(p for p in parts if p)


def query(rng: random.Random) -> str:
    """A recall question in a different shape from the memories."""
    return rng.choice([
        f"what did {rng.choice(SUBJECTS).lower()} say about the {rng.choice(NOUNS)}?",
        f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(PLACES)}",
        f"when is the {rng.choice(NOUNS)} {rng.choice(TIMES)}",
        f"does the user like {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
    ])


def pct(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(p / 100 * len(sorted_ms)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top-k", type=int, default=10)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    n_queries = max(1, min(args.queries, 100_000))

    build_rows: list[tuple[int, float, float]] = []
    query_rows: list[tuple[int, str, float, float, float]] = []
    kernel_rows: list[tuple[int, float, float]] = []
    for n in sizes:
        rng = random.Random(args.seed)
        texts = [sentence(rng) for _ in range(n)]
        queries = [query(rng) for _ in range(n_queries)]
        emb = HashingEmbedder()  # fresh per size: its per-word cache starts cold for each build
        ix = AgentIndex(emb.dim)
        t0 = time.perf_counter()
        for i, text in enumerate(texts):  # one memory at a time, as stores arrive
            ix.add(f"m{i}", tokenize(text), emb.embed([text])[0])
        build_s = time.perf_counter() - t0
        build_rows.append((n, n / build_s, build_s))

        for routing in ("hybrid", "bm25", "vector"):
            ix.search(tokenize(queries[0]), emb.embed([queries[0]])[0], routing=routing)  # warm-up
            ms: list[float] = []
            for q in queries:
                t = time.perf_counter_ns()
                ix.search(tokenize(q), emb.embed([q])[0], top_k=args.top_k, routing=routing)
                ms.append((time.perf_counter_ns() - t) / 1e6)
            ms.sort()
            query_rows.append((n, routing, pct(ms, 50), pct(ms, 99), statistics.fmean(ms)))
        kernel_rows.append((n, *_kernels(ix, emb.embed(queries[:n_queries]))))

    print("index build (tokenize + embed + add, one memory at a time)")
    print(f"{'memories':>9}  {'memories/s':>11}  {'total s':>8}")
    for n, rate, secs in build_rows:
        print(f"{n:>9}  {rate:>11.0f}  {secs:>8.2f}")
    print()
    print(f"query latency (tokenize + embed + search, top_k={args.top_k}, {n_queries} queries)")
    print(f"{'memories':>9}  {'routing':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'mean ms':>7}")
    for n, routing, p50, p99, mean in query_rows:
        print(f"{n:>9}  {routing:>7}  {p50:>7.3f}  {p99:>7.3f}  {mean:>7.3f}")
    print()
    print("vector scoring kernel alone, interleaved (median ms per query)")
    print(f"{'memories':>9}  {'einsum (used)':>13}  {'BLAS matvec':>11}")
    for n, ein, blas in kernel_rows:
        print(f"{n:>9}  {ein:>13.3f}  {blas:>11.3f}")


def _kernels(ix: AgentIndex, queries: np.ndarray) -> tuple[float, float]:
    """Median ms of the index's row-by-row einsum against BLAS's matrix-vector product (which
    scores equal rows differently by position), alternating query by query on the same matrix."""
    mat = ix.vectors._mat[: len(ix.vectors)]
    ein: list[float] = []
    blas: list[float] = []
    for q in queries:
        t = time.perf_counter_ns()
        np.einsum("ij,j->i", mat, q)
        ein.append((time.perf_counter_ns() - t) / 1e6)
        t = time.perf_counter_ns()
        mat @ q  # noqa: B018 - timed for comparison
        blas.append((time.perf_counter_ns() - t) / 1e6)
    return statistics.median(ein), statistics.median(blas)


if __name__ == "__main__":
    main()
