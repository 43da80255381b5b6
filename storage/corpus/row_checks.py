"""Value checks that need one row at a time: nulls, blank texts, null candidates, oversized ids.

Each kind of problem is counted over the whole corpus and reported once, with its first row
(0-based file row index, as pyarrow and pandas count; in a dataset, with the file's name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.corpus.layout import CorpusLayout, is_string_type, plain_type
from storage.corpus.reader import RawBatch
from storage.corpus.source import CorpusFile

_INT64_MAX = np.iinfo(np.int64).max
_PLURALS = {"row": "rows", "entry": "entries", "candidate": "candidates"}


@dataclass(frozen=True)
class FileRows:
    """The file row of each entry of some array: ``index[i]`` is entry i's row in ``file``."""

    file: CorpusFile
    index: np.ndarray

    def repeat(self, counts: np.ndarray) -> FileRows:
        return FileRows(self.file, np.repeat(self.index, counts))

    def select(self, mask: np.ndarray) -> FileRows:
        return FileRows(self.file, self.index[mask])


@dataclass
class _Count:
    count: int
    first: str


@dataclass
class RowProblems:
    """Problem counts keyed by (column label, unit, what is wrong), in the order first seen."""

    counts: dict[tuple[str, str, str], _Count] = field(default_factory=dict)

    def add(
        self,
        column: str,
        unit: str,
        what: str,
        mask: pa.Array | np.ndarray,
        rows: FileRows,
    ) -> None:
        """Count the true entries of mask; rows maps each entry to its row."""
        flags = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
        hits = np.flatnonzero(flags)
        if hits.size == 0:
            return
        key = (column, unit, what)
        if key in self.counts:
            self.counts[key].count += int(hits.size)
        else:
            self.counts[key] = _Count(int(hits.size), rows.file.row(int(rows.index[hits[0]])))

    def messages(self) -> list[str]:
        """e.g. ``column 'text': 3 rows are null, empty or whitespace-only (first at row 17)``; in a
        dataset ``(first at part-1.parquet row 17)``."""
        lines = []
        for (column, unit, what), found in self.counts.items():
            verb = "are" if found.count > 1 else "is"
            noun = _PLURALS[unit] if found.count > 1 else unit
            lines.append(f"column {column!r}: {found.count} {noun} {verb} {what} (first at {found.first})")
        return lines


def check_rows(raw: RawBatch, layout: CorpusLayout, problems: RowProblems) -> None:
    """Add the problems of one raw batch to problems."""
    batch = raw.batch
    names = layout.columns
    rows = FileRows(raw.file, np.arange(raw.first_row, raw.first_row + batch.num_rows, dtype=np.int64))
    _check_id(batch.column(names.query_id), names.query_id, "row", rows, problems)
    _check_text(batch.column(names.query), names.query, "row", rows, problems)
    if layout.form == "long":
        _check_id(batch.column(names.doc_id), names.doc_id, "row", rows, problems)
        _check_text(batch.column(names.text), names.text, "row", rows, problems)
        return

    candidates = batch.column(names.candidates)
    problems.add(
        names.candidates,
        "row",
        "null (use an empty list for a query without candidates)",
        candidates.is_null(),
        rows,
    )
    lengths = pc.fill_null(pc.list_value_length(candidates), 0).to_numpy()
    candidate_rows = rows.repeat(lengths)
    flat = pc.list_flatten(candidates)
    problems.add(names.candidates, "entry", "null", flat.is_null(), candidate_rows)
    present = flat.is_valid()
    # Fields of a null entry are not checked again: the entry itself was reported above.
    for name, check in ((names.doc_id, _check_id), (names.text, _check_text)):
        values = flat.field(name).filter(present)
        check(
            values, f"{names.candidates}.{name}", "candidate", candidate_rows.select(_mask(present)), problems
        )


def _check_id(ids: pa.Array, label: str, unit: str, rows: FileRows, problems: RowProblems) -> None:
    if is_string_type(ids.type):
        blank = pc.fill_null(pc.equal(pc.binary_length(_decoded(ids)), 0), True)
        problems.add(label, unit, "null or empty", blank, rows)
        return
    problems.add(label, unit, "null", ids.is_null(), rows)
    if pa.types.is_uint64(plain_type(ids.type)):
        too_big = pc.fill_null(pc.greater(_decoded(ids), pa.scalar(_INT64_MAX, pa.uint64())), False)
        problems.add(label, unit, f"above the int64 maximum {_INT64_MAX}", too_big, rows)


def _check_text(texts: pa.Array, label: str, unit: str, rows: FileRows, problems: RowProblems) -> None:
    texts = _decoded(texts)
    blank = _blank(texts)
    problems.add(label, unit, "null, empty or whitespace-only", blank, rows)


def _blank(texts: pa.Array) -> np.ndarray:
    """Null, empty or whitespace-only, per text. A text that starts with a printable ASCII character is
    none of these: only the others (rare) go through the Unicode whitespace check."""
    if pa.types.is_large_string(texts.type) or pa.types.is_string(texts.type):
        first = _first_bytes(texts)
        maybe = ~((first > 0x20) & (first < 0x7F))
    else:
        maybe = np.ones(len(texts), dtype=bool)
    if texts.null_count:
        maybe |= _mask(texts.is_null())
    blank = np.zeros(len(texts), dtype=bool)
    suspects = np.flatnonzero(maybe)
    if suspects.size:
        some = texts.take(pa.array(suspects))
        checked = pc.or_(pc.equal(pc.binary_length(some), 0), pc.utf8_is_space(some))
        blank[suspects] = _mask(pc.fill_null(checked, True))
    return blank


def _first_bytes(texts: pa.Array) -> np.ndarray:
    """The first byte of each text, 0 for an empty one."""
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, offset_type)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    nonempty = np.diff(offsets) > 0
    first = np.zeros(len(texts), dtype=np.uint8)
    first[nonempty] = data[offsets[:-1][nonempty]]
    return first


def _decoded(array: pa.Array) -> pa.Array:
    """Plain values: dictionaries decoded, string views cast (the string kernels want offsets)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type):
        array = pc.cast(array, pa.large_string())
    return array


def _mask(flags: pa.Array) -> np.ndarray:
    return flags.to_numpy(zero_copy_only=False).astype(bool)
