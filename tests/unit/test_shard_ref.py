from __future__ import annotations

import pytest

from core.errors import MessageError
from core.messages import SCHEMA_VERSION, ShardRef, ShardResult

GOOD = {
    "schema_version": SCHEMA_VERSION,
    "run_id": "r1",
    "shard_id": 3,
    "input_path": "runs/r1/_inputs/shard-00003.parquet",
    "output_path": "runs/r1/shard-00003.parquet",
    "model": "cross-encoder:m",
    "pairs": 10,
}


def test_round_trip() -> None:
    ref = ShardRef.from_message(dict(GOOD))
    assert ref.to_message() == {**GOOD, "budgeted": False}
    budgeted = ShardRef.from_message({**GOOD, "budgeted": True})
    assert budgeted.budgeted and budgeted.to_message() == {**GOOD, "budgeted": True}


def test_a_reference_is_frozen() -> None:
    ref = ShardRef.from_message(dict(GOOD))
    with pytest.raises(ValueError, match="frozen"):
        ref.pairs = 11  # type: ignore[misc]


@pytest.mark.parametrize(
    "message",
    [
        [GOOD],
        {**GOOD, "shard_id": "3"},
        {**GOOD, "shard_id": 3.0},
        {**GOOD, "shard_id": -1},
        {**GOOD, "pairs": True},
        {**GOOD, "run_id": 7},
        {**GOOD, "run_id": ""},
        {**GOOD, "model": None},
        {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "model"},
    ],
)
def test_malformed_messages_are_refused(message: object) -> None:
    with pytest.raises(MessageError):
        ShardRef.from_message(message)


def test_the_refusal_names_the_field_and_the_problem() -> None:
    with pytest.raises(MessageError, match=r"shard_id: Input should be a valid integer"):
        ShardRef.from_message({**GOOD, "shard_id": "3"})
    with pytest.raises(MessageError, match=r"extra: Extra inputs are not permitted"):
        ShardRef.from_message({**GOOD, "extra": 1})


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.0])
def test_an_unknown_version_is_refused_naming_it_and_the_versions_understood(version: object) -> None:
    with pytest.raises(MessageError, match=rf"schema_version {version!r} is not one .* reads 1\)"):
        ShardRef.from_message({**GOOD, "schema_version": version})


def test_a_message_without_a_version_is_read_as_version_1() -> None:
    """Producers from before the field sent exactly version 1's fields without it."""
    unversioned = {k: v for k, v in GOOD.items() if k != "schema_version"}
    ref = ShardRef.from_message(unversioned)
    assert ref.schema_version == 1 and ref.to_message() == {**GOOD, "budgeted": False}


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/etc/passwd", "runs/../../outside.parquet", ".", "runs\\..\\x"]
)
def test_paths_outside_the_data_dir_are_refused(path: str) -> None:
    ref = ShardRef.from_message({**GOOD, "input_path": path})
    with pytest.raises(MessageError, match="outside the data directory"):
        _ = ref.input_key


def test_paths_inside_are_keys_relative_to_the_data_dir() -> None:
    ref = ShardRef.from_message(dict(GOOD))
    assert ref.output_key == "runs/r1/shard-00003.parquet"


def test_a_result_is_the_json_flower_shows() -> None:
    result = ShardResult(status="done", attempt=1, pairs=2000)
    assert repr(result.to_result()) == "{'status': 'done', 'attempt': 1, 'pairs': 2000}"
    assert ShardResult.from_result(result.to_result()) == result
    closed = ShardResult(status="closed", attempt=None, pairs=0)
    assert ShardResult.from_result(closed.to_result()) == closed


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "finished", "attempt": 1, "pairs": 2},
        {"status": "done", "attempt": 0, "pairs": 2},
        {"status": "done", "attempt": "1", "pairs": 2},
        {"status": "done", "attempt": 1, "pairs": 2, "seconds": 1.5},
        {"status": "done", "pairs": 2},
    ],
)
def test_malformed_results_are_refused(payload: dict[str, object]) -> None:
    with pytest.raises(MessageError, match="shard result is malformed"):
        ShardResult.from_result(payload)
