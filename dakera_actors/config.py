"""Node configuration: one attrs class, built from the environment in one place, validated there.

Embedders construct :class:`Config` directly (``Config(port=0, data_dir=tmp)``); the standalone
node calls :meth:`Config.from_env`. Either way every field is checked by the same validators and
a bad value raises :class:`ConfigError` naming the environment variable it comes from.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from .transport import parse_hostport

NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
WRITE_ACK_MODES = ("primary", "quorum", "all")
STORAGE_KINDS = ("filesystem", "s3")
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is wrong. ``variable`` is the environment variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


# fields whose variable is not simply DAKERA_<FIELD>
_ENV_NAMES = {
    "gossip_keys": "DAKERA_GOSSIP_KEY",
    "shutdown_grace": "DAKERA_SHUTDOWN_GRACE_SECONDS",
    "request_timeout": "DAKERA_REQUEST_TIMEOUT_SECONDS",
    "rereplication_grace": "DAKERA_REREPLICATION_GRACE_SECONDS",
    "checkpoint_interval": "DAKERA_CHECKPOINT_INTERVAL_SECONDS",
    "transfer_timeout": "DAKERA_REBALANCE_TRANSFER_TIMEOUT_SECONDS",
    "gossip_frame_window": "DAKERA_GOSSIP_FRAME_WINDOW_SECONDS",
    "gossip_handshake_timeout": "DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS",
    "gossip_stream_idle_timeout": "DAKERA_GOSSIP_STREAM_IDLE_SECONDS",
}
_BOOLEANS = ("cluster_mode", "gossip_insecure")


def _redacted(value: Any) -> str:
    """repr of a secret: whether it is set, never what it is (configs end up in logs and tracebacks)."""
    if not value:
        return repr(value)
    return f"<{len(value)} keys redacted>" if isinstance(value, tuple) else "'<redacted>'"


def _env(field_name: str) -> str:
    """The environment variable a field is read from (and named by in errors)."""
    return _ENV_NAMES.get(field_name, "DAKERA_" + field_name.upper())


# -- validators (each raises ConfigError naming the variable) --------------------------------
def _check(predicate: Callable[[Any], bool], problem: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not predicate(value):
            raise ConfigError(_env(attribute.name), f"{problem}, got {value!r}")

    return validate


def _int_range(lo: int, hi: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    return _check(lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                  f"must be an integer in {lo}..{hi}")


def _positive_float(hi: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    return _check(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= hi,
                  f"must be a number of seconds in (0, {hi}]")


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    return _check(lambda v: v in choices, f"must be one of {', '.join(choices)}")


def _hostport(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    try:
        parse_hostport(value)
    except (ValueError, AttributeError) as exc:
        raise ConfigError(_env(attribute.name), f"must be host:port ({exc})") from None


def _seeds(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for seed in value:
        try:
            parse_hostport(seed)
        except (ValueError, AttributeError) as exc:
            raise ConfigError(_env(attribute.name), f"each seed must be host:port ({exc})") from None


def _url(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(_env(attribute.name), f"must be an http(s):// URL, got {value!r}")


def _redis_url(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    problem = redis_url_problem(value) if isinstance(value, str) else "must be a string"
    if problem is not None:
        # the URL may hold a password: name the problem, never echo the value
        raise ConfigError(_env(attribute.name), problem)


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL (None: nothing), checked by form (what cache/connection.py reads):
    redis://[user[:password]@]host[:port][/db], rediss:// the same over TLS, unix:///path[?db=n]."""
    if not re.match(r"^(redis|rediss|unix)://", url):
        return "must be a redis://, rediss:// or unix:// URL (redis://[:password@]host[:port][/db])"
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if any(ch.isspace() for ch in url):
        return "must not contain whitespace"
    db = parse_qs(parsed.query).get("db", [None])[0]
    if parsed.scheme == "unix":
        if not parsed.path or parsed.path == "/":
            return "a unix:// URL needs the socket's path (unix:///run/redis.sock)"
    else:
        if not parsed.hostname:
            return "needs a host (redis://host:6379/0)"
        if port == 0:
            return "port must be 1..65535"
        if db is None and parsed.path.strip("/"):
            db = parsed.path.strip("/")
    if db is not None and not (db.isdigit() and int(db) < 1_000_000):
        return f"database must be a number (/0, /1 ...), got {db!r}"
    return None


def _node_id(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and NODE_ID_RE.match(value)):
        raise ConfigError(_env(attribute.name),
                          f"must match {NODE_ID_RE.pattern} (letters, digits, _ . -), got {value!r}")


