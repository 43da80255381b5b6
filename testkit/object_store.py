"""A real S3 endpoint on loopback for tests: moto's server, which speaks the S3 wire protocol over HTTP.

``s3_server()`` runs one in this process (a thread), reachable by worker subprocesses.
``refusing_s3_server()`` runs one in a subprocess that checks signatures against its (empty) IAM, so
that every key is refused (access denied). Only made-up credentials are ever used."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFORTESTS0001",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-for-tests-only-0001",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible endpoint at ``url`` (http://host:port)."""

    url: str

    def env(self, **rerank: str) -> dict[str, str]:
        """The variables a process needs to use this endpoint: its URL and the (fake) credentials."""
        variables = {**FAKE_CREDENTIALS, "RERANK_S3_ENDPOINT_URL": self.url, "RERANK_S3_REGION": "us-east-1"}
        variables.update({f"RERANK_{key.upper()}": value for key, value in rerank.items()})
        return variables

    def filesystem(self) -> pafs.S3FileSystem:
        scheme, _, address = self.url.partition("://")
        return pafs.S3FileSystem(
            endpoint_override=address,
            scheme=scheme,
            region="us-east-1",
            access_key=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            force_virtual_addressing=False,
        )

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def read_table(self, key: str) -> pa.Table:
        """The Parquet object ``bucket/key``, read whole."""
        return pq.read_table(key, filesystem=self.filesystem())

    def keys(self, prefix: str) -> list[str]:
        """Every object below ``bucket/prefix``, as ``bucket/key``."""
        selector = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
        infos = self.filesystem().get_file_info(selector)
        return sorted(info.path for info in infos if info.type == pafs.FileType.File)


@contextmanager
def s3_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[S3Endpoint]:
    """A moto S3 server in a thread of this process, stopped afterwards."""
    from moto.server import ThreadedMotoServer

    _serve_ranges_in_their_own_time()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield S3Endpoint(f"http://{bound_host}:{bound_port}")
    finally:
        server.stop()


_WHOLE_VALUE = "_bulk_rerank_whole_value"


def _serve_ranges_in_their_own_time() -> None:
    """Make moto answer a ranged GET in time proportional to the range, as a real store does.

    moto reads an object's whole value out of its spooled temporary file on every GET and then slices
    the range from it, so reading a 400 MB object in 8 MB ranges copies 20 GB: the client's throughput
    then measures moto's copying, and falls with the object's size. Here an object's value is read once
    and kept as immutable bytes until it is replaced; a range is a slice of those bytes."""
    from moto.s3.models import FakeKey

    stored = FakeKey.value
    if getattr(stored, "fget", None) is None or getattr(stored.fget, "keeps_whole_value", False):
        return

    def whole_value(key: FakeKey) -> bytes:
        value = key.__dict__.get(_WHOLE_VALUE)
        if value is None:
            value = key.__dict__[_WHOLE_VALUE] = stored.fget(key)
        return value

    def replace_value(key: FakeKey, new_value: bytes) -> None:
        key.__dict__.pop(_WHOLE_VALUE, None)
        stored.fset(key, new_value)

    whole_value.keeps_whole_value = True  # type: ignore[attr-defined]
    FakeKey.value = property(whole_value, replace_value)  # type: ignore[method-assign,assignment]


@contextmanager
def refusing_s3_server() -> Iterator[S3Endpoint]:
    """A moto S3 server that authenticates every request against its (empty) IAM: every key is refused."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the refusing moto server did not start")
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
