"""The Compose stack without Docker: dakera-1..3 of deploy/compose/docker-compose.yml run as local
``python -m dakera_actors`` processes with the environment the file (and the image's ENV) gives
each container, a real redis-server started with the file's own Redis arguments, and moto's S3
server standing in for MinIO; then the seed's verification through every node (``curl
/admin/cluster/status`` with the root key) and the official SDK storing through one node and
reading through each.

What is rewritten, and why (``test_only_the_mapped_settings_are_rewritten`` pins the list):
- the secrets .env.example leaves empty are filled with fresh values, as the operator does;
- each service's host name becomes a loopback address of its own (dakera-1 -> 127.0.0.11, ...):
  a container's network namespace is played by one address, so every node keeps the file's ports;
- a wildcard bind (``0.0.0.0``: DAKERA_HOST from the image, DAKERA_GOSSIP_BIND) becomes the node's
  own address, because here the three share one network namespace and the same port numbers;
- ``redis:6379`` and ``minio:9000`` become the test's redis-server and moto server, each on a free
  loopback port (another Redis or S3 server may already hold the standard ports on this machine);
- DAKERA_DATA_DIR (``/data``, the named volume) becomes a directory under tmp_path.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dakera import DakeraClient

from dakera_actors.testing.cluster import free_port
from tests.real.procs import NodeProcess, running, wait_for

from .composefile import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MissingVariable,
    container_env,
    dockerfile_instructions,
    load_compose,
    read_env_file,
)

pytestmark = pytest.mark.real

NODES = ("dakera-1", "dakera-2", "dakera-3")
#: each container's network namespace, played by a loopback address of its own
ADDRESS = {"dakera-1": "127.0.0.11", "dakera-2": "127.0.0.12", "dakera-3": "127.0.0.13"}
#: the settings a local run must change (see the module docstring); everything else is the file's
REWRITTEN = {"DAKERA_HOST", "DAKERA_GOSSIP_BIND", "DAKERA_CLUSTER_SEEDS", "DAKERA_GOSSIP_ADVERTISE",
             "DAKERA_API_ADVERTISE", "DAKERA_S3_ENDPOINT", "DAKERA_BACKUP_S3_ENDPOINT", "DAKERA_REDIS_URL",
             "DAKERA_DATA_DIR"}
_HOSTPORT = re.compile(r"(?<![\w.-])(dakera-\d+|redis|minio):(\d+)\b")


def filled_env() -> dict[str, str]:
    """.env.example with every empty secret filled as its comment says (openssl rand -hex / -base64)."""
    env = read_env_file(ENV_EXAMPLE)
    for key, value in env.items():
        if value == "":
            env[key] = (base64.b64encode(secrets.token_bytes(32)).decode() if key == "DAKERA_GOSSIP_KEY"
                        else secrets.token_hex(24))
    return env


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed (.ci/run installs it)")
        pytest.skip(f"{binary} is not installed")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.05)


@dataclass
class Stack:
    compose: dict[str, Any]
    env: dict[str, str]  # the filled env file
    nodes: dict[str, NodeProcess]
    given: dict[str, dict[str, str]]  # service -> the container environment the file gives it
    redis_port: int
    s3_endpoint: str

    @property
    def key(self) -> str:
        return self.env["DAKERA_ROOT_API_KEY"]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def local_env(given: dict[str, str], service: str, tmp: Path, hosts: dict[tuple[str, int], str]) -> dict[str, str]:
    """The container environment ``given`` made runnable here (each rewrite: module docstring)."""
    def remap(m: re.Match[str]) -> str:
        host, port = m.group(1), int(m.group(2))
        if (host, port) in hosts:
            return hosts[host, port]
        assert host in ADDRESS, f"{service}: no stand-in for {host}:{port}"
        return f"{ADDRESS[host]}:{port}"

    env = {k: _HOSTPORT.sub(remap, v) for k, v in given.items()}
    own = ADDRESS[service]
    env["DAKERA_HOST"] = env["DAKERA_HOST"].replace("0.0.0.0", own)
    env["DAKERA_GOSSIP_BIND"] = env["DAKERA_GOSSIP_BIND"].replace("0.0.0.0", own)
    env["DAKERA_DATA_DIR"] = str(tmp / service / "data")
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _need("redis-server")
    tmp = tmp_path_factory.mktemp("compose")
    env = filled_env()
    compose = load_compose(env)
    services = compose["services"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # redis: the file's own command (requirepass, maxmemory, the LRU policy), on a free port
        redis_port = free_port()
        command = services["redis"]["command"]
        assert command[0] == "redis-server"
        procs.append(subprocess.Popen([*command, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(redis_port, procs[-1], "redis-server")
        # minio: moto's S3 server; the buckets minio-init makes (`mc mb ... local/<bucket>`)
        s3_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(s3_port, procs[-1], "moto server")
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=env["MINIO_ROOT_USER"], aws_secret_access_key=env["MINIO_ROOT_PASSWORD"])
        for bucket in re.findall(r"local/([a-z0-9.-]+)", " ".join(services["minio-init"]["command"])):
            s3.create_bucket(Bucket=bucket)
        hosts = {("redis", 6379): f"127.0.0.1:{redis_port}", ("minio", 9000): f"127.0.0.1:{s3_port}"}
        given = {name: container_env(compose, name) for name in NODES}
        nodes = {}
        for name in NODES:
            local = local_env(given[name], name, tmp, hosts)
            (tmp / name).mkdir()
            node = NodeProcess(tmp / name, name, **local)
            node.url = f"http://{local['DAKERA_HOST']}:{node.port}"
            nodes[name] = node
        with running(list(nodes.values())):
            yield Stack(compose, env, nodes, given, redis_port, s3_endpoint)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_unedited_env_example_is_refused_naming_each_secret() -> None:
    """Copying .env.example without filling it in must not start a cluster on empty secrets."""
    env = read_env_file(ENV_EXAMPLE)
    blank = sorted(k for k, v in env.items() if v == "")
    assert {"DAKERA_ROOT_API_KEY", "DAKERA_GOSSIP_KEY", "MINIO_ROOT_PASSWORD"} <= set(blank)
    for key in blank:
        with pytest.raises(MissingVariable) as refused:
            load_compose({**filled_env(), key: ""})
        assert refused.value.name == key
    # and every variable the file asks for is in .env.example (or has a default in the file)
    asked = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    assert asked <= set(env) | {"DAKERA_IMAGE"}, asked - set(env)
    unused = set(env) - asked - {"COMPOSE_PROJECT_NAME"}
    assert not unused, f".env.example sets what the file never reads: {unused}"


def test_the_file_matches_docker_compose_config(tmp_path: Path) -> None:
    """Our reading of the file (anchors, interpolation) is the one Compose itself makes."""
    _need("docker-compose")
    env = filled_env()
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file),
                          "--profile", "monitoring", "config"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k not in env})
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    ours = load_compose(env)
    for name in NODES:
        assert {k: str(v) for k, v in resolved["services"][name]["environment"].items()} == \
            ours["services"][name]["environment"]
    for name in ("redis", "minio-init", "prometheus"):  # the last two hold $$ escapes
        # `config` prints a re-loadable file: what reaches the container as $ stays written $$
        printed = [arg.replace("$$", "$") for arg in resolved["services"][name]["command"]]
        assert printed == ours["services"][name]["command"], name
    assert set(resolved["services"]) == set(ours["services"])


def test_each_node_is_configured_as_the_seed_says() -> None:
    compose = load_compose(filled_env())
    services = compose["services"]
    for name in NODES:
        env = container_env(compose, name)
        others = [n for n in NODES if n != name]
        assert env["DAKERA_NODE_ID"] == name and env["DAKERA_CLUSTER_MODE"] == "true"
        assert env["DAKERA_CLUSTER_SEEDS"].split(",") == [f"{n}:{env['DAKERA_GOSSIP_PORT']}" for n in others]
        assert env["DAKERA_GOSSIP_BIND"] == f"0.0.0.0:{env['DAKERA_GOSSIP_PORT']}"
        assert env["DAKERA_API_ADVERTISE"] == f"http://{name}:{env['DAKERA_PORT']}"
        assert env["DAKERA_STORAGE"] == "s3" and env["DAKERA_S3_ENDPOINT"] == "http://minio:9000"
        assert env["DAKERA_REDIS_URL"].endswith("@redis:6379/0")
        assert env["DAKERA_DATA_DIR"] == "/data" and f"{name}-data:/data" in services[name]["volumes"]
        labels = services[name]["labels"]
        assert labels["traefik.http.services.dakera.loadbalancer.server.port"] == env["DAKERA_PORT"]
        assert labels["traefik.http.services.dakera.loadbalancer.healthcheck.path"] == "/health/ready"
        assert "condition" in services[name]["depends_on"]["minio-init"]
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru" and "--maxmemory" in command
    assert "127.0.0.1:3100:3100" in services["traefik"]["ports"]
    assert {"prometheus", "grafana"} == {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}


def test_only_the_mapped_settings_are_rewritten(stack: Stack) -> None:
    for name, node in stack.nodes.items():
        given = stack.given[name]
        extra = {k for k in node.env if k.startswith("DAKERA_")} - set(given)
        assert not extra, f"{name}: set here but not by the file: {extra}"
        changed = {k for k in given if node.env.get(k) != given[k]}
        assert changed <= REWRITTEN, changed - REWRITTEN
        assert node.env["DAKERA_GOSSIP_ADVERTISE"] == f"{ADDRESS[name]}:7946"


def test_seed_verification_through_every_node(stack: Stack) -> None:
    """``curl -H "Authorization: Bearer $DAKERA_ROOT_API_KEY" .../admin/cluster/status``: three
    members, one leader, healthy, the cache's Redis answering, as every node sees it."""
    def formed() -> bool:
        views = [httpx.get(n.url + "/admin/cluster/status", headers=stack.auth(), timeout=2).json()
                 for n in stack.nodes.values()]
        return all(v["status"] == "healthy" and v["nodes"] == 3 and v["alive"] == 3 and v["leader"] in NODES
                   and v["unassigned_shards"] == 0 and v["shards_moving"] == 0 and v["redis_healthy"] is True
                   for v in views) and len({(v["leader"], v["fencing_token"]) for v in views}) == 1

    wait_for(formed, 30, "the compose stack forms one healthy three-node cluster")
    for name, node in stack.nodes.items():
        assert httpx.get(node.url + "/admin/cluster/status", timeout=2).status_code == 401
        view = httpx.get(node.url + "/admin/cluster/status", headers=stack.auth(), timeout=2).json()
        assert view["node_id"] == name
        # every member as this node knows it: by the addresses the file advertises (mapped)
        members = httpx.get(node.url + "/admin/cluster/nodes", headers=stack.auth(), timeout=2).json()
        assert [(m["id"], m["state"], m["api_address"], m["gossip_address"]) for m in members] == [
            (n, "Alive", f"http://{ADDRESS[n]}:3300", f"{ADDRESS[n]}:7946") for n in NODES]


