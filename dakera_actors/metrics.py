"""Prometheus metrics, one registry per node (an in-process test cluster holds many nodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .runtime import Actor
from .wire import REJECT_REASONS

# the *_created series double the scrape size and tell an operator nothing here
prometheus_client.disable_created_metrics()

# latency buckets in seconds, dense where the seed's targets are (1-50 ms)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ActorCollector(Collector):
    """Reads mailbox statistics from the node's actors at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, actors: Callable[[], Iterable[Actor]]) -> None:
        self._actors = actors

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("dakera_actor_mailbox_depth", "Messages waiting in an actor's mailbox",
                                  labels=["actor"])
        dropped = CounterMetricFamily("dakera_actor_mailbox_dropped", "Messages dropped because a mailbox was full",
                                      labels=["actor"])
        received = CounterMetricFamily("dakera_actor_messages", "Messages an actor has taken from its mailbox",
                                       labels=["actor"])
        for actor in self._actors():
            depth.add_metric([actor.name], actor.mailbox_depth)
            dropped.add_metric([actor.name], actor.stats.dropped)
            received.add_metric([actor.name], actor.stats.received)
        yield depth
        yield dropped
        yield received


class _NoReplication(Collector):
    """A node without replicas: no lag, nothing under-replicated."""

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("dakera_replication_lag_ms", "Worst lag of a replica behind this node's primaries, in ms")
        lag.add_metric([], 0.0)
        under = GaugeMetricFamily("dakera_under_replicated_shards",
                                  "Shards this node is primary of with fewer healthy replicas than wanted")
        under.add_metric([], 0.0)
        yield lag
        yield under


class ColdFigures(Protocol):
    """What the metrics read of the cold tier's figures (a ``ColdTierStats``; the metrics sit
    below the cold tier's package, so they name only what they read)."""

    @property
    def lag_seconds(self) -> float: ...

    @property
    def backlog_bytes(self) -> int: ...

    @property
    def circuit_open(self) -> bool: ...


class ColdSource(Protocol):
    """A cold tier as the metrics see it (``dakera_actors.cold.stats.ColdTier`` is one)."""

    def stats(self) -> ColdFigures: ...


class _ColdCollector(Collector):
    """The cold tier's lag, backlog and circuit, read from its stats at scrape time. No series
    until an archiver is registered: a zero lag would claim an archive that does not exist."""

    def __init__(self, tier: ColdSource | None = None) -> None:
        self._tier = tier

    def collect(self) -> Iterator[Metric]:
        if self._tier is None:
            return
        figures = self._tier.stats()
        lag = GaugeMetricFamily("dakera_cold_tier_lag_seconds",
                                "Age of the oldest acknowledged record not yet archived on the cold tier, in s")
        lag.add_metric([], figures.lag_seconds)
        backlog = GaugeMetricFamily("dakera_cold_tier_backlog_bytes",
                                    "Bytes of acknowledged records waiting to be archived on the cold tier")
        backlog.add_metric([], figures.backlog_bytes)
        circuit = GaugeMetricFamily("dakera_cold_tier_circuit_open",
                                    "1 while uploads to the cold tier are suspended after repeated failures")
        circuit.add_metric([], 1 if figures.circuit_open else 0)
        yield lag
        yield backlog
        yield circuit

    def describe(self) -> Iterator[Metric]:
        # the registry describes collectors at registration: without this it would call
        # collect(), and so the archiver's stats(), before the archiver has started
        return iter(())


