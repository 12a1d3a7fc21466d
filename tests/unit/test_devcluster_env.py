"""The local cluster's nodes share one cold tier directory, like a bucket, unless told otherwise."""

from __future__ import annotations

import argparse

import pytest

from dakera_actors.devcluster import node_env


def args(root: str) -> argparse.Namespace:
    return argparse.Namespace(base_port=3300, base_gossip_port=7946, data_root=root)


def test_nodes_share_one_objects_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DAKERA_STORAGE", "DAKERA_STORAGE_PATH"):
        monkeypatch.delenv(var, raising=False)
    paths = {node_env(i, 3, args("/tmp/dc"), "k")["DAKERA_STORAGE_PATH"] for i in (1, 2, 3)}
    assert paths == {"/tmp/dc/objects"}
    assert node_env(1, 3, args("/tmp/dc"), "k")["DAKERA_DATA_DIR"] == "/tmp/dc/node-1"


def test_an_operator_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAKERA_STORAGE_PATH", "/mnt/shared")
    assert node_env(2, 3, args("/tmp/dc"), "k")["DAKERA_STORAGE_PATH"] == "/mnt/shared"
    monkeypatch.delenv("DAKERA_STORAGE_PATH")
    monkeypatch.setenv("DAKERA_STORAGE", "s3")
    assert "DAKERA_STORAGE_PATH" not in node_env(2, 3, args("/tmp/dc"), "k")
