"""Re-embedding costs on the event loop, per shard size: the scan for the next batch
(:func:`pending`), the progress reading, applying one ``revec`` batch, and the switch
(``reembed``: every agent's index rebuilt from the staged vectors), plus the embedding of a batch
(off the loop, in a worker thread). The loop's 50 ms pause per batch is not included. Prints one line per size.

    python -m bench.reembed [sizes...]   (default 1000 10000 50000)
"""

from __future__ import annotations

import sys
import time

from dakera_actors.search import make_embedder, tokenize
from dakera_actors.store.model import Memory
from dakera_actors.store.reembed import BATCH, progress
from dakera_actors.store.shard import ShardSet, content_hash, pending

OLD, NEW = make_embedder("hashing:256"), make_embedder("hashing:384")


def ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def run(size: int) -> None:
    shards = ShardSet(1, NEW.dim, tokenize, NEW.identity)
    contents = [f"memory {i} about topic {i % 97} and the weather in city {i % 31}" for i in range(size)]
    vectors = OLD.embed(contents)
    for i, content in enumerate(contents):
        memory = Memory(id=f"m{i}", agent_id=f"agent-{i % 20}", content=content, created_at=1.0, updated_at=1.0)
        shards.apply(i + 1, 0, "put", {"m": memory.to_record(), "v": vectors[i].tobytes(), "e": OLD.identity})
    shard = shards.shard(0)
    lsn = size
    apply = embed = 0.0
    t0 = time.perf_counter()
    started = time.perf_counter()
    todo = pending(shard, NEW.identity, NEW.dim)  # the loop lists a shard's work once per look
    scan = ms(started)
    batches = 0
    for first in range(0, len(todo), BATCH):
        work = todo[first:first + BATCH]
        started = time.perf_counter()
        new = NEW.embed([c for _a, _m, c in work])
        embed += ms(started)
        body = {"e": NEW.identity, "d": NEW.dim,
                "vs": [[a, m, content_hash(c), new[n].tobytes()] for n, (a, m, c) in enumerate(work)]}
        lsn += 1
        started = time.perf_counter()
        shards.apply(lsn, 0, "revec", body)
        apply += ms(started)
        batches += 1
    started = time.perf_counter()
    left = progress(shards, lambda s: True).memories_remaining
    reading = ms(started)
    started = time.perf_counter()
    switched = shards.apply(lsn + 1, 0, "reembed", {"e": NEW.identity, "d": NEW.dim})
    switch = ms(started)
    assert switched and left == 0
    print(f"{size:>7} memories: {batches} batches of {BATCH}; on the loop: listing the work {scan:.1f} ms "
          f"once, applying a batch {apply / batches:.2f} ms; progress reading {reading:.1f} ms; "
          f"switch {switch:.0f} ms; embedding (worker thread) {embed / batches:.1f} ms per batch; "
          f"total {ms(t0) / 1000:.1f} s unthrottled")


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1000, 10000, 50000]:
        run(n)
