"""The cold tier's metrics: counters the archiver bumps, gauges read from its stats at scrape time."""

from __future__ import annotations

import attrs
from prometheus_client.parser import text_string_to_metric_families

from dakera_actors.cold.stats import ColdTier, ColdTierStats
from dakera_actors.metrics import NodeMetrics


@attrs.define
class FakeTier:
    """A cold tier whose figures the test sets."""

    figures: ColdTierStats = attrs.field(factory=lambda: ColdTierStats("memory", "mem://", 1000, 1 << 28))

    def stats(self) -> ColdTierStats:
        return self.figures


def families(metrics: NodeMetrics) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(family.name, {})[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_counters_exist_at_zero_and_the_gauges_only_with_an_archiver() -> None:
    metrics = NodeMetrics()
    found = families(metrics)
    assert found["dakera_cold_tier_uploads"] == {("dakera_cold_tier_uploads_total", (("outcome", "failed"),)): 0.0,
                                                 ("dakera_cold_tier_uploads_total", (("outcome", "ok"),)): 0.0}
    assert found["dakera_cold_tier_bytes"] == {("dakera_cold_tier_bytes_total", (("direction", "down"),)): 0.0,
                                               ("dakera_cold_tier_bytes_total", (("direction", "up"),)): 0.0}
    gauges = ("dakera_cold_tier_lag_seconds", "dakera_cold_tier_backlog_bytes", "dakera_cold_tier_circuit_open")
    # no archiver, no lag of 0: a scrape waiting for "caught up" must not be satisfied by nothing
    assert not set(gauges) & set(found)
    metrics.register_cold(FakeTier())
    found = families(metrics)
    for gauge in gauges:
        assert found[gauge] == {(gauge, ()): 0.0}


def test_the_gauges_are_read_from_the_tier_at_every_scrape() -> None:
    metrics, tier = NodeMetrics(), FakeTier()
    typed: ColdTier = tier  # the fake is a ColdTier, and a ColdTier is what register_cold takes
    metrics.register_cold(typed)
    assert metrics.sample("dakera_cold_tier_lag_seconds") == 0.0
    tier.figures = attrs.evolve(tier.figures, lag_seconds=75.5, backlog_bytes=4096, circuit_open=True)
    assert metrics.sample("dakera_cold_tier_lag_seconds") == 75.5
    assert metrics.sample("dakera_cold_tier_backlog_bytes") == 4096
    assert metrics.sample("dakera_cold_tier_circuit_open") == 1
    tier.figures = attrs.evolve(tier.figures, circuit_open=False)
    assert metrics.sample("dakera_cold_tier_circuit_open") == 0
    # registered once: one series each, not a zero one beside the tier's
    found = families(metrics)
    assert found["dakera_cold_tier_backlog_bytes"] == {("dakera_cold_tier_backlog_bytes", ()): 4096.0}


def test_the_archiver_counts_uploads_and_bytes() -> None:
    metrics = NodeMetrics()
    metrics.cold_uploads.labels("ok").inc(3)
    metrics.cold_uploads.labels("failed").inc()
    metrics.cold_bytes.labels("up").inc(1500)
    metrics.cold_bytes.labels("down").inc(200)
    assert metrics.sample("dakera_cold_tier_uploads_total", outcome="ok") == 3
    assert metrics.sample("dakera_cold_tier_uploads_total", outcome="failed") == 1
    assert metrics.sample("dakera_cold_tier_bytes_total", direction="up") == 1500
    assert metrics.sample("dakera_cold_tier_bytes_total", direction="down") == 200
