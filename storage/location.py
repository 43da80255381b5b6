"""Where data lives: a local path or a storage URI, as one ``pyarrow.fs`` filesystem and a path in it.

- no scheme (or ``file://``): the local filesystem;
- ``s3://bucket/prefix``: pyarrow's S3 filesystem, with ``RERANK_S3_ENDPOINT_URL`` for S3-compatible stores
  and ``RERANK_S3_REGION``; credentials come from the AWS SDK's usual chain (the ``AWS_*`` variables, a
  profile, an instance role) and are never held here;
- ``gs://bucket/prefix``: pyarrow's GCS filesystem (application default credentials);
- any other protocol fsspec knows (``az://``, ``abfs://``, ``memory://``, ...), through fsspec, with the
  package that implements it installed (adlfs for Azure).

A ``Location`` carries no secret; ``uri`` is what messages show.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from core.errors import StorageError, StorageUnreachableError
from core.settings import Settings

T = TypeVar("T")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 besides credentials, which the AWS SDK finds itself."""

    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Location:
    """A file or directory: ``path`` inside ``filesystem``; ``uri`` names it in messages."""

    filesystem: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> Location:
        parent_path = str(PurePosixPath(self.path).parent)
        return Location(self.filesystem, parent_path, _strip_last(self.uri))

    def join(self, relative: str) -> Location:
        """The location ``relative`` (a POSIX relative path) below this one. Callers check relative paths
        that come from outside (messages) before joining them."""
        parts = PurePosixPath(relative).parts
        if not relative or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise StorageError(f"{relative!r} is not a relative path below {self.uri}")
        suffix = "/".join(parts)
        return Location(
            self.filesystem, f"{self.path.rstrip('/')}/{suffix}", f"{self.uri.rstrip('/')}/{suffix}"
        )

    def relative_to(self, base: Location) -> str:
        """This location's path relative to ``base`` (which must contain it)."""
        prefix = base.path.rstrip("/") + "/"
        if not self.path.startswith(prefix):
            raise StorageError(f"{self.uri} is not inside {base.uri}")
        return self.path[len(prefix) :]

    def info(self) -> pafs.FileInfo:
        return guarded(lambda: self.filesystem.get_file_info(self.path), self)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def make_dir(self) -> None:
        """Create the directory (and its parents); object stores have none to create."""
        if self.is_local:
            guarded(lambda: self.filesystem.create_dir(self.path, recursive=True), self)

    def files(self, prefix: str = "", recursive: bool = True) -> list[Location]:
        """The files below this directory (recursively unless told), in path order; ``prefix`` filters
        their names. A directory that does not exist has none."""
        selector = pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        infos = guarded(lambda: self.filesystem.get_file_info(selector), self)
        found = [
            Location(self.filesystem, info.path, self.uri.rstrip("/") + "/" + self._below(info.path))
            for info in infos
            if info.type == pafs.FileType.File and info.base_name.startswith(prefix)
        ]
        return sorted(found, key=lambda location: location.path)

    def open_input(self) -> pa.NativeFile:
        """A random-access reader (Parquet footers are read first)."""
        return guarded(lambda: self.filesystem.open_input_file(self.path), self)

    def open_output(self) -> pa.NativeFile:
        """A writer (local parent directories are made); on object stores the object appears only when
        it is closed."""
        self.parent.make_dir()
        return guarded(lambda: self.filesystem.open_output_stream(self.path), self)

    def read_bytes(self) -> bytes:
        with self.open_input() as handle:
            return bytes(handle.read())

    def write_bytes(self, data: bytes | pa.Buffer) -> None:
        self.parent.make_dir()

        def write() -> None:
            with self.filesystem.open_output_stream(self.path) as handle:
                handle.write(data)

        guarded(write, self)

    def check_container(self) -> None:
        """Fail now, with a clear error, if this location's bucket does not exist or cannot be read."""
        if self.is_local:
            return
        bucket = self.path.split("/", 1)[0]
        info = guarded(lambda: self.filesystem.get_file_info(bucket), self)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{self.uri}: the bucket {bucket!r} does not exist")
        guarded(lambda: self.filesystem.get_file_info(self.path), self)

    def delete(self) -> bool:
        """Delete this file; False when there was none."""
        try:
            self.filesystem.delete_file(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _not_found(exc):
                return False
            raise storage_error(exc, self) from exc
        return True

    def delete_tree(self) -> None:
        """Delete this directory and everything below it, if it exists."""
        if self.exists():
            guarded(lambda: self.filesystem.delete_dir(self.path), self)

    def _below(self, path: str) -> str:
        return path[len(self.path.rstrip("/")) + 1 :]

    def __str__(self) -> str:
        return self.uri


def parse_location(text: str, s3: S3Options | None = None) -> Location:
    """The location of a local path or a URI. Raises ``StorageError`` for a URI that names no bucket or
    a protocol nothing here can open."""
    text = str(text).strip()
    if not text:
        raise StorageError("empty location: give a local path or a URI such as s3://bucket/prefix")
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in ("", "file", "local"):
        local = Path(text[len(match.group(0)) :] if match else text).expanduser().resolve()
        return Location(pafs.LocalFileSystem(), local.as_posix(), str(local))
    parts = urlsplit(text)
    if parts.username or parts.password or parts.query:
        raise StorageError(
            f"{scheme}:// locations take no credentials or options in the URI; "
            "use the AWS/GCS/Azure environment or profile, and RERANK_S3_* settings"
        )
    bucket, key = parts.netloc, parts.path.strip("/")
    uri = f"{scheme}://{bucket}/{key}".rstrip("/")
    if scheme in ("s3", "s3a"):
        _need_bucket(bucket, text)
        return Location(_s3(s3 or S3Options()), f"{bucket}/{key}".rstrip("/"), uri)
    if scheme in ("gs", "gcs"):
        _need_bucket(bucket, text)
        return Location(pafs.GcsFileSystem(), f"{bucket}/{key}".rstrip("/"), uri)
    return _fsspec_location(text, scheme, uri)


def guarded(operation: Callable[[], T], location: Location) -> T:
    """Run a storage operation; turn the filesystem's errors into a ``StorageError`` naming the place."""
    try:
        return operation()
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise storage_error(exc, location) from exc


def storage_error(exc: BaseException, location: Location) -> StorageError:
    """A clear error for a failed storage call: missing bucket, denied access, unreachable endpoint."""
    text = str(exc)
    lowered = text.lower()
    squashed = lowered.replace("_", "")
    if "nosuchbucket" in squashed or "bucket does not exist" in lowered:
        reason = "the bucket does not exist"
    elif "invalidaccesskeyid" in squashed or "signaturedoesnotmatch" in squashed:
        reason = "access denied: the credentials were refused (check AWS_ACCESS_KEY_ID, the profile or role)"
    elif "accessdenied" in squashed or "forbidden" in lowered or " 403" in text:
        reason = "access denied: check the credentials and the bucket's policy"
    elif "curl" in lowered or "connect" in lowered or "resolve" in lowered or "timed out" in lowered:
        return StorageUnreachableError(
            f"{location.uri}: the storage endpoint cannot be reached: check RERANK_S3_ENDPOINT_URL and the "
            "network"
        )
    elif isinstance(exc, FileNotFoundError) or _not_found(exc):
        reason = "not found"
    else:
        reason = _first_line(text)
    return StorageError(f"{location.uri}: {reason}")


def _not_found(exc: BaseException) -> bool:
    lowered = str(exc).lower()
    return isinstance(exc, FileNotFoundError) or "path does not exist" in lowered or "not found" in lowered


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "storage error"


def _strip_last(uri: str) -> str:
    head, _, _ = uri.rstrip("/").rpartition("/")
    return head or uri


def _need_bucket(bucket: str, text: str) -> None:
    if not bucket:
        raise StorageError(f"{text!r} names no bucket: write it as s3://bucket/prefix")


def _s3(options: S3Options) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {}
    if options.region:
        kwargs["region"] = options.region
    if options.endpoint_url:
        endpoint = urlsplit(options.endpoint_url)
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
            raise StorageError(
                f"RERANK_S3_ENDPOINT_URL {options.endpoint_url!r} must look like http(s)://host:port"
            )
        kwargs["endpoint_override"] = endpoint.netloc
        kwargs["scheme"] = endpoint.scheme
        # S3-compatible stores rarely serve virtual-hosted bucket names.
        kwargs["force_virtual_addressing"] = False
    # An object written whole (a shard input, a shard's scores) goes up in one PUT when it is closed,
    # instead of a multipart upload's three requests; a missing bucket then shows at the close, which
    # every write of ours covers (``guarded``, ``check_container`` before a run starts).
    return pafs.S3FileSystem(allow_delayed_open=True, **kwargs)


def _fsspec_location(text: str, scheme: str, uri: str) -> Location:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        raise StorageError(f"{scheme}:// needs the fsspec package") from exc
    try:
        filesystem, path = fsspec.core.url_to_fs(text)
    except ValueError as exc:
        raise StorageError(f"{uri}: no filesystem knows the protocol {scheme!r}: {exc}") from exc
    except ImportError as exc:
        raise StorageError(f"{uri}: the {scheme}:// filesystem is not installed: {exc}") from exc
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), str(path).rstrip("/"), uri)


def data_location(settings: Settings) -> Location:
    """The data dir of ``settings`` (``RERANK_DATA_DIR``)."""
    return location_of(settings.data_dir, settings)


def location_of(text: str, settings: Settings) -> Location:
    """A path or URI given on the command line, with the S3 options of ``settings``."""
    return parse_location(text, S3Options(settings.s3_endpoint_url, settings.s3_region))
