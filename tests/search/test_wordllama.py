"""The WordLlama default embedder: loaded from the wheel with the network unavailable, its
dimensions and normalisation, its truncations, and the errors for a bad spec or a missing file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dakera_actors import config as config_module
from dakera_actors.config import Config, ConfigError
from dakera_actors.search import embed
from dakera_actors.search.embed import (
    DEFAULT_EMBEDDER,
    WORDLLAMA_DIMS,
    Embedder,
    EmbedderUnavailable,
    WordLlamaEmbedder,
    make_embedder,
)


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Any connection attempt or name lookup raises; HOME is an empty folder (no download cache
    to fall back on) and the in-process model cache is empty, so the files are really read."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkUsed(f"network used: {args[1:3]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(embed, "_WORDLLAMA_MODELS", {})
    return home


def test_loads_with_the_network_unavailable(no_network: Path) -> None:
    e = make_embedder("wordllama")
    assert isinstance(e, WordLlamaEmbedder) and isinstance(e, Embedder)
    assert e.dim == 256 and e.name == e.identity == "wordllama:256"
    m = e.embed(["My daughter has started taking violin lessons", "what instrument is the kid learning"])
    assert m.shape == (2, 256) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
    assert list(no_network.iterdir()) == []  # nothing cached under HOME either


def test_the_library_default_load_would_download(no_network: Path) -> None:
    """Why embed.py passes the package folder as cache_dir: on the pinned release WordLlama.load()
    looks for the tokenizer under wordllama/tokenizer/ (the wheel has tokenizers/) and downloads."""
    wordllama = embed._import_wordllama()
    with pytest.raises(NetworkUsed):
        wordllama.load()


@pytest.mark.parametrize("dim", WORDLLAMA_DIMS)
def test_truncations_are_unit_vectors_of_their_dim(dim: int) -> None:
    e = make_embedder(f"wordllama:{dim}")
    assert e.dim == dim and e.identity == f"wordllama:{dim}"
    texts = ["The user prefers dark mode", "Berlin", "a" * 50_000, "?", ""]
    m = e.embed(texts)
    assert m.shape == (5, dim) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m[:4], axis=1), 1.0, atol=1e-6)
    assert not m[4].any()  # a text with no token: a zero row, never NaN
    assert e.embed([]).shape == (0, dim)
    # a row depends on its text alone, not on the batch it came in
    assert np.allclose(m[1], e.embed(["Berlin"])[0], atol=1e-6)
    # the truncation is the full model's first dims, renormalised
    full = make_embedder("wordllama:256").embed(texts[:1])[0][:dim]
    assert np.allclose(m[0], full / np.linalg.norm(full), atol=1e-5)


def test_matches_the_librarys_own_pooling() -> None:
    wordllama = embed._import_wordllama()
    ref = wordllama.load(cache_dir=embed.wordllama_dir(), disable_download=True)
    texts = ["My daughter has started taking violin lessons", "what instrument is the kid learning"]
    assert np.allclose(make_embedder("wordllama").embed(texts), ref.embed(texts, norm=True), atol=1e-6)


def test_recalls_by_meaning_where_hashing_cannot() -> None:
    memories = ["My daughter has started taking violin lessons", "The quarterly tax report is due on Friday",
                "I moved to Lisbon last spring", "Our dog needs his vaccinations renewed"]
    query = ["what instrument is the kid learning"]
    wl = make_embedder("wordllama")
    assert int(np.argmax(wl.embed(memories) @ wl.embed(query)[0])) == 0


def test_default_spec_is_wordllama() -> None:
    assert DEFAULT_EMBEDDER == "wordllama" and Config().embedder == "wordllama"
    assert make_embedder().identity == make_embedder("").identity == "wordllama:256"
    assert config_module.WORDLLAMA_DIMS == WORDLLAMA_DIMS


@pytest.mark.parametrize("spec", ["wordllama:512", "wordllama:1024", "wordllama:32", "wordllama:", "wordllama:x"])
def test_other_dims_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="64, 128, 256"):
        make_embedder(spec)
    with pytest.raises(ConfigError, match="DAKERA_EMBEDDER"):
        Config.from_env({"DAKERA_EMBEDDER": spec})


@pytest.mark.parametrize("spec", ["wordllama", "wordllama:64", "wordllama:128", "wordllama:256", "hashing",
                                  "hashing:128", "sentence-transformers:/models/mini"])
def test_config_accepts(spec: str) -> None:
    assert Config.from_env({"DAKERA_EMBEDDER": spec}).embedder == spec


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="l2_supercat_256.safetensors"):
        WordLlamaEmbedder(folder=tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "l2_supercat_256.safetensors").write_bytes(b"")
    with pytest.raises(EmbedderUnavailable, match="tokenizer_config.json"):
        WordLlamaEmbedder(folder=tmp_path)


def test_importing_keeps_the_hosts_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import sys

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    for name in [m for m in sys.modules if m == "wordllama" or m.startswith("wordllama.")]:
        monkeypatch.delitem(sys.modules, name)
    embed._import_wordllama()  # the package runs logging.basicConfig on import
    assert root.handlers == []
