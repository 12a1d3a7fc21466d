"""The cluster status says degraded while any live member's cold-tier archive is behind: each node
publishes the flag in its member metadata, and the status view reads it from there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from dakera_actors.api.admin_views import archive_behind, cluster_status
from dakera_actors.api.deps import FacadeDeps
from dakera_actors.cold.stats import BEHIND_SECONDS, ColdTierStats
from dakera_actors.config import Config
from dakera_actors.log import get_logger
from dakera_actors.membership.actor import MembershipView
from dakera_actors.membership.member import META, Member, MemberState
from dakera_actors.metrics import NodeMetrics
from dakera_actors.node import COLD_WATCH_INTERVAL, watch_archive
from dakera_actors.runtime.offload import Offload
from dakera_actors.runtime.published import Published
from dakera_actors.runtime.readiness import Readiness
from dakera_actors.wirebounds import OutOfBounds

HEALTHY = ColdTierStats("memory", "mem://", 1000, 1 << 28)
BEHIND = attrs.evolve(HEALTHY, lag_seconds=BEHIND_SECONDS + 1)


@attrs.define
class FakeTier:
    figures: ColdTierStats = HEALTHY

    def stats(self) -> ColdTierStats:
        return self.figures


def member(node: str, state: MemberState = MemberState.ALIVE, **meta: Any) -> Member:
    return Member(node, f"127.0.0.1:{7000 + int(node[-1])}", f"http://{node}", 1, state, meta)


def deps(*, cluster: bool, members: list[Member] | None = None, cold: FakeTier | None = None) -> FacadeDeps:
    config = Config(cluster_mode=cluster, node_id="n1", gossip_insecure=cluster, data_dir=Path("/nonexistent"))
    facade = FacadeDeps(config, "n1", NodeMetrics(), get_logger("test"), Offload(1, inline=True), Readiness())
    if members is not None:
        facade.membership = Published(MembershipView("n1", {m.id: m for m in members}, 1))
    facade.cold = cold
    return facade


def test_a_live_member_whose_archive_is_behind_degrades_the_cluster() -> None:
    calm = deps(cluster=True, members=[member("n1"), member("n2"), member("n3", archive_behind=False)])
    assert cluster_status(calm)["status"] == "healthy" and cluster_status(calm)["archive_behind"] == []
    behind = deps(cluster=True, members=[member("n1"), member("n2", archive_behind=True), member("n3")])
    status = cluster_status(behind)
    assert status["status"] == "degraded" and status["archive_behind"] == ["n2"]


def test_the_flag_is_read_from_meta_not_from_the_local_archiver() -> None:
    # this node's own archiver is behind, but the cluster view is the members' metadata: the
    # node's flag arrives there through its own announcement, like everyone else's
    view = deps(cluster=True, members=[member("n1"), member("n2")], cold=FakeTier(BEHIND))
    assert cluster_status(view)["status"] == "healthy"
    view = deps(cluster=True, members=[member("n1", archive_behind=True), member("n2")], cold=FakeTier(HEALTHY))
    assert cluster_status(view)["status"] == "degraded" and archive_behind(view) == ["n1"]


def test_a_dead_or_left_member_flag_is_not_counted() -> None:
    members = [member("n1"), member("n2", MemberState.DEAD, archive_behind=True),
               member("n3", MemberState.LEFT, archive_behind=True)]
    view = deps(cluster=True, members=members)
    assert archive_behind(view) == []
    # degraded anyway, for the dead member, but not named as behind
    assert cluster_status(view)["status"] == "degraded"


def test_a_single_node_reads_its_own_archiver() -> None:
    assert cluster_status(deps(cluster=False))["status"] == "healthy"
    tier = FakeTier(HEALTHY)
    single = deps(cluster=False, cold=tier)
    assert cluster_status(single)["status"] == "healthy"
    tier.figures = BEHIND
    assert cluster_status(single)["status"] == "degraded" and cluster_status(single)["archive_behind"] == ["n1"]
    tier.figures = attrs.evolve(HEALTHY, lag_seconds=BEHIND_SECONDS)  # a minute exactly is not behind
    assert cluster_status(single)["status"] == "healthy"


def test_the_flag_is_a_typed_metadata_key_on_the_wire() -> None:
    META({"maintenance": False, "archive_behind": True})
    with pytest.raises(OutOfBounds):
        META({"archive_behind": "yes"})
    assert member("n1", archive_behind=True).archive_behind and not member("n1").archive_behind


async def test_the_watch_announces_each_flip_once(autojump_clock: trio.testing.MockClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    tier, announced = FakeTier(HEALTHY), []

    async def announce(**changes: Any) -> None:
        announced.append(changes)

    with caplog.at_level(logging.INFO, logger="test"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_archive, tier, announce, get_logger("test"))
            await trio.sleep(5 * COLD_WATCH_INTERVAL)
            assert announced == []  # healthy from the start: nothing to say
            tier.figures = BEHIND
            await trio.sleep(3 * COLD_WATCH_INTERVAL)
            assert announced == [{"archive_behind": True}]
            tier.figures = HEALTHY
            await trio.sleep(COLD_WATCH_INTERVAL + 0.01)
            assert announced == [{"archive_behind": True}, {"archive_behind": False}]
            nursery.cancel_scope.cancel()
    events = [r.getMessage() for r in caplog.records]
    assert events.count("cold_tier_behind") == 1 and events.count("cold_tier_caught_up") == 1


async def test_a_single_node_watch_only_logs(autojump_clock: trio.testing.MockClock,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test"):
        with trio.move_on_after(3 * COLD_WATCH_INTERVAL):
            await watch_archive(FakeTier(BEHIND), None, get_logger("test"))
    assert [r.getMessage() for r in caplog.records] == ["cold_tier_behind"]
