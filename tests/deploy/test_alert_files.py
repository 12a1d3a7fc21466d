"""The alert rules and the Grafana dashboard as files: every alert carries `for`, a severity and a
runbook and has promtool unit tests firing and not firing; the dashboard asks for its Prometheus
data source and shows what the issue lists; with promtool (Debian's prometheus package, installed
by .ci/run) the rules' unit tests run and every dashboard query parses as PromQL. Without promtool
those two are skipped outside CI and fail in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .monitoring import (
    ALERTS,
    ALERTS_TEST,
    alert_rules,
    dashboard,
    dashboard_exprs,
    metric_names,
    missing_from,
    used_metric_names,
)

SEVERITIES = {"critical", "warning"}
# the seed's four thresholds and the issue's other four subjects, by the metric each alert reads
REQUIRED = {
    "dakera_gossip_members", "dakera_replication_lag_ms", "dakera_shard_balance",
    "dakera_leader_lease_remaining_ms", "dakera_under_replicated_shards", "dakera_cold_tier_lag_seconds",
    "dakera_backups_total",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def test_every_alert_has_for_severity_summary_description_and_runbook() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for` duration"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not one of {SEVERITIES}"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"


def test_the_issue_s_thresholds_and_subjects_are_all_alerted_on() -> None:
    exprs = {rule["alert"]: str(rule["expr"]) for rule in alert_rules()}
    assert REQUIRED <= metric_names(exprs.values()), REQUIRED - metric_names(exprs.values())
    assert any(re.search(r'\bup\{job="dakera"\} == 0', e) for e in exprs.values()), "no node-down alert"
    assert "> 1000" in exprs["DakeraReplicationLagHigh"]
    assert "> 0.3" in exprs["DakeraShardBalanceSkewed"]
    # the lease margin: one renewal period of the README's default TTL (1000 ms, renewed every third)
    assert "< 333" in exprs["DakeraLeaderLeaseLow"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        assert group["input_series"], group.get("name")
        for check in group["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), f"alerts never tested firing: {names - fired}"
    assert names - quiet == set(), f"alerts never tested staying quiet: {names - quiet}"


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", ALERTS_TEST.name], cwd=ALERTS.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = dash["panels"]
    return panels


def test_dashboard_uses_its_prometheus_datasource_variable_everywhere() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in _panels(dash):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_dashboard_shows_what_the_issue_lists() -> None:
    names = metric_names(dashboard_exprs())
    wanted = {"dakera_gossip_members", "dakera_fencing_token", "dakera_is_leader", "dakera_leader_lease_remaining_ms",
              "dakera_shard_balance", "dakera_replication_shard_lag_ms", "dakera_forwarded_requests_total",
              "dakera_http_request_duration_seconds_bucket", "dakera_wal_fsync_seconds_bucket",
              "dakera_cold_tier_lag_seconds"}
    assert wanted <= names, wanted - names


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels(dashboard()):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables given sample values, as a recording rule that
    `promtool check rules` parses."""
    exprs = [e.replace("$__rate_interval", "1m").replace("$job", "dakera").replace("$instance", ".*")
             for e in dashboard_exprs()]
    assert not any("$" in e for e in exprs), [e for e in exprs if "$" in e]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                          for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_from_accepts_histogram_series_and_names_what_is_absent() -> None:
    scrape = {"dakera_wal_fsync_seconds_bucket", "dakera_wal_fsync_seconds_count", "dakera_shard_balance"}
    assert missing_from(scrape, {"dakera_wal_fsync_seconds", "dakera_wal_fsync_seconds_bucket"}) == set()
    assert missing_from(scrape, {"dakera_shard_balance", "dakera_nope"}) == {"dakera_nope"}
    assert "dakera_gossip_members" in used_metric_names()
