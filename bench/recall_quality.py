"""Recall quality: does recall find the memory a question is about, by meaning and by exact term?

A labelled set written for this benchmark, all in one agent:

* 40 **paraphrases**: a memory and a question about it that share no content word (checked
  below with the recall tokenizer: no stem in common), e.g. "My daughter has started taking
  violin lessons" / "what instrument is the kid learning";
* 20 **exact terms**: names, ids, code words ("INV-20931", "Okonkwo", "parse_iso8601_duration"),
  each with near-miss distractors (another invoice number, a similar name) that a vector
  side confuses and BM25 does not;
* 400 **distractors**: hand-written near-topic sentences (a son's football, a piano bench) and
  seeded synthetic ones.

For each embedder (``hashing``, ``wordllama``) and each routing/fusion setting, every query is
run through ``AgentIndex.search`` (what a recall request runs on the shard) and scored by where
its memory lands: recall@1, recall@5 and MRR, per kind and overall. Then the latency of one
recall (tokenize + embed the query + hybrid search, top 10) with 1k, 10k and 100k memories in
the agent. Prints figures; passes or fails nothing.

    .venv/bin/python bench/recall_quality.py [--sizes 1000,10000,100000] [--queries 200] [--quick]
    make bench-recall-quality [QUICK=1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table  # noqa: E402
from recall import sentence  # noqa: E402

from dakera_actors.search import (  # noqa: E402
    DEFAULT_VECTOR_WEIGHT,
    AgentIndex,
    Embedder,
    make_embedder,
    tokenize,
)

PARAPHRASES: list[tuple[str, str]] = [
    ("My daughter has started taking violin lessons", "what instrument is the kid learning"),
    ("I am allergic to peanuts", "which nuts must be kept out of my food"),
    ("We adopted a golden retriever puppy last month", "what kind of dog do we have"),
    ("My wife works as a pediatric nurse", "what is my spouse's job"),
    ("I moved to Lisbon in the spring", "which city do I live in now"),
    ("The car's brakes were replaced in March", "when was the vehicle last serviced"),
    ("I run a half marathon every October", "what long-distance race do I do each autumn"),
    ("I prefer tea over coffee in the morning", "what hot drink do I like at breakfast"),
    ("My flight to Tokyo leaves on the 14th", "when do I travel to Japan"),
    ("I can't eat gluten because of celiac disease", "what dietary restriction do I have"),
    ("Our team standup is at 9:30 every weekday", "what time is the daily meeting with colleagues"),
    ("I'm learning Spanish on Duolingo", "which foreign language am I studying"),
    ("My mother's birthday is on June 3rd", "when should I call mom to celebrate"),
    ("I drive a blue Subaru Outback", "what vehicle do I own"),
    ("The landlord raised the rent by 8 percent", "how much more do I pay for the apartment now"),
    ("I broke my wrist skiing last winter", "what injury did I get on the slopes"),
    ("My favourite author is Ursula Le Guin", "which writer's books do I love most"),
    ("We are planning a trip to Iceland to see the northern lights", "where are we going to watch the aurora"),
    ("I take my blood pressure medication every evening", "when do I swallow my hypertension pills"),
    ("My son is terrified of thunderstorms", "what weather frightens the boy"),
    ("I volunteer at the animal shelter on Sundays", "where do I help out at weekends"),
    ("The kitchen sink has been leaking since Tuesday", "which plumbing problem needs fixing"),
    ("I switched my phone plan to a cheaper carrier", "did I change mobile providers"),
    ("My grandfather fought in the Korean war", "which conflict was grandpa a soldier in"),
    ("I am vegetarian and never eat meat", "what diet do I follow"),
    ("Our wedding anniversary is September 12", "when did my husband and I get married"),
    ("I get migraines when I don't sleep enough", "what causes my headaches"),
    ("My laptop is a ThinkPad X1 Carbon", "which computer do I use for work"),
    ("I play guitar in a jazz band on Fridays", "what music group am I part of"),
    ("The baby usually naps from one to three", "when does the infant rest in the afternoon"),
    ("I hate cilantro, it tastes like soap to me", "which herb do I dislike"),
    ("My sister lives in Melbourne with her two kids", "where is my sibling based"),
    ("I'm saving up to buy a house next year", "what big purchase am I putting money aside for"),
    ("I swim laps at the community pool before work", "what exercise do I do early in the day"),
    ("My cat Luna needs a special kidney diet", "what food does the pet require"),
    ("I was promoted to senior engineer in January", "when did I get a new title at the company"),
    ("The dentist appointment is Thursday at 4pm", "when is my next teeth checkup"),
    ("I'm afraid of heights and avoid tall buildings", "do I have any phobias"),
    ("We grow tomatoes and basil in the backyard", "what vegetables are in our garden"),
    ("My passport expires in November", "when does my travel document need renewing"),
]

#: (memory, query, near-miss distractors)
EXACT: list[tuple[str, str, list[str]]] = [
    ("The staging deploy key is ZX-4471-QP", "ZX-4471-QP",
     ["The production deploy key is ZX-4417-PQ", "The old staging key was rotated last week"]),
    ("Invoice INV-20931 from Acme Corp is still unpaid", "status of INV-20931",
     ["Invoice INV-20391 from Acme Corp was paid in full", "Invoice INV-29031 is disputed"]),
    ("Ask Priya Raghunathan about the lease renewal", "Raghunathan",
     ["Ask Priya Ramanathan about the parking permit", "Priya from accounting handles lease questions"]),
    ("The flaky test is test_refund_idempotency in payments", "test_refund_idempotency",
     ["The slow test is test_refund_timeout in payments", "test_charge_idempotency passes again"]),
    ("Our Kubernetes namespace is team-orion-prod", "team-orion-prod namespace",
     ["Our Kubernetes namespace for staging is team-lyra-stage", "The orion team moved clusters"]),
    ("Set MAX_POOL_SIZE to 32 in the worker config", "MAX_POOL_SIZE",
     ["Set MIN_POOL_SIZE to 4 in the worker config", "Set MAX_QUEUE_SIZE to 1000 in the API config"]),
    ("My employee number is 004417", "employee 004417",
     ["My badge number is 004471", "The new hire got employee number 007714"]),
    ("The wifi password at the cabin is bluefinch88", "bluefinch88",
     ["The wifi password at the office is redrobin42", "The cabin router was replaced"]),
    ("Dr. Okonkwo is my new cardiologist", "Okonkwo",
     ["Dr. Okafor is my dermatologist", "My old cardiologist retired in May"]),
    ("The bug is tracked as JIRA PLAT-3382", "PLAT-3382",
     ["The outage is tracked as JIRA PLAT-3328", "The feature request is PLAT-8332"]),
    ("The error was ECONNRESET from the payments gateway", "ECONNRESET",
     ["The error was ETIMEDOUT from the payments gateway", "The gateway returned a 502 twice"]),
    ("Meeting room Kestrel is booked for the offsite", "Kestrel",
     ["Meeting room Falcon is booked for the board review", "The offsite moved to the Harbour hotel"]),
    ("Use the function parse_iso8601_duration for timeouts", "parse_iso8601_duration",
     ["Use the function parse_rfc3339_timestamp for dates", "Timeouts are read from the config file"]),
    ("The package tracking number is 1Z999AA10123456784", "1Z999AA10123456784",
     ["The returned package tracking number is 1Z999AA10123456748", "The parcel was left at the door"]),
    ("Our S3 bucket is acme-logs-eu-west-3", "acme-logs-eu-west-3",
     ["Our backup bucket is acme-backups-us-east-1", "Logs are kept for ninety days"]),
    ("Call Zbigniew about the drum kit he is selling", "Zbigniew",
     ["Call Zdenek about the bass amp he is selling", "The drum teacher charges 40 euros"]),
    ("The commit that broke the build is 9f3c2ab", "commit 9f3c2ab",
     ["The commit that fixed the build is 9f2c3ab", "The build broke again on Friday"]),
    ("The lab's cell line is HEK293T", "HEK293T",
     ["The lab also grows HeLa cells", "The other lab uses CHO-K1 cells"]),
    ("The Postgres replica is pg-replica-07", "pg-replica-07",
     ["The Postgres primary is pg-primary-02", "The old replica pg-replica-70 was retired"]),
    ("The recipe calls for gochujang and mirin", "gochujang",
     ["The recipe calls for miso and sake", "The Korean restaurant downtown closed"]),
]

#: near-topic distractors for the paraphrases: same themes, other facts
HARD_DISTRACTORS = [
    "My son plays football every Saturday morning", "I bought a new piano bench for the living room",
    "The neighbour's cat keeps sleeping on our porch", "My brother is a firefighter in Denver",
    "We visited Porto for a long weekend", "The bike needs new tyres before summer",
    "I walk to the office when it is not raining", "I drink sparkling water with lunch",
    "The conference in Osaka was cancelled", "I bake sourdough bread on Sunday evenings",
    "The quarterly review is on the last Friday of the month", "My colleague speaks fluent German",
    "My father retired from the post office", "The garage door makes a grinding noise",
    "The electricity bill doubled this winter", "I sprained my ankle playing tennis years ago",
    "I finished reading a thriller about a bank heist", "We watched a documentary about volcanoes",
    "I stopped taking vitamin D supplements", "My daughter loves drawing horses",
    "I donate blood twice a year", "The bathroom fan is very loud",
    "I cancelled the streaming subscription", "My uncle collects old coins",
    "I tried the keto diet for a month", "My parents celebrate their anniversary in August",
    "I get sleepy after big lunches", "The office printer jams every morning",
    "I listen to podcasts about history while cooking", "The toddler refuses to eat broccoli",
    "I love mango sorbet in summer", "My cousin lives in Toronto", "We are repainting the hallway green",
    "I cycle to the gym three times a week", "The goldfish tank needs a new filter",
    "My manager prefers written updates over calls", "The eye doctor said my vision is stable",
    "I enjoy hiking in the fog", "We planted an apple tree last autumn", "My driving licence was renewed in 2022",
]


def distractors(n: int, rng: random.Random) -> list[str]:
    """``n`` distractors: the hard ones, the exact terms' near misses, then synthetic sentences."""
    out = list(HARD_DISTRACTORS) + [d for _m, _q, near in EXACT for d in near]
    while len(out) < n:
        out.append(sentence(rng))
    return out[:n]


