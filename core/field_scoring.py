"""Multi-field scoring (``submit.py --field title=title --field body=text --field-weight title=.3,body=.7``):
each field of a document is scored as its own pair text, and a pair's score is the weighted sum of its
fields' scores, each normalized per query first when ``--field-normalize`` says so. The producer writes
the plan into every shard input's schema metadata; the worker reads it there and scores the fields in one
call, so a text two fields share is scored once."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from core.errors import RerankError
from core.kinds import ScoreScale
from core.score_transforms import NORMALIZATIONS, Normalization, Normalizer

METADATA_KEY = b"bulk_rerank_fields"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class FieldPlan:
    """The fields in order (``names``, scored from corpus ``columns``), their weights, and the per-query
    normalization applied to each field's scores before they are summed (None: raw scores)."""

    names: tuple[str, ...]
    columns: tuple[str, ...]
    weights: tuple[float, ...]
    normalize: Normalization | None = None

    @classmethod
    def parse(cls, fields: Sequence[str], weights: str | None, normalize: str | None) -> FieldPlan:
        """From ``NAME=COLUMN`` flags and ``NAME=W,...``; every weight defaults to 1."""
        names: list[str] = []
        columns: list[str] = []
        for text in fields:
            name, equals, column = text.partition("=")
            if not equals or not column or not _NAME.fullmatch(name):
                raise RerankError(f"--field {text}: give NAME=COLUMN (NAME: letters, digits and _)")
            if name in names:
                raise RerankError(f"--field {name} is given twice; give each field one name")
            names.append(name)
            columns.append(column)
        if len(names) < 2:
            raise RerankError("--field: give two fields or more (one text column is --text-column)")
        given: dict[str, float] = {}
        for item in (weights or "").split(","):
            if not item.strip():
                continue
            name, equals, value = item.strip().partition("=")
            if not equals:
                raise RerankError(f"--field-weight {weights}: give NAME=WEIGHT[,NAME=WEIGHT...]")
            if name not in names:
                raise RerankError(f"--field-weight {name}={value}: no --field is named {name!r}")
            try:
                weight = float(value)
            except ValueError:
                raise RerankError(
                    f"--field-weight {weights}: the weight {value!r} of {name} is not a number"
                ) from None
            if not math.isfinite(weight):
                raise RerankError(f"--field-weight {name}={value}: a weight is a finite number")
            given[name] = weight
        if normalize is not None and normalize not in NORMALIZATIONS:
            raise RerankError(f"--field-normalize {normalize}: choose one of {', '.join(NORMALIZATIONS)}")
        return cls(tuple(names), tuple(columns), tuple(given.get(name, 1.0) for name in names), normalize)  # type: ignore[arg-type]

    def as_options(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "columns": list(self.columns),
            "weights": list(self.weights),
            "normalize": self.normalize,
        }

    def metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(self.as_options()).encode()}

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> FieldPlan | None:
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if not raw:
            return None
        recorded = json.loads(raw)
        return cls(
            tuple(recorded["names"]),
            tuple(recorded["columns"]),
            tuple(float(w) for w in recorded["weights"]),
            recorded.get("normalize"),
        )

    def describe(self) -> str:
        terms = " + ".join(f"{w:g} * {self._term(n)}" for n, w in zip(self.names, self.weights, strict=True))
        return f"{terms}; a field's score is in score_<field>"

    def _term(self, name: str) -> str:
        return f"{self.normalize}(score_{name})" if self.normalize else f"score_{name}"

    def combine(
        self, per_field: np.ndarray, query_ids: pa.Array | pa.ChunkedArray, scale: ScoreScale
    ) -> np.ndarray:
        """The weighted sum over fields (``per_field``: one row of scores per field) of each field's scores,
        normalized within each query first when the plan says so."""
        total = np.zeros(per_field.shape[1])
        for scores, weight in zip(per_field, self.weights, strict=True):
            values = scores.astype(np.float64)
            if self.normalize is not None:
                values = Normalizer(self.normalize, "query", scale).apply(values, query_ids)
            total += weight * values
        return total
