"""The ledger's mapping: every request outcome a provider call can end with has a usage outcome, the
status columns are plain strings of the length the migrations made, and every field of an attempt's
usage is a ``usage`` column (the writer copies them all by name)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from sqlalchemy import Enum

from core.usage import RequestOutcome
from storage.ledger import AttemptUsage, RunStatus, ShardStatus, UsageOutcome
from storage.ledger.schema import Run, Shard, Usage


@pytest.mark.parametrize("outcome", list(RequestOutcome))
def test_every_request_outcome_is_a_usage_outcome(outcome: RequestOutcome) -> None:
    assert UsageOutcome.of_request(outcome) == outcome.value


@pytest.mark.parametrize(
    ("column", "enum", "length"),
    [
        (Run.__table__.c.status, RunStatus, 32),
        (Shard.__table__.c.status, ShardStatus, 32),
        (Usage.__table__.c.outcome, UsageOutcome, 16),
    ],
)
def test_status_columns_are_strings_typed_by_their_enum(column: object, enum: type, length: int) -> None:
    column_type = column.type  # type: ignore[attr-defined]
    assert isinstance(column_type, Enum) and not column_type.native_enum
    assert column_type.enum_class is enum and column_type.length == length
    assert column_type.enums == [member.value for member in enum]
    assert max(len(member.value) for member in enum) <= length


def test_every_attempt_usage_field_is_a_usage_column() -> None:
    columns = set(Usage.__table__.columns.keys())
    assert {field.name for field in fields(AttemptUsage)} <= columns