def _transport_name(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    from .transport import available_transports

    known = available_transports()
    if value not in known:
        raise ConfigError(_env(attribute.name),
                          f"unknown transport {value!r} (installed: {', '.join(sorted(known))})")


#: the truncations of the shipped WordLlama model (search.embed.WORDLLAMA_DIMS; a test keeps them equal)
WORDLLAMA_DIMS = (64, 128, 256)


def _embedder_spec(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # checked by form here; the model itself is loaded (and can fail) when the node starts
    ok = isinstance(value, str) and re.match(r"^(wordllama(:\d+)?|hashing(:\d{2,5})?|sentence-transformers:\S+)$", value)
    if ok and value.startswith("wordllama:") and int(value.partition(":")[2]) not in WORDLLAMA_DIMS:
        dims = ", ".join(map(str, WORDLLAMA_DIMS))
        raise ConfigError(_env(attribute.name),
                          f"wordllama:<dim> takes the model's truncations {dims}, got {value!r}")
    if not ok:
        raise ConfigError(_env(attribute.name), "must be wordllama, wordllama:<dim>, hashing, hashing:<dim> "
                                                f"or sentence-transformers:<model>, got {value!r}")


def _gossip_keys(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for key in value:
        if not (isinstance(key, bytes) and len(key) == 32):
            raise ConfigError(_env(attribute.name), "each key must be 32 bytes (base64 of 32 bytes)")


@attrs.frozen(kw_only=True)
class Config:
    """Everything a node needs to start. Defaults are the embedded single-node defaults."""

    host: str = attrs.field(default="0.0.0.0", validator=_check(lambda v: isinstance(v, str) and v != "", "must be a host name or address"))
    port: int = attrs.field(default=3300, validator=_int_range(0, 65535))
    data_dir: Path = attrs.field(default=Path("./dakera-data"), converter=Path)
    root_api_key: str | None = attrs.field(default=None, repr=_redacted)

    cluster_mode: bool = False
    node_id: str | None = attrs.field(default=None, validator=_node_id)
    cluster_seeds: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_seeds)
    gossip_port: int = attrs.field(default=7946, validator=_int_range(0, 65535))
    #: None means "0.0.0.0:<gossip_port>"
    gossip_bind: str | None = attrs.field(default=None, validator=_hostport)
    #: None means derived from the bound address ("auto")
    gossip_advertise: str | None = attrs.field(default=None, validator=_hostport)
    #: None means derived from host/port ("auto")
    api_advertise: str | None = attrs.field(default=None, validator=_url)
    transport: str = attrs.field(default="udp", validator=_transport_name)
    #: first key seals outgoing frames; every key is tried on incoming ones (rotation)
    gossip_keys: tuple[bytes, ...] = attrs.field(default=(), converter=tuple, validator=_gossip_keys,
                                                 repr=_redacted)
    #: cluster mode without a gossip key: only on purpose (logged at start and every hour), since
    #: then anyone who reaches the gossip port can read and write every shard, bypassing the API key
    gossip_insecure: bool = False
    #: a sealed frame stamped further than this from the receiver's clock is dropped (replays)
    gossip_frame_window: float = attrs.field(default=60.0, validator=_positive_float(3600))
    #: an inbound gossip connection must finish its handshake (the WebSocket upgrade) and send an
    #: authenticated first frame within this, each; one byte at a time does not extend it
    gossip_handshake_timeout: float = attrs.field(default=5.0, validator=_positive_float(300))
    #: a kept-alive inbound stream with no next request for this long is closed
    gossip_stream_idle_timeout: float = attrs.field(default=30.0, validator=_positive_float(3600))
    #: inbound streams served at once; one beyond is closed at once
    gossip_max_streams: int = attrs.field(default=256, validator=_int_range(1, 100_000))
    #: inbound connections/streams not yet authenticated, at once; a new one beyond closes the oldest
    gossip_max_pending_streams: int = attrs.field(default=64, validator=_int_range(1, 100_000))

    # SWIM timing (see README: the detection times they give)
    gossip_probe_interval_ms: int = attrs.field(default=500, validator=_int_range(10, 60_000))
    gossip_probe_timeout_ms: int = attrs.field(default=250, validator=_int_range(5, 60_000))
    gossip_indirect_checks: int = attrs.field(default=3, validator=_int_range(0, 16))
    gossip_suspicion_mult: int = attrs.field(default=4, validator=_int_range(1, 100))
    gossip_suspicion_max_mult: int = attrs.field(default=6, validator=_int_range(1, 100))
    gossip_retransmit_mult: int = attrs.field(default=4, validator=_int_range(1, 100))
    gossip_interval_ms: int = attrs.field(default=200, validator=_int_range(10, 60_000))
    gossip_nodes: int = attrs.field(default=3, validator=_int_range(1, 64))
    gossip_push_pull_interval_ms: int = attrs.field(default=15_000, validator=_int_range(100, 3_600_000))
    gossip_awareness_max: int = attrs.field(default=8, validator=_int_range(1, 64))

    # leader lease (see README: the failover time they give)
    lease_ttl_ms: int = attrs.field(default=1000, validator=_int_range(100, 600_000))
    lease_drift_ms: int = attrs.field(default=150, validator=_int_range(1, 60_000))
    #: members a new cluster waits for before electing its first leader; None: 1 + seeds, at most 3
    bootstrap_expect: int | None = attrs.field(default=None, validator=attrs.validators.optional(_int_range(1, 9)))
    max_voters: int = attrs.field(default=5, validator=_int_range(1, 9))

    replication_factor: int = attrs.field(default=2, validator=_int_range(1, 9))
    shards: int = attrs.field(default=64, validator=_int_range(1, 65536))
    write_ack: str = attrs.field(default="primary", validator=_one_of(WRITE_ACK_MODES))
    #: a Dead member keeps its copies (marked down) this long before the leader re-replicates
    rereplication_grace: float = attrs.field(default=30.0, validator=_positive_float(86_400))
    #: shards the leader transfers to new copies at once while rebalancing
    rebalance_concurrency: int = attrs.field(default=4, validator=_int_range(1, 1024))
    #: a shard transfer whose new copy makes no progress this long is abandoned and started again
    transfer_timeout: float = attrs.field(default=60.0, validator=_positive_float(86_400))
    #: newest records per shard kept in memory for replicas to fetch; further behind: a snapshot
    replication_tail_records: int = attrs.field(default=1024, validator=_int_range(16, 1_000_000))
    storage: str = attrs.field(default="filesystem", validator=_one_of(STORAGE_KINDS))
    s3_endpoint: str | None = attrs.field(default=None, validator=_url)
    s3_bucket: str = attrs.field(default="dakera", validator=_check(lambda v: isinstance(v, str) and re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", v) is not None, "must be a valid S3 bucket name"))
    s3_region: str = attrs.field(default="us-east-1", validator=_check(
        lambda v: isinstance(v, str) and re.match(r"^[a-z0-9-]{1,32}$", v) is not None, "must be a region name"))
    #: prepended to every object key, so several clusters can share a bucket
    s3_prefix: str = attrs.field(default="", validator=_check(
        lambda v: isinstance(v, str) and len(v) <= 256 and re.match(r"^[A-Za-z0-9._/-]*$", v) is not None
        and ".." not in v.split("/"), "must be up to 256 of A-Z a-z 0-9 . _ / - with no '..' segment"))
    #: S3 credentials; unset: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then the usual AWS chain
    s3_access_key: str | None = attrs.field(default=None, repr=False)
    s3_secret_key: str | None = attrs.field(default=None, repr=False)
    #: the cold tier's archive deadline: acknowledged writes reach object storage within this
    #: (the recovery point of a cluster that loses every disk)
    cold_flush_ms: int = attrs.field(default=1000, validator=_int_range(10, 3_600_000))
    #: acknowledged records not yet archived (durable in the WAL meanwhile) that may pile up while
    #: object storage is down or slow; past it the next upload is a fresh snapshot, not the chunks
    cold_backlog_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_check(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1024 * 1024,
        "must be an integer number of bytes, at least 1048576 (1 MiB)"))
    #: where DAKERA_STORAGE=filesystem lays out objects; None means <data_dir>/objects. The nodes of
    #: a local multi-process cluster may share one directory (and so one cold tier)
    storage_path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    #: where backup bundles go: ``filesystem`` (under DAKERA_BACKUP_PATH, by default
    #: <data_dir>/backups: this node's own) or ``s3`` (DAKERA_BACKUP_S3_*: another bucket, region)
    backup_storage: str = attrs.field(default="filesystem", validator=_one_of(STORAGE_KINDS))
    backup_path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    backup_s3_endpoint: str | None = attrs.field(default=None, validator=_url)
    backup_s3_bucket: str = attrs.field(default="dakera-backups", validator=_check(lambda v: isinstance(v, str) and re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", v) is not None, "must be a valid S3 bucket name"))
    backup_s3_region: str = attrs.field(default="us-east-1", validator=_check(
        lambda v: isinstance(v, str) and re.match(r"^[a-z0-9-]{1,32}$", v) is not None, "must be a region name"))
    backup_s3_prefix: str = attrs.field(default="", validator=_check(
        lambda v: isinstance(v, str) and len(v) <= 256 and re.match(r"^[A-Za-z0-9._/-]*$", v) is not None
        and ".." not in v.split("/"), "must be up to 256 of A-Z a-z 0-9 . _ / - with no '..' segment"))
    #: the largest backup bundle a node accepts on upload/restore (the other routes keep
    #: DAKERA_MAX_BODY_BYTES)
    max_bundle_bytes: int = attrs.field(default=1024 * 1024 * 1024, validator=_check(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1024 * 1024 <= v <= 64 * 1024 ** 3,
        "must be an integer number of bytes, 1 MiB..64 GiB"))
    #: seals bundles created with ``encrypt`` (AES-256-GCM) and opens encrypted uploads
    backup_key: bytes | None = attrs.field(default=None, repr=False)
    #: the L1.5 cache (Redis); None: no cache. Unreachable at start is not fatal (retried in the background)
    redis_url: str | None = attrs.field(default=None, validator=_redis_url, repr=_redacted)
    #: every Redis call is bounded by this; past it the call fails and the caller falls back
    redis_timeout_ms: int = attrs.field(default=50, validator=_int_range(1, 10_000))
    #: how long a cache entry lives in Redis
    cache_ttl_seconds: int = attrs.field(default=300, validator=_int_range(1, 86_400))

    #: the vector space of recall (see "Recall and embedders" in the README)
    embedder: str = attrs.field(default="wordllama", validator=_embedder_spec)
    wal_segment_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_int_range(64 * 1024, 1024**3))
    #: WAL damage that valid records follow, or a gap after a snapshot: "strict" refuses to start,
    #: "truncate" drops what cannot be read (logged at error level, the bytes kept aside)
    wal_recovery: str = attrs.field(default="strict", validator=_one_of(("strict", "truncate")))
    checkpoint_records: int = attrs.field(default=50_000, validator=_int_range(1, 100_000_000))
    checkpoint_interval: float = attrs.field(default=300.0, validator=_positive_float(86_400))
    max_body_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_int_range(1024, 1024**3))
    max_frame_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_int_range(64 * 1024, 1024**3))
    #: total text bytes one request may ask to embed (a 413 beyond it)
    max_request_text_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_int_range(1024, 1024**3))
    #: a session's idle timeout when it asks for none (0: sessions never end for inactivity)
    session_idle_timeout_secs: int = attrs.field(default=4 * 3600, validator=_int_range(0, 2_592_000))
    #: HTTP requests served at once (health routes excepted); more get a 503 with Retry-After
    max_concurrent_requests: int = attrs.field(default=64, validator=_int_range(1, 100_000))
    #: open HTTP connections; one accepted beyond them is answered 503 with Retry-After at once and closed
    max_connections: int = attrs.field(default=512, validator=_int_range(1, 1_000_000))
    #: worker threads for CPU-heavy work (embedding, large JSON, snapshot images)
    cpu_threads: int = attrs.field(default=2, validator=_int_range(1, 256))
    shutdown_grace: float = attrs.field(default=4.0, validator=_positive_float(60))
    request_timeout: float = attrs.field(default=5.0, validator=_positive_float(300))
    log_level: str = attrs.field(default="info", validator=_one_of(LOG_LEVELS))
    log_format: str = attrs.field(default="logfmt", validator=_one_of(("logfmt", "json")))

    def __attrs_post_init__(self) -> None:
        if self.cluster_mode and not self.node_id:
            raise ConfigError("DAKERA_NODE_ID", "is required when DAKERA_CLUSTER_MODE=true")
        if self.cluster_mode and not self.gossip_keys and not self.gossip_insecure:
            raise ConfigError("DAKERA_GOSSIP_KEY",
                              "is required when DAKERA_CLUSTER_MODE=true (base64 of 32 random bytes, the "
                              "same on every node: openssl rand -base64 32); without it anyone who reaches "
                              "the gossip port bypasses the API key. To run unauthenticated on purpose, set "
                              "DAKERA_GOSSIP_INSECURE=true")
        if self.gossip_probe_timeout_ms >= self.gossip_probe_interval_ms:
            raise ConfigError("DAKERA_GOSSIP_PROBE_TIMEOUT_MS",
                              "must be shorter than DAKERA_GOSSIP_PROBE_INTERVAL_MS "
                              "(the indirect probes need the rest of the period)")
        if self.lease_drift_ms * 4 >= self.lease_ttl_ms:
            raise ConfigError("DAKERA_LEASE_DRIFT_MS", "must be under a quarter of DAKERA_LEASE_TTL_MS")
        fastest_dead = self.gossip_suspicion_mult * self.gossip_probe_interval_ms
        if self.lease_ttl_ms + self.lease_drift_ms >= fastest_dead:
            # a leader cut off alone keeps its lease this long, while the majority may already have
            # declared it (and each other, from its side) Dead: it could publish a map marking the
            # majority down and acknowledge quorum writes on its own copies
            raise ConfigError("DAKERA_LEASE_TTL_MS",
                              f"plus DAKERA_LEASE_DRIFT_MS ({self.lease_ttl_ms + self.lease_drift_ms} ms) must be "
                              f"shorter than the fastest Dead verdict, DAKERA_GOSSIP_SUSPICION_MULT x "
                              f"DAKERA_GOSSIP_PROBE_INTERVAL_MS ({fastest_dead} ms)")
        if self.storage == "s3" and not self.s3_endpoint:
            raise ConfigError("DAKERA_S3_ENDPOINT", "is required when DAKERA_STORAGE=s3")
        if self.backup_storage == "s3" and not self.backup_s3_endpoint:
            raise ConfigError("DAKERA_BACKUP_S3_ENDPOINT", "is required when DAKERA_BACKUP_STORAGE=s3")
        if self.backup_key is not None and (not isinstance(self.backup_key, bytes) or len(self.backup_key) != 32):
            raise ConfigError("DAKERA_BACKUP_KEY", "must be 32 bytes (base64 of a 256-bit key)")
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ConfigError("DAKERA_S3_SECRET_KEY" if self.s3_secret_key is None else "DAKERA_S3_ACCESS_KEY",
                              "must be set together with the other S3 key (or neither, for the AWS chain)")

    # -- derived values --------------------------------------------------------------
    @property
    def gossip_bind_address(self) -> str:
        return self.gossip_bind or f"0.0.0.0:{self.gossip_port}"

    # -- environment -----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Build from ``DAKERA_*`` variables; unset or empty variables keep their defaults."""
        kwargs: dict[str, Any] = {}

        def raw(name: str) -> str | None:
            value = environ.get(name)
            return None if value is None or value.strip() == "" else value.strip()

        for field in attrs.fields(cls):
            var = _env(field.name)
            value = raw(var)
            if value is None:
                continue
            kwargs[field.name] = _parse(field, var, value)
        # the AWS variables every S3 tool reads, when the DAKERA_ ones are unset
        for name, aws in (("s3_access_key", "AWS_ACCESS_KEY_ID"), ("s3_secret_key", "AWS_SECRET_ACCESS_KEY")):
            if name not in kwargs and raw(aws) is not None:
                kwargs[name] = raw(aws)
        # auto means "derive it": the same as unset
        for name in ("gossip_advertise", "api_advertise"):
            if isinstance(kwargs.get(name), str) and kwargs[name].lower() == "auto":
                kwargs.pop(name)
        return cls(**kwargs)


def _parse(field: attrs.Attribute[Any], var: str, value: str) -> Any:
    name = field.name
    if name in _BOOLEANS:
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(var, f"must be true or false, got {value!r}")
    if name == "cluster_seeds":
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if name == "backup_key":
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(var, "must be base64 (of a 32-byte key)") from None
        if len(key) != 32:
            raise ConfigError(var, f"must decode to 32 bytes, got {len(key)}")
        return key
    if name == "gossip_keys":
        keys = []
        for part in value.split(","):
            try:
                key = base64.b64decode(part.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(var, "must be base64 (of a 32-byte key)") from None
            if len(key) != 32:
                raise ConfigError(var, f"must decode to 32 bytes, got {len(key)}")
            keys.append(key)
        return tuple(keys)
    if name in ("write_ack", "storage", "backup_storage", "log_level", "log_format", "transport", "embedder"):
        return value.lower() if name not in ("transport", "embedder") else value
    if field.type in ("int", int, "int | None"):
        try:
            return int(value, 10)
        except ValueError:
            raise ConfigError(var, f"must be an integer, got {value!r}") from None
    if field.type in ("float", float):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(var, f"must be a number, got {value!r}") from None
    return value
