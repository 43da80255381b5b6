"""Locations: local paths and storage URIs as one filesystem and a path, and their errors."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from core.errors import StorageError
from storage.location import S3Options, parse_location, storage_error


def test_a_local_path_is_resolved_and_a_file_uri_is_the_same_place(tmp_path: Path) -> None:
    plain = parse_location(str(tmp_path / "data"))
    assert plain.is_local and plain.path == str(tmp_path / "data")
    assert parse_location(f"file://{tmp_path}/data") == plain


def test_s3_locations_name_their_bucket_and_keep_no_credentials() -> None:
    location = parse_location("s3://nightly/runs/", S3Options("http://127.0.0.1:9000", "eu-west-1"))
    assert (location.path, location.uri, location.is_local) == ("nightly/runs", "s3://nightly/runs", False)
    assert location.join("r1/shard-00000.parquet").uri == "s3://nightly/runs/r1/shard-00000.parquet"
    assert location.join("r1/x.parquet").parent.uri == "s3://nightly/runs/r1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3:///corpus.parquet", "names no bucket"),
        ("s3://AKIA:secret@bucket/x", "no credentials or options in the URI"),
        ("s3://bucket/x?access_key=AKIA", "no credentials or options in the URI"),
        ("nosuchproto://bucket/x", "no filesystem knows the protocol 'nosuchproto'"),
        ("", "empty location"),
    ],
)
def test_bad_uris_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        parse_location(text)
    assert "secret" not in str(caught.value)


def test_an_s3_endpoint_must_be_a_url() -> None:
    with pytest.raises(StorageError, match="RERANK_S3_ENDPOINT_URL 'minio:9000' must look like"):
        parse_location("s3://bucket/x", S3Options("minio:9000"))


def test_paths_that_leave_the_location_are_refused(tmp_path: Path) -> None:
    base = parse_location(str(tmp_path))
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(StorageError, match="not a relative path"):
            base.join(bad)


def test_an_fsspec_location_lists_writes_and_deletes() -> None:
    base = parse_location(f"memory://test-{secrets.token_hex(4)}/data")
    base.join("b/2.bin").write_bytes(b"two")
    base.join("a.bin").write_bytes(b"one")
    assert [found.relative_to(base) for found in base.files()] == ["a.bin", "b/2.bin"]
    assert [found.name for found in base.files(recursive=False)] == ["a.bin"]
    assert base.join("b/2.bin").read_bytes() == b"two"
    assert base.join("a.bin").delete() and not base.join("a.bin").delete()
    base.delete_tree()
    assert base.files() == []


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (OSError("AWS Error NO_SUCH_BUCKET during HeadBucket"), "the bucket does not exist"),
        (OSError("AWS Error ACCESS_DENIED during HeadObject operation"), "access denied"),
        (OSError("AWS Error INVALID_ACCESS_KEY_ID during ListObjectsV2"), "credentials were refused"),
        (OSError("AWS Error NETWORK_CONNECTION: curlCode: 7, Could not connect"), "cannot be reached"),
    ],
)
def test_storage_errors_say_what_went_wrong(raised: OSError, reason: str) -> None:
    error = storage_error(raised, parse_location("s3://b/k"))
    assert str(error).startswith("s3://b/k: ") and reason in str(error)