def check_labels() -> None:
    """Paraphrases share no stem with their memory; exact terms occur in theirs."""
    for memory, question in PARAPHRASES:
        shared = set(tokenize(memory)) & set(tokenize(question))
        assert not shared, f"paraphrase shares {shared}: {question!r}"
    for memory, question, _ in EXACT:
        assert set(tokenize(question)) & set(tokenize(memory)), question


SETTINGS: list[tuple[str, str, str, float]] = [  # (label, routing, fusion, vector_weight)
    ("bm25", "bm25", "minmax", 0.0),
    ("vector", "vector", "minmax", 1.0),
    *[(f"minmax w={w}", "hybrid", "minmax", w) for w in (0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8)],
    *[(f"rrf w={w}", "hybrid", "rrf", w) for w in (0.3, 0.5, 0.7, 0.8)],
]


def build(embedder: Embedder, texts: Sequence[str]) -> AgentIndex:
    ix = AgentIndex(embedder.dim)
    vectors = embedder.embed(list(texts))
    ix.load([f"m{i:06d}" for i in range(len(texts))], [dict(Counter(tokenize(t))) for t in texts],
            [v.tobytes() for v in vectors])
    return ix


def ranks(embedder: Embedder, ix: AgentIndex, queries: list[tuple[str, str]], routing: str, fusion: str,
          w: float) -> list[int]:
    """1-based rank of each query's memory in the top 50 (51: not there)."""
    qvecs = embedder.embed([q for q, _ in queries])
    out = []
    for (q, key), qv in zip(queries, qvecs, strict=True):
        hits = ix.search(tokenize(q), qv, top_k=50, routing=routing, fusion=fusion, vector_weight=w)
        keys = [h.key for h in hits]
        out.append(keys.index(key) + 1 if key in keys else 51)
    return out


