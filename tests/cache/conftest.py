"""A real ``redis-server`` (Debian's package; ``.ci/run`` installs it) for the cache tests, started
once per session on a free loopback port with no persistence, plus what the fault tests do to it:
pause it (SIGSTOP/SIGCONT), kill it and start it again on the same port, FLUSHALL it.

Tests that use it are marked ``real`` (``make test-fast`` skips them). Without ``redis-server``
on the PATH they are skipped, except in CI (``CI`` set), where that is a failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from dakera_actors.testing.cluster import free_port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port``, restartable on the same port."""

    def __init__(self, workdir: Path, *, password: str | None = None, unix: bool = False,
                 tls: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        #: serve TLS only (a self-signed certificate for 127.0.0.1 in ``workdir``: ``cert_path``)
        self.cert_path = make_certificate(workdir) if tls else None
        #: also listen on a unix socket in ``workdir`` (unix:// URLs)
        self.socket_path = workdir / "redis.sock" if unix else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        scheme = "rediss" if self.cert_path else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cert_path is not None:
            args[2:3] = ["0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert_path),
                         "--tls-key-file", str(self.workdir / "key.pem"), "--tls-auth-clients", "no"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.sync().ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass
            except redis.AuthenticationError:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def sync(self) -> redis.Redis:
        """A plain blocking client for the test's own look (not the code under test)."""
        if self.cert_path is not None:
            return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2,
                               ssl=True, ssl_ca_certs=str(self.cert_path))
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL (no goodbye to clients) and wait until the port refuses connections."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def flushall(self) -> None:
        self.sync().flushall()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            if self.paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def make_certificate(workdir: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and localhost (``cert.pem``, key in ``key.pem``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (workdir / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    path = workdir / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _need_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's server, running, answering and empty for each test (a test may pause,
    kill or reconfigure it: it is put back afterwards)."""
    server = redis_session
    if server.paused:
        server.resume()
    if not server.alive():
        server.start()
    server.flushall()
    server.sync().script_flush()
    yield server
    if server.paused:
        server.resume()
    if not server.alive():
        server.start()
    server.sync().config_set("maxmemory", 0)
    server.sync().config_set("maxmemory-policy", "noeviction")


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of its own with ``requirepass`` (characters a URL must percent-encode in it), also
    on a unix socket."""
    _need_redis_server()
    server = RedisServer(tmp_path, password="p@ss:w/rd#1", unix=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_with_tls(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of its own that speaks only TLS, with a password, on a self-signed certificate."""
    _need_redis_server()
    server = RedisServer(tmp_path, password="tls-pw", tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def refused_port() -> int:
    """A loopback port nothing listens on right now."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port
