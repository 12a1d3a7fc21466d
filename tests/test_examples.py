"""Every example runs, so none of them rots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(name: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.real
def test_embedded_node() -> None:
    out = run("embedded_node.py")
    assert "health=healthy ready=True" in out and "node stopped" in out


def test_local_cluster() -> None:
    out = run("local_cluster.py").splitlines()
    assert out[0].endswith("{'node-2': True, 'node-3': True}")
    assert out[1].endswith("{'node-2': True, 'node-3': False}")
    assert out[2].endswith("{'node-2': False, 'node-3': True}")
    assert out[3].endswith("{'node-2': True, 'node-3': True}")
    assert "'node_id': 'node-3'" in out[4]
