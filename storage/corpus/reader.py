"""Streaming reads of a corpus, file after file: raw record batches and their canonical long-form pairs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import CorpusError
from storage.corpus.layout import CARRIED_TYPE, TEXT_TYPE, CorpusColumns, CorpusLayout, plain_type
from storage.corpus.read_ahead import Read, ReadError, decoded_batches
from storage.corpus.source import Corpus, CorpusFile, open_corpus
from storage.location import Location

DEFAULT_BATCH_ROWS = 65536
# Compressed bytes of row groups read at once; larger row groups are streamed page by page.
_READ_BYTES = 32 << 20


@dataclass(frozen=True)
class RawBatch:
    """One record batch as read from a file, and the row index in that file of its first row (0-based)."""

    file: CorpusFile
    first_row: int
    batch: pa.RecordBatch


def iter_raw_batches(corpus: Corpus, batch_rows: int) -> Iterator[RawBatch]:
    """The needed columns of every file in turn, streamed; nested files are read in fewer rows so that
    pairs stay near batch_rows. The next batches are decoded in the background (``read_ahead``)."""
    reads = (
        read
        for file in corpus.files
        if file.num_rows
        for read in _file_reads(file, corpus.layout, batch_rows)
    )
    file, first_row = None, 0
    try:
        for read, batch in decoded_batches(reads):
            if read.file is not file:
                file, first_row = read.file, 0
            for name, value in read.file.constants.items():
                batch = batch.append_column(name, pa.repeat(value, batch.num_rows))
            yield RawBatch(read.file, first_row, batch)
            first_row += batch.num_rows
    except ReadError as failed:
        rows = first_row if failed.read.file is file else 0
        uri = failed.read.file.location.uri
        raise CorpusError(f"{uri} could not be read after row {rows}: {failed.cause}") from failed.cause


def _file_reads(file: CorpusFile, layout: CorpusLayout, batch_rows: int) -> Iterator[Read]:
    read_rows = batch_rows if layout.form == "long" else _nested_read_rows(file, batch_rows)
    stored = [name for name in layout.file_columns if name not in file.constants]
    pre_buffer = max(file.row_group_bytes, default=0) <= _READ_BYTES
    for row_groups in _row_group_reads(file, read_rows):
        yield Read(file, row_groups, stored, read_rows, pre_buffer)


def _row_group_reads(file: CorpusFile, read_rows: int) -> list[list[int]]:
    """Consecutive row groups read together: enough for read_rows rows, within _READ_BYTES.

    Each read is a reader of its own. One reader over the whole file would keep every pre-buffered
    column chunk until the file is closed: memory growing with the file.
    """
    reads: list[list[int]] = []
    rows = size = 0
    for index, (group_rows, group_bytes) in enumerate(
        zip(file.row_group_rows, file.row_group_bytes, strict=True)
    ):
        if reads and rows < read_rows and size + group_bytes <= _READ_BYTES:
            reads[-1].append(index)
            rows, size = rows + group_rows, size + group_bytes
        else:
            reads.append([index])
            rows, size = group_rows, group_bytes
    return reads


def to_pairs(raw: pa.RecordBatch, layout: CorpusLayout) -> pa.RecordBatch:
    """Canonical pairs of one raw batch (nested candidates flattened, ids and texts cast)."""
    names = layout.columns
    query_ids = _cast(raw.column(names.query_id), layout.query_id_type)
    queries = _cast(raw.column(names.query), TEXT_TYPE)
    if layout.form == "long":
        doc_ids = _cast(raw.column(names.doc_id), layout.doc_id_type)
        texts = _cast(raw.column(names.text), TEXT_TYPE)
        carried = [_cast(raw.column(name), CARRIED_TYPE) for name in names.carried]
        fields = [_cast(raw.column(name), TEXT_TYPE) for name in names.fields]
    else:
        candidates = raw.column(names.candidates)
        lengths = pc.fill_null(pc.list_value_length(candidates), 0).to_numpy()
        row_of_pair = pa.array(np.repeat(np.arange(raw.num_rows, dtype=np.int64), lengths))
        flat = pc.list_flatten(candidates)
        # struct_field (unlike StructArray.field) turns the fields of a null candidate into nulls.
        doc_ids = _cast(pc.struct_field(flat, names.doc_id), layout.doc_id_type)
        texts = _cast(pc.struct_field(flat, names.text), TEXT_TYPE)
        carried = [_cast(pc.struct_field(flat, name), CARRIED_TYPE) for name in names.carried]
        fields = [_cast(pc.struct_field(flat, name), TEXT_TYPE) for name in names.fields]
        query_ids = query_ids.take(row_of_pair)
        queries = queries.take(row_of_pair)
    return pa.RecordBatch.from_arrays(
        [query_ids, queries, doc_ids, texts, *carried, *fields], schema=layout.pair_schema
    )


def pairs_with_ids(pairs: pa.RecordBatch) -> pa.RecordBatch:
    """The pairs whose query_id and doc_id are both present (validation reports the others)."""
    present = pc.and_(pairs.column("query_id").is_valid(), pairs.column("doc_id").is_valid())
    if pc.all(present).as_py():
        return pairs
    return pairs.filter(present)


def iter_pairs(
    corpus: Location, columns: CorpusColumns, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Canonical long-form batches (``query_id, query, doc_id, text``) of at most batch_rows pairs.

    Pairs come in file order (a dataset's files in path order); a nested row's candidates come in list
    order. Call after ``validate_corpus``: this only checks the schema, not the values.
    """
    opened = open_corpus(corpus, columns)
    for raw in iter_raw_batches(opened, batch_rows):
        pairs = to_pairs(raw.batch, opened.layout)
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


def _nested_read_rows(file: CorpusFile, batch_rows: int) -> int:
    """File rows per read so that one read holds about batch_rows candidates."""
    pairs_per_row = max(1.0, file.pair_slots / max(1, file.num_rows))
    return max(1, int(batch_rows / pairs_per_row))
