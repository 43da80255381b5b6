"""Streaming reads of a corpus file: raw record batches and their canonical long-form pairs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import CorpusError
from storage.corpus.layout import TEXT_TYPE, CorpusColumns, CorpusLayout, plain_type, resolve_layout

DEFAULT_BATCH_ROWS = 65536
# What pyarrow raises on damaged files: besides its own errors, a corrupt footer can surface as a
# UnicodeDecodeError (column paths) or a ValueError.
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (pa.ArrowException, OSError, UnicodeDecodeError, ValueError)


@dataclass(frozen=True)
class RawBatch:
    """One record batch as read from the file, and the file row index of its first row (0-based)."""

    first_row: int
    batch: pa.RecordBatch


@contextmanager
def open_corpus(path: Path, columns: CorpusColumns) -> Iterator[tuple[pq.ParquetFile, CorpusLayout]]:
    """Open a corpus file and check its schema; every file-level problem is a ``CorpusError``."""
    if not path.exists():
        raise CorpusError(f"corpus file not found: {path}")
    if not path.is_file():
        raise CorpusError(f"{path} is not a file; give the path of one Parquet file")
    if path.stat().st_size == 0:
        raise CorpusError(f"{path} is empty (0 bytes)")
    try:
        parquet_file = pq.ParquetFile(path)
    except UNREADABLE_ERRORS as exc:
        raise CorpusError(f"{path} is not a readable Parquet file: {exc}") from exc
    with parquet_file:
        if parquet_file.metadata.num_rows == 0:
            raise CorpusError(f"{path} has no rows")
        yield parquet_file, resolve_layout(parquet_file.schema_arrow, columns, path)


def iter_raw_batches(
    parquet_file: pq.ParquetFile, layout: CorpusLayout, path: Path, batch_rows: int
) -> Iterator[RawBatch]:
    """The needed columns, streamed; a nested file is read in fewer rows so pairs stay near batch_rows."""
    read_rows = batch_rows if layout.form == "long" else _nested_read_rows(parquet_file, layout, batch_rows)
    batches = parquet_file.iter_batches(batch_size=read_rows, columns=layout.file_columns)
    first_row = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except UNREADABLE_ERRORS as exc:
            raise CorpusError(f"{path} could not be read after row {first_row}: {exc}") from exc
        yield RawBatch(first_row, batch)
        first_row += batch.num_rows


def to_pairs(raw: pa.RecordBatch, layout: CorpusLayout) -> pa.RecordBatch:
    """Canonical pairs of one raw batch (nested candidates flattened, ids and texts cast)."""
    names = layout.columns
    query_ids = _cast(raw.column(names.query_id), layout.query_id_type)
    queries = _cast(raw.column(names.query), TEXT_TYPE)
    if layout.form == "long":
        doc_ids = _cast(raw.column(names.doc_id), layout.doc_id_type)
        texts = _cast(raw.column(names.text), TEXT_TYPE)
    else:
        candidates = raw.column(names.candidates)
        lengths = pc.fill_null(pc.list_value_length(candidates), 0).to_numpy()
        row_of_pair = pa.array(np.repeat(np.arange(raw.num_rows, dtype=np.int64), lengths))
        flat = pc.list_flatten(candidates)
        # struct_field (unlike StructArray.field) turns the fields of a null candidate into nulls.
        doc_ids = _cast(pc.struct_field(flat, names.doc_id), layout.doc_id_type)
        texts = _cast(pc.struct_field(flat, names.text), TEXT_TYPE)
        query_ids = query_ids.take(row_of_pair)
        queries = queries.take(row_of_pair)
    return pa.RecordBatch.from_arrays([query_ids, queries, doc_ids, texts], schema=layout.pair_schema)


def pairs_with_ids(pairs: pa.RecordBatch) -> pa.RecordBatch:
    """The pairs whose query_id and doc_id are both present (validation reports the others)."""
    present = pc.and_(pairs.column("query_id").is_valid(), pairs.column("doc_id").is_valid())
    if pc.all(present).as_py():
        return pairs
    return pairs.filter(present)


def iter_pairs(
    path: Path, columns: CorpusColumns, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Canonical long-form batches (``query_id, query, doc_id, text``) of at most batch_rows pairs.

    Pairs come in file order; a nested row's candidates come in list order. Call after
    ``validate_corpus``: this only checks the schema, not the values.
    """
    with open_corpus(path, columns) as (parquet_file, layout):
        for raw in iter_raw_batches(parquet_file, layout, path, batch_rows):
            pairs = to_pairs(raw.batch, layout)
            for start in range(0, pairs.num_rows, batch_rows):
                yield pairs.slice(start, batch_rows)


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == target:
        return array
    # Unsigned 64-bit ids above the int64 range wrap here; validation reports them before any write.
    safe = not (pa.types.is_uint64(plain_type(array.type)) and target == pa.int64())
    return pc.cast(array, target, safe=safe)


def pair_slots(parquet_file: pq.ParquetFile, layout: CorpusLayout) -> int:
    """An upper bound of the number of pairs, from the footer alone."""
    metadata = parquet_file.metadata
    if layout.form == "long":
        return metadata.num_rows
    # Leaf values of candidates.doc_id, counting a placeholder for each null or empty list.
    names = layout.columns
    leaf = next(
        (
            index
            for index in range(metadata.num_columns)
            if metadata.schema.column(index).path.startswith(f"{names.candidates}.")
            and metadata.schema.column(index).path.endswith(f".{names.doc_id}")
        ),
        None,
    )
    if leaf is None:
        return metadata.num_rows
    return sum(metadata.row_group(group).column(leaf).num_values for group in range(metadata.num_row_groups))


def _nested_read_rows(parquet_file: pq.ParquetFile, layout: CorpusLayout, batch_rows: int) -> int:
    """File rows per read so that one read holds about batch_rows candidates."""
    rows = max(1, parquet_file.metadata.num_rows)
    pairs_per_row = max(1.0, pair_slots(parquet_file, layout) / rows)
    return max(1, int(batch_rows / pairs_per_row))
