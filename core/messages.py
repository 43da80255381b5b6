"""The typed reference a Celery message carries for one shard: where it is, never what it holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from celery import Celery

from core.errors import MessageError

TASK_NAME = "bulk_rerank.score_shard"


@dataclass(frozen=True)
class ShardRef:
    """One shard of one run. Paths are relative to the data directory."""

    run_id: str
    shard_id: int
    input_path: str
    output_path: str
    model: str
    pairs: int

    def to_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, payload: object) -> ShardRef:
        """Decode and type-check a message body; anything unexpected is a ``MessageError``."""
        if not isinstance(payload, dict):
            raise MessageError(f"shard reference must be a JSON object, got {type(payload).__name__}")
        expected = {f.name: f.type for f in fields(cls)}
        unknown = set(payload) - set(expected)
        missing = set(expected) - set(payload)
        if unknown or missing:
            raise MessageError(
                f"shard reference has unknown keys {sorted(unknown)} / missing keys {sorted(missing)}"
            )
        for name, type_name in expected.items():
            value = payload[name]
            python_type = int if type_name == "int" else str
            if type(value) is not python_type:
                raise MessageError(f"shard reference field {name!r} must be {type_name}, got {value!r}")
        return cls(**payload)

    def resolve(self, data_dir: Path, relative: str) -> Path:
        """Absolute path of ``relative`` inside ``data_dir``; refuses anything that escapes it."""
        root = data_dir.resolve()
        candidate = (root / relative).resolve()
        if Path(relative).is_absolute() or not candidate.is_relative_to(root):
            raise MessageError(f"shard {self.run_id}/{self.shard_id} points outside the data directory")
        return candidate

    def input_file(self, data_dir: Path) -> Path:
        return self.resolve(data_dir, self.input_path)

    def output_file(self, data_dir: Path) -> Path:
        return self.resolve(data_dir, self.output_path)


def send_shard(app: Celery, ref: ShardRef, queue: str) -> None:
    """Send the task that scores ``ref`` to the model's ``queue``."""
    app.send_task(TASK_NAME, args=[ref.to_message()], queue=queue)