class _RefusalCollector(Collector):
    def __init__(self, sources: tuple[Callable[[], Mapping[str, int]], ...]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        total: dict[str, int] = {}
        for source in self._sources:
            for reason, count in source().items():
                total[reason] = total.get(reason, 0) + count
        family = CounterMetricFamily("dakera_transport_refused", "Inbound connections, streams and packets "
                                     "the gossip port turned away, by reason", labels=["reason"])
        for reason in sorted(total):
            family.add_metric([reason], total[reason])
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class NodeMetrics:
    """Every metric a node exports. Actors and routes update these attributes directly."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge("dakera_build_info", "Always 1; labels say what runs", ["version", "node_id"], registry=r)
        # the seed's five
        self.gossip_members = Gauge("dakera_gossip_members", "Cluster members this node sees, by state", ["state"], registry=r)
        # dakera_replication_lag_ms comes from the replicator at scrape time (see register_replication)
        self.shard_balance = Gauge("dakera_shard_balance", "Shard placement skew: (max-min)/mean primaries per node", registry=r)
        self.leader_lease_remaining_ms = Gauge("dakera_leader_lease_remaining_ms",
                                               "This node's view of the time left on the leader lease, in ms", registry=r)
        #: the L1.5 cache: 1 while Redis answers this node's pings (0 when down, or without DAKERA_REDIS_URL)
        self.redis_connected = Gauge("dakera_redis_connected",
                                     "1 while the L1.5 cache (Redis) answers this node's pings; 0 when it does "
                                     "not, or without DAKERA_REDIS_URL", registry=r)
        #: re-embedding (a node started with another DAKERA_EMBEDDER than its shards' vectors)
        self.reembed_shards_remaining = Gauge("dakera_reembed_shards_remaining",
                                              "Shards this node leads whose vectors are not of its embedder yet", registry=r)
        self.reembed_memories_remaining = Gauge("dakera_reembed_memories_remaining",
                                                "Memories of those shards without a new vector yet", registry=r)
        self.reembed_memories = Counter("dakera_reembed_memories", "Memories given a new embedder's vector", registry=r)
        self.forwarded_requests = Counter("dakera_forwarded_requests", "Requests forwarded to the shard owner", registry=r)
        # wire and transport
        self.wire_rejected = Counter("dakera_wire_rejected", "Inter-node frames dropped, by reason", ["reason"], registry=r)
        for reason in REJECT_REASONS:
            self.wire_rejected.labels(reason)
        self.packets = Counter("dakera_transport_packets", "Packets sent and received", ["direction"], registry=r)
        self.packet_bytes = Counter("dakera_transport_packet_bytes", "Packet bytes sent and received", ["direction"], registry=r)
        self.streams = Counter("dakera_transport_streams", "Streams opened and accepted", ["direction"], registry=r)
        # HTTP
        self.http_latency = Histogram("dakera_http_request_duration_seconds", "HTTP request latency by route",
                                      ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.http_in_flight = Gauge("dakera_http_requests_in_flight", "HTTP requests being served", registry=r)
        self.http_shed = Counter("dakera_http_shed", "HTTP work turned away over a limit: requests "
                                 "(DAKERA_MAX_CONCURRENT_REQUESTS), connections (DAKERA_MAX_CONNECTIONS)",
                                 ["reason"], registry=r)
        # write-ahead log and storage
        self.wal_fsync_seconds = Histogram("dakera_wal_fsync_seconds", "Time of one WAL fsync (one group commit)",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.wal_batch_records = Histogram("dakera_wal_batch_records", "Records made durable by one fsync",
                                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=r)
        self.wal_records = Counter("dakera_wal_records", "Records appended to the WAL", registry=r)
        self.wal_segments_deleted = Counter("dakera_wal_segments_deleted",
                                            "WAL segments deleted once covered by snapshots", registry=r)
        self.wal_replayed_records = Gauge("dakera_wal_replayed_records", "Records replayed from the WAL at start",
                                          registry=r)
        self.snapshots_written = Counter("dakera_snapshots_written", "Shard snapshots written", registry=r)
        self.snapshot_seconds = Histogram("dakera_snapshot_seconds", "Time to write one shard snapshot",
                                          buckets=LATENCY_BUCKETS, registry=r)
        # replication
        self.replication_records = Counter("dakera_replication_records", "Replicated records sent and received",
                                           ["direction"], registry=r)
        self.replication_bytes = Counter("dakera_replication_bytes",
                                         "Bytes sent to replicas: log records ('sent') and whole-shard copies ('snapshot')",
                                         ["direction"], registry=r)
        self.shards_moving = Gauge("dakera_shards_moving", "Shards being transferred to new copies (learners)",
                                   registry=r)
        self.transfers_abandoned = Counter("dakera_rebalance_transfers_abandoned",
                                           "Shard transfers the leader dropped for making no progress (then retried)",
                                           registry=r)
        self.replication_snapshots = Counter("dakera_replication_snapshots",
                                             "Whole shard copies sent to and received from other nodes",
                                             ["direction"], registry=r)
        # the cold tier: the archiver counts its uploads and bytes; lag, backlog and circuit are
        # read from it at scrape time (see register_cold)
        self.cold_uploads = Counter("dakera_cold_tier_uploads", "Uploads to the cold tier, by outcome (ok, failed)",
                                    ["outcome"], registry=r)
        self.cold_bytes = Counter("dakera_cold_tier_bytes",
                                  "Bytes moved to (up) and from (down) the cold tier", ["direction"], registry=r)
        for outcome in ("ok", "failed"):
            self.cold_uploads.labels(outcome)
        for direction in ("up", "down"):
            self.cold_bytes.labels(direction)
        # backups and restores, counted by the job that ran them (on the node that ran it)
        self.backups = Counter("dakera_backups", "Backups run on this node, by outcome (ok, failed)", ["outcome"],
                               registry=r)
        self.backup_last_success = Gauge("dakera_backup_last_success_timestamp_seconds",
                                         "Unix time of this node's last completed backup (0: none yet)", registry=r)
        self.restores = Counter("dakera_restores", "Restores run on this node, by outcome (ok, failed)", ["outcome"],
                                registry=r)
        # the L1.5 cache: this node's lookups by result, and writes it held until their hold passed
        self.cache_requests = Counter("dakera_cache_requests", "L1.5 cache lookups by this node, by result "
                                      "(hit; miss: no entry; stale: an entry of another generation, or its "
                                      "trust over; error: Redis failed or timed out, or an entry did not decode)",
                                      ["result"], registry=r)
        for result in ("hit", "miss", "stale", "error"):
            self.cache_requests.labels(result)
        self.cache_generation_waits = Counter("dakera_cache_generation_waits", "Writes acknowledged only after "
                                              "waiting out the cache's hold (Redis did not advance the generation)",
                                              registry=r)
        for outcome in ("ok", "failed"):
            self.backups.labels(outcome)
            self.restores.labels(outcome)
        self._cold_collector = _ColdCollector()
        r.register(self._cold_collector)
        self._lag_collector: Collector = _NoReplication()
        r.register(self._lag_collector)
        for direction in ("sent", "received"):
            self.replication_records.labels(direction)
            self.replication_snapshots.labels(direction)
        self.replication_bytes.labels("sent")
        self.replication_bytes.labels("snapshot")
        for direction in ("in", "out"):
            self.packets.labels(direction)
            self.packet_bytes.labels(direction)
            self.streams.labels(direction)

    def register_replication(self, collector: Collector) -> None:
        """Swap the single node's zero lag for the replicator's figures."""
        self.registry.unregister(self._lag_collector)
        self._lag_collector = collector
        self.registry.register(collector)

    def register_cold(self, tier: ColdSource) -> None:
        """Read the cold tier's lag, backlog and circuit from ``tier.stats()`` at every scrape."""
        self.registry.unregister(self._cold_collector)
        self._cold_collector = _ColdCollector(tier)
        self.registry.register(self._cold_collector)

    def watch_refusals(self, *sources: Callable[[], Mapping[str, int]]) -> None:
        """Export ``dakera_transport_refused_total{reason}``: the sum over ``sources`` (the
        transport's and the endpoint's counts of connections, streams and packets turned away),
        read at every scrape."""
        self.registry.register(_RefusalCollector(sources))

    def watch_actors(self, actors: Callable[[], Iterable[Actor]]) -> None:
        self.registry.register(_ActorCollector(actors))

    def sample(self, name: str, **labels: str) -> float:
        """Current value of one sample (``dakera_wire_rejected_total``, reason="auth"); 0 if absent."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def render(self) -> bytes:
        return generate_latest(self.registry)
