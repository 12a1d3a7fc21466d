"""The Helm chart, rendered by Helm's own engine (helm-python-sdk's libhelm_c, the Helm v4 SDK):
the seeds, node ids and advertised addresses each pod gets (read back through the node's own
Config), the probes and the preStop/postStart hook against the node's real routes, and the
values the chart must refuse. Fast: nothing is started but an in-process node for the routes."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

helm = pytest.importorskip("helm_python")

from dakera_actors import Config, open_node  # noqa: E402
from dakera_actors.operations.maintenance import MaintenanceStatus  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "deploy" / "helm"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_chart = load(CHART_DIR / "check_chart.py", "dakera_check_chart")
lifecycle = load(CHART_DIR / "dakera-actors" / "files" / "lifecycle.py", "dakera_lifecycle")

ROOT_KEY = "test-root-key"
GOSSIP_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
KEYS = {"auth": {"rootApiKey": ROOT_KEY, "gossipKey": GOSSIP_KEY}}


def render(replicas: int, **values: Any) -> dict[tuple[str, str], dict[str, Any]]:
    docs = check_chart.render({**KEYS, "dakera": {"replicaCount": replicas}, **values}, name="mem", namespace="prod")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def statefulset(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (sts,) = [d for (kind, _), d in docs.items() if kind == "StatefulSet"]
    return sts


def container(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (c,) = statefulset(docs)["spec"]["template"]["spec"]["containers"]
    return c


def pod_env(docs: dict[tuple[str, str], dict[str, Any]], pod: str) -> dict[str, str]:
    """The environment the node in ``pod`` sees: Kubernetes' $(VAR) references to earlier
    variables expanded, the Secret's values put in."""
    secret = docs[("Secret", "mem-dakera-actors")]["data"]
    import base64

    env: dict[str, str] = {}
    for item in container(docs)["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "mem-dakera-actors"
            env[item["name"]] = base64.b64decode(secret[ref["key"]]).decode()
    return env


@pytest.mark.parametrize("replicas", [3, 5])
def test_each_pod_is_seeded_with_every_other_pod_at_its_stable_address(replicas: int) -> None:
    docs = render(replicas)
    sts = statefulset(docs)
    headless = docs[("Service", sts["spec"]["serviceName"])]
    assert sts["spec"]["replicas"] == replicas
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert {(p["port"], p["protocol"]) for p in headless["spec"]["ports"]} == {
        (3300, "TCP"), (7946, "UDP"), (7946, "TCP")}
    pods = [f"mem-dakera-actors-{i}" for i in range(replicas)]
    # the DNS name Kubernetes gives a StatefulSet pod: <pod>.<serviceName>.<namespace>.svc.<domain>
    address = {p: f"{p}.{headless['metadata']['name']}.prod.svc.cluster.local:7946" for p in pods}
    for pod in pods:
        config = Config.from_env(pod_env(docs, pod))  # what the node itself reads, validators included
        assert config.cluster_mode and config.node_id == pod
        assert config.gossip_bind_address == "0.0.0.0:7946"
        assert config.gossip_advertise == address[pod]
        assert config.api_advertise == f"http://{address[pod].rsplit(':', 1)[0]}:3300"
        # the node drops the seed equal to its own advertised address (membership/core.py), so
        # what it contacts is exactly every other pod
        assert config.gossip_advertise in config.cluster_seeds
        others = [s for s in config.cluster_seeds if s != config.gossip_advertise]
        assert sorted(others) == sorted(address[p] for p in pods if p != pod)
        assert len(config.cluster_seeds) == replicas
        assert config.root_api_key == ROOT_KEY and config.gossip_keys and config.data_dir == Path("/data")


def test_values_reach_the_node_as_its_variables() -> None:
    docs = render(3, dakera={"replicaCount": 3, "replicationFactor": 3, "shards": 128, "writeAck": "quorum"},
                  storage={"type": "s3", "s3": {"endpoint": "http://minio:9000", "bucket": "mem-bucket", "prefix": "p/",
                                                "accessKey": "ak", "secretKey": "sk"}},
                  redis={"url": "redis://:pw@redis:6379/0"})
    config = Config.from_env(pod_env(docs, "mem-dakera-actors-1"))
    assert (config.replication_factor, config.shards, config.write_ack) == (3, 128, "quorum")
    assert (config.storage, config.s3_endpoint, config.s3_bucket, config.s3_prefix) == ("s3", "http://minio:9000",
                                                                                       "mem-bucket", "p/")
    assert (config.s3_access_key, config.s3_secret_key, config.redis_url) == ("ak", "sk", "redis://:pw@redis:6379/0")
    claim = statefulset(docs)["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container(docs)["volumeMounts"]


async def test_probes_point_at_the_node_health_routes(tmp_path: Path) -> None:
    c = container(render(3))
    http_port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert http_port == 3300
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    # and those routes answer 200 without the API key on a real (in-process) node that has one
    async with open_node(Config(data_dir=tmp_path / "d", node_id="n", root_api_key=ROOT_KEY),
                         serve_http=False) as node:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),  # type: ignore[arg-type]
                                     base_url="http://node") as client:
            for probe in ("readinessProbe", "livenessProbe"):
                assert (await client.get(c[probe]["httpGet"]["path"])).status_code == 200


