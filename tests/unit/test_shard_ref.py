from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import MessageError
from core.messages import ShardRef

GOOD = {
    "run_id": "r1",
    "shard_id": 3,
    "input_path": "runs/r1/_inputs/shard-00003.parquet",
    "output_path": "runs/r1/shard-00003.parquet",
    "model": "cross-encoder:m",
    "pairs": 10,
}


def test_round_trip() -> None:
    ref = ShardRef.from_message(dict(GOOD))
    assert ref.to_message() == GOOD


@pytest.mark.parametrize(
    "message",
    [
        [GOOD],
        {**GOOD, "shard_id": "3"},
        {**GOOD, "pairs": True},
        {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "model"},
    ],
)
def test_malformed_messages_are_refused(message: object) -> None:
    with pytest.raises(MessageError):
        ShardRef.from_message(message)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "runs/../../outside.parquet"])
def test_paths_outside_the_data_dir_are_refused(tmp_path: Path, path: str) -> None:
    ref = ShardRef.from_message({**GOOD, "input_path": path})
    with pytest.raises(MessageError, match="outside the data directory"):
        ref.input_file(tmp_path)


def test_paths_inside_resolve(tmp_path: Path) -> None:
    ref = ShardRef.from_message(dict(GOOD))
    assert ref.output_file(tmp_path) == tmp_path.resolve() / "runs/r1/shard-00003.parquet"
