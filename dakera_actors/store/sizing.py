"""Cutting a shard's memories into parts by encoded size, so no part exceeds a frame or a WAL record.

A count (256 memories a part) is not a size: 256 memories of 100,000 non-ASCII characters are
over 100 MiB. Parts are cut by their msgpack size instead; a single item larger than the budget
still goes alone (the API's limits keep any one memory far below a frame or a record).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgpack


def packed_size(value: Any) -> int:
    """Bytes ``value`` takes in msgpack, as frames and WAL records carry it."""
    return len(msgpack.packb(value, use_bin_type=True))


def cut_by_bytes(items: Iterable[Any], budget: int) -> Iterator[tuple[list[Any], int]]:
    """Consecutive runs of ``items`` of at most ``budget`` encoded bytes each, with their sizes.
    Yields at least one (possibly empty) run, so an empty shard still makes one part."""
    run: list[Any] = []
    size = 0
    for item in items:
        n = packed_size(item)
        if run and size + n > budget:
            yield run, size
            run, size = [], 0
        run.append(item)
        size += n
    yield run, size