def hook_calls() -> set[tuple[str, str]]:
    """(method, path) of every node call in lifecycle.py."""
    source = (CHART_DIR / "dakera-actors" / "files" / "lifecycle.py").read_text()
    calls = set(re.findall(r'node\.call\("(GET|POST)", "(/[^"]+)"', source))
    assert len(calls) == 4, calls
    return calls


async def test_lifecycle_hooks_run_the_mounted_script_that_calls_the_real_maintenance_routes(tmp_path: Path) -> None:
    docs = render(3)
    c = container(docs)
    pod_spec = statefulset(docs)["spec"]["template"]["spec"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["python", "/etc/dakera-actors/lifecycle.py", "prestop"]
    assert c["lifecycle"]["postStart"]["exec"]["command"] == ["python", "/etc/dakera-actors/lifecycle.py", "poststart"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/dakera-actors")
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    hooks = docs[("ConfigMap", volume["configMap"]["name"])]
    assert hooks["data"]["lifecycle.py"].strip() == (
        CHART_DIR / "dakera-actors" / "files" / "lifecycle.py").read_text().strip()
    assert {"/admin/maintenance/enable", "/admin/maintenance/status"} <= {p for _, p in hook_calls()}
    # every route the script calls exists on the node with that method
    async with open_node(Config(data_dir=tmp_path / "d", node_id="n"), serve_http=False) as node:
        adapter = node.app.url_map.bind("node")
        for method, path in hook_calls():
            adapter.match(path, method=method)  # raises NotFound / MethodNotAllowed
    # the phase the script waits for is the one the node reports once nothing is left on it
    assert MaintenanceStatus("n", True, 0, [], []).phase == "drained"
    assert MaintenanceStatus("n", True, 1, [], [1]).phase == "draining"
    # the grace period covers both of preStop's waits and the node's own shutdown
    env = {e["name"]: e.get("value") for e in c["env"]}
    waits = int(env["HOOK_DRAIN_TIMEOUT_SECONDS"]) + int(env["HOOK_SETTLE_TIMEOUT_SECONDS"])
    assert pod_spec["terminationGracePeriodSeconds"] >= waits + 4


def test_pdb_allows_one_pod_down_and_the_service_monitor_is_optional() -> None:
    docs = render(3)
    pdb = docs[("PodDisruptionBudget", "mem-dakera-actors")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == statefulset(docs)["spec"]["selector"]["matchLabels"]
    assert not [k for k in docs if k[0] == "ServiceMonitor"]
    monitored = render(3, monitoring={"serviceMonitor": {"enabled": True}})
    sm = monitored[("ServiceMonitor", "mem-dakera-actors")]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["endpoints"][0]["authorization"]["credentials"] == {"name": "mem-dakera-actors",
                                                                          "key": "root-api-key"}
    gossip = monitored[("Service", "mem-dakera-actors-gossip")]["metadata"]["labels"]
    assert all(gossip.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())


def test_existing_secret_is_used_and_no_secret_is_rendered() -> None:
    docs = check_chart.render({"auth": {"existingSecret": "mine"}}, name="mem", namespace="prod")
    assert not [d for d in docs if d["kind"] == "Secret"]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs["DAKERA_ROOT_API_KEY"] == {"name": "mine", "key": "root-api-key"}
    assert refs["DAKERA_GOSSIP_KEY"] == {"name": "mine", "key": "gossip-key"}


@pytest.mark.parametrize("replicas", [2, 1, 0])
def test_fewer_than_three_replicas_fails_to_render(replicas: int) -> None:
    with pytest.raises(helm.HelmRenderError, match="replicaCount must be 3 or more"):
        render(replicas)


def test_the_schema_check_can_fail() -> None:
    """kubernetes-validate, as make lint runs it, rejects a manifest the API server would."""
    sts = copy.deepcopy(statefulset(render(3)))
    assert check_chart.schema_problems(sts) == []
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    assert any("'paht' was unexpected" in p for p in check_chart.schema_problems(sts))
    sts = copy.deepcopy(statefulset(render(3)))
    sts["spec"]["replicas"] = "three"
    assert check_chart.schema_problems(sts)


@pytest.mark.parametrize("replicas", [3, 5])
def test_the_helm_cli_renders_the_same_manifests(replicas: int) -> None:
    """helm template (the v3.8.1 binary check_chart.helm_cli fetches from PyPI) agrees with the SDK."""
    values = {**KEYS, "dakera": {"replicaCount": replicas}, "monitoring": {"serviceMonitor": {"enabled": True}}}
    cli = check_chart.render_cli(values, name="mem", namespace="prod")
    assert check_chart.same(cli, check_chart.render(values, name="mem", namespace="prod"))
    (sts,) = [d for d in cli if d["kind"] == "StatefulSet"]
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert len(env["DAKERA_CLUSTER_SEEDS"].split(",")) == replicas
    with pytest.raises(RuntimeError, match="replicaCount must be 3 or more"):
        check_chart.render_cli({**KEYS, "dakera": {"replicaCount": 2}})
    assert check_chart.lint_cli(values) == []
