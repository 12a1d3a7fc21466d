"""What deploy/prometheus/alerts.yml and deploy/grafana/dakera-actors.json ask of the nodes' metrics:
the PromQL expressions they hold and the ``dakera_*`` names in them, for the tests that check the
files and the tests that scrape real nodes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dakera-actors.json"

# a metric name: dakera_ then word characters, not part of a longer identifier (recording rules'
# names hold a colon and label names follow `{` or `by (`, neither of which starts with dakera_)
_NAME = re.compile(r"(?<![\w:])dakera_[a-zA-Z0-9_]+(?![\w:])")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def metric_names(exprs: Iterable[str]) -> set[str]:
    return {name for expr in exprs for name in _NAME.findall(expr)}


def used_metric_names() -> set[str]:
    """Every dakera_* name the alert rules and the dashboard query."""
    names = metric_names(alert_exprs()) | metric_names(dashboard_exprs())
    assert len(names) > 10, f"too few metric names found; is the pattern broken? {names}"
    return names


def missing_from(sample_names: set[str], used: set[str]) -> set[str]:
    """The used names a scrape with these sample names does not have. A histogram may be named by
    its family (then any of its _bucket/_sum/_count samples will do) or by one of those series."""
    return {name for name in used
            if name not in sample_names and not any(name + s in sample_names for s in HISTOGRAM_SUFFIXES)}
