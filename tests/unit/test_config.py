"""Config: every variable parsed from the environment; every bad value rejected with its name."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dakera_actors.config import Config, ConfigError

KEY = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(1, 33))).decode()


def test_defaults_are_the_embedded_single_node() -> None:
    c = Config.from_env({})
    assert (c.host, c.port, c.data_dir) == ("0.0.0.0", 3300, Path("./dakera-data"))
    assert c.cluster_mode is False and c.node_id is None and c.cluster_seeds == ()
    assert c.gossip_port == 7946 and c.gossip_bind_address == "0.0.0.0:7946"
    assert c.gossip_advertise is None and c.api_advertise is None
    assert c.transport == "udp" and c.gossip_keys == ()
    assert (c.replication_factor, c.shards, c.write_ack) == (2, 64, "primary")
    assert (c.storage, c.s3_endpoint, c.s3_bucket, c.s3_region) == ("filesystem", None, "dakera", "us-east-1")
    assert c.redis_url is None and c.root_api_key is None


def test_every_variable_is_parsed() -> None:
    env = {
        "DAKERA_HOST": "127.0.0.1",
        "DAKERA_PORT": "3301",
        "DAKERA_DATA_DIR": "/var/lib/dakera",
        "DAKERA_ROOT_API_KEY": "s3cret",
        "DAKERA_CLUSTER_MODE": "true",
        "DAKERA_NODE_ID": "node-1",
        "DAKERA_CLUSTER_SEEDS": "dakera-2:7946, dakera-3:7946,",
        "DAKERA_GOSSIP_PORT": "7950",
        "DAKERA_GOSSIP_BIND": "10.0.0.5:7950",
        "DAKERA_GOSSIP_ADVERTISE": "node-1.example:7950",
        "DAKERA_API_ADVERTISE": "http://node-1.example:3301",
        "DAKERA_TRANSPORT": "websocket",
        "DAKERA_GOSSIP_KEY": f"{KEY},{KEY2}",
        "DAKERA_REPLICATION_FACTOR": "3",
        "DAKERA_SHARDS": "128",
        "DAKERA_WRITE_ACK": "QUORUM",
        "DAKERA_STORAGE": "s3",
        "DAKERA_S3_ENDPOINT": "http://minio:9000",
        "DAKERA_S3_BUCKET": "memories",
        "DAKERA_S3_REGION": "eu-west-1",
        "DAKERA_REDIS_URL": "redis://redis:6379/0",
        "DAKERA_MAX_BODY_BYTES": "2048",
        "DAKERA_SHUTDOWN_GRACE_SECONDS": "2.5",
        "DAKERA_REQUEST_TIMEOUT_SECONDS": "3",
        "DAKERA_REREPLICATION_GRACE_SECONDS": "90",
        "DAKERA_REPLICATION_TAIL_RECORDS": "4096",
        "DAKERA_REBALANCE_CONCURRENCY": "8",
        "DAKERA_REBALANCE_TRANSFER_TIMEOUT_SECONDS": "120",
        "DAKERA_LOG_LEVEL": "debug",
        "DAKERA_LOG_FORMAT": "json",
    }
    c = Config.from_env(env)
    assert (c.host, c.port, c.data_dir, c.root_api_key) == ("127.0.0.1", 3301, Path("/var/lib/dakera"), "s3cret")
    assert c.cluster_mode and c.node_id == "node-1"
    assert c.cluster_seeds == ("dakera-2:7946", "dakera-3:7946")
    assert c.gossip_port == 7950 and c.gossip_bind_address == "10.0.0.5:7950"
    assert c.gossip_advertise == "node-1.example:7950" and c.api_advertise == "http://node-1.example:3301"
    assert c.transport == "websocket"
    assert c.gossip_keys == (bytes(range(32)), bytes(range(1, 33)))
    assert (c.replication_factor, c.shards, c.write_ack) == (3, 128, "quorum")
    assert (c.storage, c.s3_endpoint, c.s3_bucket, c.s3_region) == ("s3", "http://minio:9000", "memories", "eu-west-1")
    assert c.redis_url == "redis://redis:6379/0"
    assert (c.max_body_bytes, c.shutdown_grace, c.request_timeout) == (2048, 2.5, 3.0)
    assert (c.log_level, c.log_format) == ("debug", "json")
    assert (c.rereplication_grace, c.replication_tail_records) == (90.0, 4096)
    assert (c.rebalance_concurrency, c.transfer_timeout) == (8, 120.0)


def test_gossip_bind_follows_gossip_port_when_unset() -> None:
    assert Config.from_env({"DAKERA_GOSSIP_PORT": "8000"}).gossip_bind_address == "0.0.0.0:8000"


def test_auto_and_empty_mean_default() -> None:
    c = Config.from_env({"DAKERA_API_ADVERTISE": "auto", "DAKERA_GOSSIP_ADVERTISE": "AUTO", "DAKERA_PORT": " "})
    assert c.api_advertise is None and c.gossip_advertise is None and c.port == 3300


@pytest.mark.parametrize("variable,value", [
    ("DAKERA_PORT", "abc"),
    ("DAKERA_PORT", "70000"),
    ("DAKERA_PORT", "-1"),
    ("DAKERA_CLUSTER_MODE", "maybe"),
    ("DAKERA_NODE_ID", "-bad"),
    ("DAKERA_NODE_ID", "has space"),
    ("DAKERA_CLUSTER_SEEDS", "dakera-2:notaport"),
    ("DAKERA_CLUSTER_SEEDS", "dakera-2"),
    ("DAKERA_GOSSIP_PORT", "1e3"),
    ("DAKERA_GOSSIP_BIND", "0.0.0.0"),
    ("DAKERA_GOSSIP_ADVERTISE", "::1:7946"),
    ("DAKERA_API_ADVERTISE", "node-1:3300"),
    ("DAKERA_TRANSPORT", "carrier-pigeon"),
    ("DAKERA_GOSSIP_KEY", "not base64!"),
    ("DAKERA_GOSSIP_KEY", base64.b64encode(b"short").decode()),
    ("DAKERA_REPLICATION_FACTOR", "0"),
    ("DAKERA_REPLICATION_FACTOR", "two"),
    ("DAKERA_SHARDS", "0"),
    ("DAKERA_WRITE_ACK", "some"),
    ("DAKERA_STORAGE", "tape"),
    ("DAKERA_S3_ENDPOINT", "minio:9000"),
    ("DAKERA_S3_BUCKET", "Bad_Bucket"),
    ("DAKERA_COLD_FLUSH_MS", "9"),
    ("DAKERA_COLD_FLUSH_MS", "3600001"),
    ("DAKERA_COLD_FLUSH_MS", "1s"),
    ("DAKERA_COLD_BACKLOG_BYTES", "1048575"),
    ("DAKERA_COLD_BACKLOG_BYTES", "256MiB"),
    ("DAKERA_REDIS_URL", "http://redis"),
    ("DAKERA_MAX_BODY_BYTES", "10"),
    ("DAKERA_SHUTDOWN_GRACE_SECONDS", "0"),
    ("DAKERA_SHUTDOWN_GRACE_SECONDS", "soon"),
    ("DAKERA_REQUEST_TIMEOUT_SECONDS", "-1"),
    ("DAKERA_REREPLICATION_GRACE_SECONDS", "0"),
    ("DAKERA_REREPLICATION_GRACE_SECONDS", "a while"),
    ("DAKERA_REPLICATION_TAIL_RECORDS", "3"),
    ("DAKERA_REBALANCE_CONCURRENCY", "0"),
    ("DAKERA_REBALANCE_TRANSFER_TIMEOUT_SECONDS", "0"),
    ("DAKERA_REBALANCE_TRANSFER_TIMEOUT_SECONDS", "never"),
    ("DAKERA_LOG_LEVEL", "loud"),
])
def test_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(variable + ":")
    assert "\n" not in str(info.value)


def test_cluster_mode_requires_node_id() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"DAKERA_CLUSTER_MODE": "true"})
    assert info.value.variable == "DAKERA_NODE_ID"


def test_s3_storage_requires_endpoint() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"DAKERA_STORAGE": "s3"})
    assert info.value.variable == "DAKERA_S3_ENDPOINT"


def test_direct_construction_is_validated_the_same_way() -> None:
    with pytest.raises(ConfigError) as info:
        Config(port=99999)
    assert info.value.variable == "DAKERA_PORT"
    with pytest.raises(ConfigError):
        Config(write_ack="eventually")
    assert Config(port=0, data_dir="/tmp/x").data_dir == Path("/tmp/x")


def test_cluster_mode_requires_a_gossip_key_unless_insecure_on_purpose() -> None:
    base = {"DAKERA_CLUSTER_MODE": "true", "DAKERA_NODE_ID": "node-1"}
    with pytest.raises(ConfigError) as info:
        Config.from_env(base)
    assert info.value.variable == "DAKERA_GOSSIP_KEY" and "DAKERA_GOSSIP_INSECURE=true" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        Config.from_env({**base, "DAKERA_GOSSIP_INSECURE": "false"})
    with pytest.raises(ConfigError) as info:
        Config.from_env({**base, "DAKERA_GOSSIP_INSECURE": "maybe"})
    assert info.value.variable == "DAKERA_GOSSIP_INSECURE"
    assert Config.from_env({**base, "DAKERA_GOSSIP_INSECURE": "TRUE"}).gossip_insecure
    assert Config.from_env({**base, "DAKERA_GOSSIP_KEY": KEY}).gossip_keys == (bytes(range(32)),)
    assert not Config().gossip_insecure and Config().gossip_frame_window == 60.0  # single node: no key needed
    assert Config.from_env({"DAKERA_GOSSIP_FRAME_WINDOW_SECONDS": "120"}).gossip_frame_window == 120.0
    with pytest.raises(ConfigError) as info:
        Config.from_env({"DAKERA_GOSSIP_FRAME_WINDOW_SECONDS": "0"})
    assert info.value.variable == "DAKERA_GOSSIP_FRAME_WINDOW_SECONDS"


def test_inbound_stream_limits_are_read_and_checked() -> None:
    c = Config()
    assert (c.gossip_handshake_timeout, c.gossip_stream_idle_timeout, c.gossip_max_streams,
            c.gossip_max_pending_streams) == (5.0, 30.0, 256, 64)
    c = Config.from_env({"DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS": "2.5", "DAKERA_GOSSIP_STREAM_IDLE_SECONDS": "9",
                         "DAKERA_GOSSIP_MAX_STREAMS": "100", "DAKERA_GOSSIP_MAX_PENDING_STREAMS": "10"})
    assert (c.gossip_handshake_timeout, c.gossip_stream_idle_timeout, c.gossip_max_streams,
            c.gossip_max_pending_streams) == (2.5, 9.0, 100, 10)
    for variable, bad in (("DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS", "0"), ("DAKERA_GOSSIP_STREAM_IDLE_SECONDS", "-1"),
                          ("DAKERA_GOSSIP_MAX_STREAMS", "0"), ("DAKERA_GOSSIP_MAX_PENDING_STREAMS", "many")):
        with pytest.raises(ConfigError) as info:
            Config.from_env({variable: bad})
        assert info.value.variable == variable


def test_repr_never_shows_secrets() -> None:
    c = Config(root_api_key="s3cret-root", cluster_mode=True, node_id="n1", gossip_keys=(b"K" * 32, b"L" * 32))
    text = repr(c)
    assert "s3cret-root" not in text and "KKKK" not in text and "LLLL" not in text
    assert "root_api_key='<redacted>'" in text and "gossip_keys=<2 keys redacted>" in text
    assert "root_api_key=None" in repr(Config())


def test_the_lease_must_run_out_before_the_fastest_dead_verdict() -> None:
    """The replication simulator's LONG_LEASE case: with a lease that outlives SWIM's fastest Dead
    verdict, a leader cut off alone still leads while the majority is declared Dead on its side."""
    assert Config.from_env({}).lease_ttl_ms == 1000  # defaults: 1000 + 150 < 4 x 500
    with pytest.raises(ConfigError) as info:
        Config.from_env({"DAKERA_LEASE_TTL_MS": "2000"})
    assert info.value.variable == "DAKERA_LEASE_TTL_MS" and "2150 ms" in str(info.value)
    assert "DAKERA_GOSSIP_SUSPICION_MULT" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        Config.from_env({"DAKERA_GOSSIP_PROBE_INTERVAL_MS": "250", "DAKERA_GOSSIP_PROBE_TIMEOUT_MS": "100"})
    # a slower failure detector allows a longer lease
    assert Config.from_env({"DAKERA_LEASE_TTL_MS": "4000", "DAKERA_GOSSIP_PROBE_INTERVAL_MS": "2000"}).lease_ttl_ms == 4000


def test_s3_settings_prefix_keys_and_the_aws_variables() -> None:
    c = Config.from_env({"DAKERA_S3_PREFIX": "team-a/cluster-1", "AWS_ACCESS_KEY_ID": "AKID",
                         "AWS_SECRET_ACCESS_KEY": "secret-value"})
    assert (c.s3_prefix, c.s3_access_key, c.s3_secret_key) == ("team-a/cluster-1", "AKID", "secret-value")
    assert "secret-value" not in repr(c)  # never in a log line or a traceback
    ours = Config.from_env({"DAKERA_S3_ACCESS_KEY": "mine", "DAKERA_S3_SECRET_KEY": "also-mine",
                            "AWS_ACCESS_KEY_ID": "theirs", "AWS_SECRET_ACCESS_KEY": "theirs"})
    assert (ours.s3_access_key, ours.s3_secret_key) == ("mine", "also-mine")
    for env, variable in (({"DAKERA_S3_PREFIX": "a/../b"}, "DAKERA_S3_PREFIX"),
                          ({"DAKERA_S3_PREFIX": "sp ace"}, "DAKERA_S3_PREFIX"),
                          ({"DAKERA_S3_REGION": "Mars Central"}, "DAKERA_S3_REGION"),
                          ({"DAKERA_S3_ACCESS_KEY": "only-one"}, "DAKERA_S3_SECRET_KEY"),
                          ({"DAKERA_S3_SECRET_KEY": "only-one"}, "DAKERA_S3_ACCESS_KEY")):
        with pytest.raises(ConfigError) as info:
            Config.from_env(env)
        assert info.value.variable == variable


def test_cold_tier_settings_defaults_and_parsing() -> None:
    c = Config.from_env({})
    assert (c.cold_flush_ms, c.cold_backlog_bytes, c.storage_path) == (1000, 268435456, None)
    c = Config.from_env({"DAKERA_COLD_FLUSH_MS": "10", "DAKERA_COLD_BACKLOG_BYTES": "1048576",
                         "DAKERA_STORAGE_PATH": "/srv/dakera-objects"})
    assert (c.cold_flush_ms, c.cold_backlog_bytes, c.storage_path) == (10, 1048576, Path("/srv/dakera-objects"))
    assert Config.from_env({"DAKERA_COLD_FLUSH_MS": "3600000"}).cold_flush_ms == 3_600_000
    # an empty variable keeps the default, like every other setting
    assert Config.from_env({"DAKERA_STORAGE_PATH": "  "}).storage_path is None
    with pytest.raises(ConfigError) as info:
        Config(cold_backlog_bytes=True)  # a bool is not a byte count
    assert info.value.variable == "DAKERA_COLD_BACKLOG_BYTES"


def test_redis_settings_defaults_ranges_and_urls() -> None:
    c = Config.from_env({})
    assert (c.redis_url, c.redis_timeout_ms, c.cache_ttl_seconds) == (None, 50, 300)
    c = Config.from_env({"DAKERA_REDIS_URL": "rediss://:pa%40ss@cache.example:6380/2",
                         "DAKERA_REDIS_TIMEOUT_MS": "200", "DAKERA_CACHE_TTL_SECONDS": "86400"})
    assert (c.redis_timeout_ms, c.cache_ttl_seconds) == (200, 86400)
    for good in ("redis://localhost", "redis://user:pw@10.0.0.1:6379/0", "redis://[::1]:6379",
                 "unix:///run/redis.sock?db=3", "redis://h:6379?db=1"):
        assert Config(redis_url=good).redis_url == good
    for variable, value in (("DAKERA_REDIS_TIMEOUT_MS", "0"), ("DAKERA_REDIS_TIMEOUT_MS", "10001"),
                            ("DAKERA_REDIS_TIMEOUT_MS", "50ms"), ("DAKERA_CACHE_TTL_SECONDS", "0"),
                            ("DAKERA_CACHE_TTL_SECONDS", "86401"), ("DAKERA_REDIS_URL", "redis://h:notaport"),
                            ("DAKERA_REDIS_URL", "redis://h:99999"), ("DAKERA_REDIS_URL", "redis://:pw@"),
                            ("DAKERA_REDIS_URL", "redis://h/zero"), ("DAKERA_REDIS_URL", "unix://"),
                            ("DAKERA_REDIS_URL", "redis://h?db=x"), ("DAKERA_REDIS_URL", "redis://h h")):
        with pytest.raises(ConfigError) as info:
            Config.from_env({variable: value})
        assert info.value.variable == variable and "\n" not in str(info.value), value
    # a wrong URL may carry a password: the error names the problem, never the value
    with pytest.raises(ConfigError) as info:
        Config.from_env({"DAKERA_REDIS_URL": "redis://:hunter2@h:port"})
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(Config(redis_url="redis://:hunter2@h:6379"))
