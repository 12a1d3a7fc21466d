"""A node with ``DAKERA_STORAGE=s3`` proves at start that it can write and read its prefix, against
a real S3-compatible server (moto's), and a wrong endpoint or bucket is one line naming the
variable, exit 2, before anything else starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dakera_actors.testing.cluster import free_port
from tests.real.procs import ROOT, NodeProcess

from .conftest import BUCKET

pytestmark = pytest.mark.real


def s3_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {"DAKERA_STORAGE": "s3", "DAKERA_S3_ENDPOINT": endpoint, "DAKERA_S3_BUCKET": BUCKET,
            "DAKERA_S3_ACCESS_KEY": "test", "DAKERA_S3_SECRET_KEY": "test", "DAKERA_S3_PREFIX": "node-tests",
            **extra}


def test_a_node_on_s3_probes_its_prefix_and_serves(tmp_path: Path, moto_endpoint: str) -> None:
    import boto3

    keys = {"DAKERA_S3_ACCESS_KEY": "AKIDNEVERLOGGED", "DAKERA_S3_SECRET_KEY": "SecretNeverLogged123"}
    node = NodeProcess(tmp_path, **s3_env(moto_endpoint, **keys)).start()
    try:
        node.wait_healthy()
        log = node.log()
        ready = [line for line in log.splitlines() if "object_store_ready" in line]
        assert len(ready) == 1 and "prefix=node-tests" in ready[0] and f"bucket={BUCKET}" in ready[0], log[-2000:]
        assert "AKIDNEVERLOGGED" not in log and "SecretNeverLogged123" not in log  # keys are never logged
    finally:
        node.stop()
    # the probe cleaned up after itself
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="node-tests/probe/").get("KeyCount", 0) == 0


@pytest.mark.parametrize(("change", "variable"), [
    ("endpoint", "DAKERA_S3_ENDPOINT"),
    ("bucket", "DAKERA_S3_BUCKET"),
])
def test_an_unusable_object_store_exits_2_naming_the_variable(tmp_path: Path, moto_endpoint: str, change: str,
                                                               variable: str) -> None:
    env = s3_env(f"http://127.0.0.1:{free_port()}" if change == "endpoint" else moto_endpoint)
    if change == "bucket":
        env["DAKERA_S3_BUCKET"] = "no-such-bucket-here"
    run_env = dict(NodeProcess(tmp_path, **env).env)
    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=run_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    # the log lines of the node's start and stop, then the one line that says why
    assert lines[-1].startswith(f"dakera_actors: cannot start: {variable}:"), lines[-3:]
    assert sum(1 for line in lines if line.startswith("dakera_actors:")) == 1
    assert not (tmp_path / "node-data" / "wal").exists() or not any((tmp_path / "node-data" / "wal").iterdir())