def scores(rs: list[int]) -> tuple[float, float, float]:
    n = len(rs)
    return (sum(r == 1 for r in rs) / n, sum(r <= 5 for r in rs) / n, sum(1.0 / r if r <= 50 else 0.0 for r in rs) / n)


def quality(embedder: Embedder, n_distractors: int, seed: int) -> list[list[str]]:
    texts = [m for m, _ in PARAPHRASES] + [m for m, _, _ in EXACT]
    para = [(q, f"m{i:06d}") for i, (_, q) in enumerate(PARAPHRASES)]
    exact = [(q, f"m{len(PARAPHRASES) + i:06d}") for i, (_, q, _) in enumerate(EXACT)]
    texts += distractors(n_distractors, random.Random(seed))
    ix = build(embedder, texts)
    rows = []
    for label, routing, fusion, w in SETTINGS:
        rp = ranks(embedder, ix, para, routing, fusion, w)
        re_ = ranks(embedder, ix, exact, routing, fusion, w)
        pm = scores(rp)[2]
        em = scores(re_)[2]
        a1, a5, am = scores(rp + re_)
        rows.append([embedder.identity, label,
                     f"{sum(r == 1 for r in rp)}/{len(rp)}", f"{sum(r <= 5 for r in rp)}/{len(rp)}", f"{pm:.3f}",
                     f"{sum(r == 1 for r in re_)}/{len(re_)}", f"{sum(r <= 5 for r in re_)}/{len(re_)}", f"{em:.3f}",
                     f"{a1:.2f}", f"{a5:.2f}", f"{am:.3f}"])
    return rows


