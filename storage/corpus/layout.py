"""Which columns of a corpus hold what, and the canonical schema every pair is converted to.

A corpus comes in one of two forms, told apart by its schema:

- long: one row per pair, columns ``query_id, query, doc_id, text``;
- nested: one row per query, ``query_id, query, candidates: list<struct<doc_id, text>>``.

Canonical pairs always have the columns ``query_id, query, doc_id, text``. Integer ids (any width,
signed or unsigned) become ``int64``, string ids become ``large_string``; ``query`` and ``text`` are
always ``large_string`` (64-bit offsets, so a batch of long documents never overflows). Numeric
columns the corpus names as ``carried`` (first-stage scores, distances or ranks, per pair: columns of a
long corpus, fields of a nested corpus's candidates) follow as ``float64`` columns ``carried.<name>``, and
further text ``fields`` of each document (a title beside the body, say) as ``field.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from core.errors import CorpusError

CorpusForm = Literal["long", "nested"]

CANONICAL_COLUMNS = ("query_id", "query", "doc_id", "text")
TEXT_TYPE = pa.large_string()
INTEGER_ID_TYPE = pa.int64()
STRING_ID_TYPE = pa.large_string()
CARRIED_TYPE = pa.float64()
CARRIED_PREFIX = "carried."
FIELD_PREFIX = "field."


@dataclass(frozen=True)
class CorpusColumns:
    """Column names in the corpus file; ``doc_id`` and ``text`` also name the fields of a candidate."""

    query_id: str = "query_id"
    query: str = "query"
    doc_id: str = "doc_id"
    text: str = "text"
    candidates: str = "candidates"
    # Per-pair numeric columns copied into the shard inputs, for the ranking after scoring.
    carried: tuple[str, ...] = ()
    # Further text columns of each document, scored beside ``text`` (multi-field scoring).
    fields: tuple[str, ...] = ()

    @staticmethod
    def flag_for(field_name: str) -> str:
        """The ``scripts/submit.py`` option that overrides one of these names, e.g. ``--text-column``."""
        return f"--{field_name.replace('_', '-')}-column"


@dataclass(frozen=True)
class CorpusLayout:
    """A corpus schema that passed the column checks, with the canonical id types it converts to."""

    form: CorpusForm
    columns: CorpusColumns
    query_id_type: pa.DataType
    doc_id_type: pa.DataType

    @property
    def file_columns(self) -> list[str]:
        """Top-level columns to read from the file."""
        if self.form == "nested":
            return [self.columns.query_id, self.columns.query, self.columns.candidates]
        return [
            self.columns.query_id,
            self.columns.query,
            self.columns.doc_id,
            self.columns.text,
            *self.columns.carried,
            *self.columns.fields,
        ]

    @property
    def pair_schema(self) -> pa.Schema:
        return pair_schema(self.query_id_type, self.doc_id_type, self.columns.carried, self.columns.fields)


def pair_schema(
    query_id_type: pa.DataType,
    doc_id_type: pa.DataType,
    carried: tuple[str, ...] = (),
    fields: tuple[str, ...] = (),
) -> pa.Schema:
    """The canonical schema of pairs, given the canonical id types, the carried columns and the fields."""
    return pa.schema(
        [("query_id", query_id_type), ("query", TEXT_TYPE), ("doc_id", doc_id_type), ("text", TEXT_TYPE)]
        + [(carried_column(name), CARRIED_TYPE) for name in carried]
        + [(field_column(name), TEXT_TYPE) for name in fields]
    )


def field_column(name: str) -> str:
    """The pair column that holds the corpus's text column ``name`` scored as a field of its own."""
    return f"{FIELD_PREFIX}{name}"


def carried_column(name: str) -> str:
    """The pair column that holds the corpus's carried column ``name``."""
    return f"{CARRIED_PREFIX}{name}"


def plain_type(data_type: pa.DataType) -> pa.DataType:
    """The type of the values, looking through dictionary encoding."""
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def is_string_type(data_type: pa.DataType) -> bool:
    data_type = plain_type(data_type)
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


def canonical_id_type(data_type: pa.DataType) -> pa.DataType | None:
    """``int64`` or ``large_string`` for a valid id type, ``None`` for anything else."""
    data_type = plain_type(data_type)
    if pa.types.is_integer(data_type):
        return INTEGER_ID_TYPE
    if is_string_type(data_type):
        return STRING_ID_TYPE
    return None


def resolve_layout(schema: pa.Schema, columns: CorpusColumns, where: str) -> CorpusLayout:
    """Detect the form and check that every needed column exists with a usable type.

    Every missing or mistyped column is reported in one ``CorpusError`` about ``where``, one line each.
    """
    problems, layout = layout_problems(schema, columns)
    if layout is None:
        raise corpus_error(where, problems)
    return layout


