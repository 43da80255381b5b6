"""The two contracts a shard task has with Celery, both JSON: the ``ShardRef`` its message carries (where
the shard is, never what it holds) and the ``ShardResult`` it returns (what became of it).

Both are frozen pydantic models checked strictly: no ``"3"`` for an int, no ``true`` for a count, no key
the model does not name. A message carries ``schema_version``; a worker refuses a version it does not
understand (a newer producer) with a ``MessageError`` instead of guessing. Messages from producers older
than the field carry no version and are read as version 1, whose fields are exactly today's; so upgrade
workers before producers when a new version appears, and old messages still in the queue keep working.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Literal

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import MessageError

TASK_NAME = "bulk_rerank.score_shard"

SCHEMA_VERSION: Literal[1] = 1
"""The version of the shard message this code writes."""
UNDERSTOOD_VERSIONS: tuple[int, ...] = (1,)
"""The versions of the shard message this code reads."""
UNVERSIONED_MEANS = 1
"""The version of a message without ``schema_version`` (producers from before the field)."""

ShardStatus = Literal["done", "closed", "superseded", "paused"]


class ShardRef(BaseModel):
    """One shard of one run. Paths are relative to the data directory."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str = Field(min_length=1)
    shard_id: int = Field(ge=0)
    input_path: str = Field(min_length=1)
    output_path: str = Field(min_length=1)
    model: str = Field(min_length=1)
    pairs: int = Field(ge=0)
    # The run has a budget (submit.py --max-cost-usd / --max-tokens): the worker reads it from the ledger
    # as it takes the shard's lease; other runs' leases skip that read.
    budgeted: bool = False

    def to_message(self) -> dict[str, Any]:
        """The JSON body of the Celery message, its version included."""
        return self.model_dump(mode="json")

    @classmethod
    def from_message(cls, payload: object) -> ShardRef:
        """Decode and type-check a message body; anything unexpected is a ``MessageError``."""
        if not isinstance(payload, dict):
            raise MessageError(f"shard reference must be a JSON object, got {type(payload).__name__}")
        version = payload.get("schema_version", UNVERSIONED_MEANS)
        if type(version) is not int or version not in UNDERSTOOD_VERSIONS:
            understood = ", ".join(str(v) for v in UNDERSTOOD_VERSIONS)
            raise MessageError(
                f"shard message schema_version {version!r} is not one this worker understands "
                f"(it reads {understood}); upgrade the workers to the producer's release, or submit "
                "with a producer of the workers' release"
            )
        try:
            return cls.model_validate({**payload, "schema_version": version})
        except ValidationError as exc:
            raise MessageError(f"shard reference is malformed: {_problems(exc)}") from None

    def checked(self, relative: str) -> str:
        """``relative`` (one of this shard's paths), refused unless it stays inside the data dir."""
        path = PurePosixPath(relative)
        if not path.parts or path.is_absolute() or ".." in path.parts or "\\" in relative:
            raise MessageError(f"shard {self.run_id}/{self.shard_id} points outside the data directory")
        return str(path)

    @property
    def input_key(self) -> str:
        """The shard's input, relative to the data dir."""
        return self.checked(self.input_path)

    @property
    def output_key(self) -> str:
        """The shard's scores, relative to the data dir."""
        return self.checked(self.output_path)


class ShardResult(BaseModel):
    """What a shard task returns to Celery (and Flower shows): ``status`` is ``done`` (scored and
    published), ``closed`` (the ledger had already finished the shard, or its run is paused),
    ``superseded`` (scored, but another attempt published first) or ``paused`` (the run's budget was spent:
    the shard went back unscored); ``attempt`` is None when no attempt was made."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    status: ShardStatus
    attempt: int | None = Field(ge=1)
    pairs: int = Field(ge=0)

    def to_result(self) -> dict[str, Any]:
        """The JSON the task returns, e.g. ``{'status': 'done', 'attempt': 1, 'pairs': 2000}``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_result(cls, payload: object) -> ShardResult:
        """Decode a task's result; anything unexpected is a ``MessageError``."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise MessageError(f"shard result is malformed: {_problems(exc)}") from None


def _problems(error: ValidationError) -> str:
    """Pydantic's complaints, one per field, without echoing whole payloads."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )


def send_shard(app: Celery, ref: ShardRef, queue: str) -> None:
    """Send the task that scores ``ref`` to the model's ``queue``."""
    app.send_task(TASK_NAME, args=[ref.to_message()], queue=queue)