def test_sdk_stores_through_one_node_and_reads_through_each(stack: Stack) -> None:
    wait_for(lambda: all(httpx.get(n.url + "/health/ready", timeout=2).status_code == 200
                         for n in stack.nodes.values()), 30, "every node ready")
    clients = {name: DakeraClient(node.url, api_key=stack.key, max_retries=1, timeout=10)
               for name, node in stack.nodes.items()}
    stored = [clients["dakera-1"].store_memory(f"compose-agent-{i}", f"memory {i} stored through dakera-1")
              for i in range(8)]  # eight agents: their shards' primaries are spread over the nodes
    for name, c in clients.items():
        for i, memory in enumerate(stored):
            got = c.get_memory(f"compose-agent-{i}", memory["id"])
            assert got["content"] == f"memory {i} stored through dakera-1", name
    # and the other way round: through dakera-3, read through dakera-2
    late = clients["dakera-3"].store_memory("compose-agent-0", "stored through dakera-3")
    assert clients["dakera-2"].get_memory("compose-agent-0", late["id"])["content"] == "stored through dakera-3"


def test_healthchecks_of_the_image_and_the_file_pass_on_a_ready_node(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK and the services' healthcheck, run as written (the container's
    127.0.0.1 being the node's own address here): exit 0 on a ready node, non-zero where none is."""
    image = next(rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK")
    image_cmd = yaml.safe_load(image[image.index("CMD") + 3:].strip())
    file_cmd = stack.compose["services"]["dakera-1"]["healthcheck"]["test"]
    assert file_cmd[0] == "CMD"
    for cmd in (image_cmd, file_cmd[1:]):
        assert cmd[0] == "python" and "/health/ready" in cmd[-1]
        for name, node in stack.nodes.items():
            run = [sys.executable, *[a.replace("127.0.0.1", ADDRESS[name]) for a in cmd[1:]]]
            done = subprocess.run(run, env={**os.environ, "DAKERA_PORT": str(node.port)}, capture_output=True,
                                  timeout=10)
            assert done.returncode == 0, done.stderr
        nobody = [sys.executable, *[a.replace("127.0.0.1", "127.0.0.14") for a in cmd[1:]]]
        assert subprocess.run(nobody, capture_output=True, timeout=10).returncode != 0


#: files other parts of deploy/ provide (the alert rules' and the dashboard's branch)
MONITORING_FILES = {"../prometheus/prometheus.yml", "../prometheus/alerts.yml", "../grafana/dakera-actors.json"}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_every_bind_mount_source_exists() -> None:
    services = load_compose(filled_env())["services"]
    missing = {source for s in services.values() for source, _ in _bind_mounts(s)
               if source != "/var/run/docker.sock" and not (COMPOSE_DIR / source).exists()}
    assert missing <= MONITORING_FILES, missing - MONITORING_FILES


def test_prometheus_config_fits_the_service_that_runs_it() -> None:
    """The rule files and the bearer key file prometheus.yml names are where the service puts them,
    and it scrapes every node on its API port."""
    config_path = COMPOSE_DIR.parent / "prometheus" / "prometheus.yml"
    if not config_path.exists():
        pytest.skip("deploy/prometheus/prometheus.yml is not in this tree yet")
    service = load_compose(filled_env())["services"]["prometheus"]
    targets = {target for _, target in _bind_mounts(service)}
    config = yaml.safe_load(config_path.read_text())
    base = Path("/etc/prometheus")
    assert str(base / "prometheus.yml") in targets
    for rule_file in config.get("rule_files", []):
        assert str(base / rule_file) in targets, f"rule file {rule_file} is not mounted"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "dakera"]
    key_file = str(base / job["authorization"]["credentials_file"])
    assert f"> {key_file}" in service["command"][0], "the service does not write the key where the job reads it"
    listed = [t for group in job["static_configs"] for t in group["targets"]]
    assert listed == [f"{n}:{container_env(load_compose(filled_env()), n)['DAKERA_PORT']}" for n in NODES]


def test_every_node_exports_what_the_alerts_and_dashboard_use(stack: Stack) -> None:
    """Prometheus's view of the stack: each target prometheus.yml lists, scraped with the root key
    (mapped to its node), has every dakera_* name the alert rules and the dashboard query."""
    from prometheus_client.parser import text_string_to_metric_families

    from .monitoring import missing_from, used_metric_names

    used = used_metric_names()
    assert used, "no metric names found in the rules and the dashboard"
    for name, node in stack.nodes.items():
        # a write through each node first (whatever ran before): the WAL has fsynced, a route has latency
        DakeraClient(node.url, api_key=stack.key, max_retries=1, timeout=10).store_memory(
            f"metrics-{name}", "scraped")
        scrape = httpx.get(node.url + "/metrics", headers=stack.auth(), timeout=5)
        assert scrape.status_code == 200, scrape.text
        names = {s.name for family in text_string_to_metric_families(scrape.text) for s in family.samples}
        assert not missing_from(names, used), f"{name} lacks {sorted(missing_from(names, used))}"
        assert httpx.get(node.url + "/metrics", timeout=5).status_code == 401  # hence the key file