def layout_problems(schema: pa.Schema, columns: CorpusColumns) -> tuple[list[str], CorpusLayout | None]:
    """The problems of a schema, one line each, or none and its layout."""
    form: CorpusForm = "nested" if columns.candidates in schema.names else "long"
    problems = _missing_columns(schema, columns, form)
    if problems:
        return problems, None

    query_id_type = _id_type(schema.field(columns.query_id).type, columns.query_id, problems)
    _text_type(schema.field(columns.query).type, columns.query, problems)
    if form == "nested":
        doc_id_type = _candidate_types(schema.field(columns.candidates).type, columns, problems)
        if doc_id_type is not None:
            candidate = schema.field(columns.candidates).type.value_type
            _carried_types(candidate, columns, f" in the {columns.candidates!r} structs", problems)
    else:
        doc_id_type = _id_type(schema.field(columns.doc_id).type, columns.doc_id, problems)
        _text_type(schema.field(columns.text).type, columns.text, problems)
        _carried_types(pa.struct(list(schema)), columns, "", problems)
    if problems or query_id_type is None or doc_id_type is None:
        return problems, None
    return [], CorpusLayout(form, columns, query_id_type, doc_id_type)


def corpus_error(where: str, problems: list[str]) -> CorpusError:
    """One error about ``where`` (a corpus's uri) for one or more problems, one line each."""
    if len(problems) == 1:
        return CorpusError(f"{where}: {problems[0]}")
    return CorpusError(f"{where} has {len(problems)} problems:\n  " + "\n  ".join(problems))


def _missing_columns(schema: pa.Schema, columns: CorpusColumns, form: CorpusForm) -> list[str]:
    wanted = (
        ["query_id", "query", "candidates"] if form == "nested" else ["query_id", "query", "doc_id", "text"]
    )
    missing = [name for name in wanted if getattr(columns, name) not in schema.names]
    if not missing:
        return []
    names = ", ".join(repr(getattr(columns, name)) for name in missing)
    flags = ", ".join(columns.flag_for(name) for name in missing)
    existing = ", ".join(repr(name) for name in schema.names) or "none"
    message = f"missing column{'s' if len(missing) > 1 else ''} {names} (the file has {existing}); "
    message += f"name the right column{'s' if len(missing) > 1 else ''} with {flags}"
    if form == "long":
        message += (
            f", or give a {columns.candidates!r} column of list<struct<{columns.doc_id}, {columns.text}>>"
            f" for the nested form"
        )
    return [message]


def _id_type(data_type: pa.DataType, label: str, problems: list[str]) -> pa.DataType | None:
    canonical = canonical_id_type(data_type)
    if canonical is None:
        problems.append(f"column {label!r} has type {data_type}; ids must be integers or strings")
    return canonical


def _text_type(data_type: pa.DataType, label: str, problems: list[str]) -> None:
    if not is_string_type(data_type):
        problems.append(f"column {label!r} has type {data_type}; it must be a string (UTF-8 text) column")


def _candidate_types(
    data_type: pa.DataType, columns: CorpusColumns, problems: list[str]
) -> pa.DataType | None:
    label = columns.candidates
    expected = f"list<struct<{columns.doc_id}, {columns.text}>>"
    is_list = pa.types.is_list(data_type) or pa.types.is_large_list(data_type)
    if not is_list or not pa.types.is_struct(data_type.value_type):
        problems.append(f"column {label!r} has type {data_type}; it must be {expected}")
        return None
    struct_type = data_type.value_type
    field_names = [struct_type.field(i).name for i in range(struct_type.num_fields)]
    wanted = {"doc_id": columns.doc_id, "text": columns.text}
    missing = {field: name for field, name in wanted.items() if name not in field_names}
    if missing:
        names = ", ".join(repr(name) for name in missing.values())
        flags = ", ".join(CorpusColumns.flag_for(field) for field in missing)
        problems.append(
            f"column {label!r}: its structs lack the field{'s' if len(missing) > 1 else ''} {names} "
            f"(they have {', '.join(repr(n) for n in field_names)}); name them with {flags}"
        )
        return None
    doc_id_type = _id_type(struct_type.field(columns.doc_id).type, f"{label}.{columns.doc_id}", problems)
    _text_type(struct_type.field(columns.text).type, f"{label}.{columns.text}", problems)
    return doc_id_type


def _carried_types(fields: pa.StructType, columns: CorpusColumns, where: str, problems: list[str]) -> None:
    """Each carried column exists (a long corpus's column, a nested corpus's candidate field) and holds
    numbers."""
    names = [fields.field(i).name for i in range(fields.num_fields)]
    for name in columns.carried:
        if name not in names:
            existing = ", ".join(repr(n) for n in names)
            problems.append(
                f"no column {name!r} to read first-stage values from{where} (there are {existing})"
            )
            continue
        data_type = plain_type(fields.field(name).type)
        if not (pa.types.is_integer(data_type) or pa.types.is_floating(data_type)):
            problems.append(f"column {name!r} has type {data_type}; first-stage values must be numbers")
    for name in columns.fields:
        if name not in names:
            existing = ", ".join(repr(n) for n in names)
            problems.append(f"no column {name!r} to score as a field{where} (there are {existing})")
        elif not is_string_type(fields.field(name).type):
            problems.append(f"column {name!r} has type {fields.field(name).type}; a field must be text")