def latency(embedder: Embedder, n: int, n_queries: int, seed: int, settings: list[tuple[str, str, float]]
            ) -> list[list[str]]:
    rng = random.Random(seed)
    texts = [m for m, _ in PARAPHRASES] + [m for m, _, _ in EXACT] + [sentence(rng) for _ in range(n)]
    texts = texts[:n]
    t0 = time.perf_counter()
    ix = build(embedder, texts)
    build_s = time.perf_counter() - t0
    questions = [q for _, q in PARAPHRASES] + [q for _, q, _ in EXACT]
    rows = []
    for routing, fusion, w in settings:
        times = []
        for i in range(n_queries):
            q = questions[i % len(questions)]
            t = time.perf_counter()
            qv = embedder.embed([q])[0]  # what a recall pays: embed and tokenize the query, then search
            ix.search(tokenize(q), qv, top_k=10, routing=routing, fusion=fusion, vector_weight=w)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        rows.append([embedder.identity, f"{n:,}", f"{routing}/{fusion}" if routing == "hybrid" else routing,
                     f"{statistics.median(times):.2f}", f"{times[int(0.99 * (len(times) - 1))]:.2f}",
                     f"{build_s:.1f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedders", default="hashing,wordllama")
    ap.add_argument("--distractors", type=int, default=400)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="latency at 1k and 10k memories only")
    args = ap.parse_args()
    if args.quick:
        args.sizes = "1000,10000"
    check_labels()
    embedders = []
    for spec in args.embedders.split(","):
        t = time.perf_counter()
        embedders.append(make_embedder(spec))
        print(f"{spec}: loaded in {time.perf_counter() - t:.2f} s")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nquality: {len(PARAPHRASES)} paraphrases + {len(EXACT)} exact-term queries, "
          f"{len(PARAPHRASES) + len(EXACT) + args.distractors} memories in one agent\n")
    rows = [row for e in embedders for row in quality(e, args.distractors, args.seed)]
    print_table(["embedder", "setting", "para@1", "para@5", "para MRR", "exact@1", "exact@5", "exact MRR",
                 "all@1", "all@5", "all MRR"], rows)
    print("\nlatency of one recall (tokenize + embed the query + search, top 10), ms\n")
    lat_settings = [("hybrid", "minmax", DEFAULT_VECTOR_WEIGHT), ("hybrid", "rrf", DEFAULT_VECTOR_WEIGHT),
                    ("vector", "minmax", 1.0)]
    rows = [row for n in (int(s) for s in args.sizes.split(",")) for e in embedders
            for row in latency(e, n, args.queries, args.seed, lat_settings)]
    print_table(["embedder", "memories", "routing", "p50 ms", "p99 ms", "build s"], rows)
    print(f"\nload average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
