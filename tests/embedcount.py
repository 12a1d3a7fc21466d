"""Counting what the nodes of a test embed: vectors travel with the memories, so restarts, copies
and restores must embed nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from dakera_actors.search import Embedder
from dakera_actors.store import engine


class CountingEmbedder:
    """A node's embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder, calls: list[int]) -> None:
        self.inner, self.calls = inner, calls
        self.dim, self.name, self.identity = inner.dim, inner.name, inner.identity

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)


def count_embeddings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every node started after this call embeds through a :class:`CountingEmbedder`; the list
    gets the number of texts of each call (``sum`` of it: texts embedded)."""
    calls: list[int] = []
    load = engine.make_embedder
    monkeypatch.setattr(engine, "make_embedder", lambda spec: CountingEmbedder(load(spec), calls))
    return calls
