"""deploy/docker/Dockerfile: the instructions the image must have (hadolint, in `make lint`, checks
style, not these), and the first stage's wheel built from exactly what the build copies."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from .composefile import ROOT, dockerfile_instructions, image_env


def _final_stage() -> list[tuple[str, str]]:
    stage: list[tuple[str, str]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            stage = []
        stage.append((word, rest))
    return stage


def test_the_runtime_stage_has_what_an_operator_relies_on() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:3.11-slim") for f in froms), froms
    final = _final_stage()
    words = [w for w, _ in final]
    args = {w: rest for w, rest in final}
    # installed from the first stage's wheels, never from the sources or an index
    assert "--from=build" in args["COPY"] and "--no-index" in args["RUN"] and ".whl" in args["RUN"]
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0") and words.index("USER") > words.index("RUN"), "runs as a non-root user"
    env = image_env()
    assert env["DAKERA_DATA_DIR"] == "/data" and yaml.safe_load(args["VOLUME"]) == ["/data"]
    assert env["DAKERA_PORT"] == "3300" and env["DAKERA_GOSSIP_PORT"] == "7946"  # the README's defaults
    exposed = set(args["EXPOSE"].split())
    assert exposed == {f"{env['DAKERA_PORT']}/tcp", f"{env['DAKERA_GOSSIP_PORT']}/tcp",
                       f"{env['DAKERA_GOSSIP_PORT']}/udp"}
    assert "/health/ready" in args["HEALTHCHECK"] and "CMD" in args["HEALTHCHECK"]
    assert args["STOPSIGNAL"] == "SIGTERM"
    assert yaml.safe_load(args["ENTRYPOINT"]) == ["python", "-m", "dakera_actors"]


@pytest.mark.real
def test_the_wheel_builds_from_what_the_build_stage_copies(tmp_path: Path) -> None:
    """The build stage's COPY sources, let through by .dockerignore, are enough for the wheel, and the
    wheel holds both packages and the transport entry points the node loads its transport by."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*", "an allowlist"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    context = tmp_path / "context"
    context.mkdir()
    build = [rest for word, rest in dockerfile_instructions() if word == "COPY" and "--from" not in rest]
    for rest in build:
        *sources, _dest = shlex.split(rest)
        for source in sources:
            name = source.rstrip("/")
            assert name in allowed, f"COPY {source}: kept out of the context by .dockerignore"
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, context / name)
    out = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                           "--disable-pip-version-check", "-q", "--wheel-dir", str(out), str(context)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("dakera_actors-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dakera_actors/__main__.py" in names and "transports/udp.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "udp = transports.udp:UdpTransport" in entry_points
