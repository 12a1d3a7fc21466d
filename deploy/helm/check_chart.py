"""Offline checks of the dakera-actors Helm chart (run by `make lint`).

- ``helm lint --strict`` and rendering are Helm's own Go code (the Helm v4 SDK), reached through
  the ``helm-python-sdk`` package's bundled ``libhelm_c``: no ``helm`` command-line binary is
  involved, and no cluster is contacted (``lookup`` would return nothing; the chart uses none).
- Every rendered manifest is validated with ``kubernetes-validate --strict`` (the Kubernetes
  OpenAPI schemas that package ships, no network) for the oldest Kubernetes the chart accepts and
  the newest the package knows. The ServiceMonitor is a CRD (monitoring.coreos.com/v1) those
  schemas do not contain: it is rendered and linted, not schema-checked.
- Values the chart must refuse (replicaCount below 3, no keys, s3 without an endpoint, a grace
  period shorter than the drain) must fail to render.

Exit status 0 when everything holds; each problem is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent / "dakera-actors"
#: the chart's kubeVersion floor and the newest version kubernetes-validate ships schemas for
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

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
        problems = lint(values)
        docs = render(values)
        for doc in docs:
            problems.extend(schema_problems(doc))
        kinds = ", ".join(sorted(d["kind"] for d in docs))
        unchecked = sorted(d["kind"] for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS)
        print(f"chart {name}: lint --strict and {len(docs)} manifests ({kinds}) "
              f"{'FAILED' if problems else 'ok'}"
              + (f"; not schema-checked (CRD): {', '.join(unchecked)}" if unchecked else ""))
        failures.extend(f"{name}: {p}" for p in problems)
    for name, (values, phrase) in REFUSED.items():
        try:
            render(values)
        except helm.HelmRenderError as exc:
            if phrase in str(exc):
                print(f"chart refuses {name}: ok")
                continue
            failures.append(f"{name}: failed, but not naming {phrase!r}: {exc}")
        else:
            failures.append(f"{name}: rendered, should have failed naming {phrase!r}")
    for failure in failures:
        print("FAIL", failure)
    print(f"helm SDK {helm.helm_sdk_version()}, schemas for Kubernetes {', '.join(KUBE_VERSIONS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
