"""Which Parquet files make up a corpus, and the one layout they share.

A corpus is one Parquet file or a directory (an object-store prefix) of them, Hive-partitioned or not.
Files and directories whose names start with ``.`` or ``_`` are skipped (``_SUCCESS``, ``.crc``); every
other file below the directory is read as Parquet, in sorted path order. ``open_corpus`` reads each
file's footer once: every file must hold the named columns, resolved to the same form and id types; a
Hive partition key (``lang=en/``) becomes a column only where the files lack a named column of that name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.errors import CorpusError, StorageError
from storage.corpus.layout import CorpusColumns, CorpusLayout, layout_problems, resolve_layout
from storage.location import Location

# What pyarrow raises on damaged files: besides its own errors, a corrupt footer can surface as a
# UnicodeDecodeError (column paths) or a ValueError.
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (pa.ArrowException, OSError, UnicodeDecodeError, ValueError)
HIDDEN_PREFIXES = (".", "_")
# Read size of a column's pages when a read is not pre-buffered.
_STREAM_BUFFER_BYTES = 4 << 20


@dataclass(frozen=True)
class CorpusFile:
    """One Parquet file of a corpus; ``label`` names it in row references (empty for a one-file corpus)."""

    location: Location
    label: str
    num_rows: int
    pair_slots: int
    # Rows and compressed bytes of each row group, from the footer.
    row_group_rows: tuple[int, ...] = ()
    row_group_bytes: tuple[int, ...] = ()
    # Values of the named columns that the file lacks and its Hive partition directories give.
    constants: Mapping[str, pa.Scalar] = field(default_factory=dict)

    def row(self, index: int) -> str:
        """A row reference for messages: ``row 17`` or ``part-1.parquet row 17``."""
        return f"{self.label} row {index}" if self.label else f"row {index}"

    @contextmanager
    def open(self, pre_buffer: bool) -> Iterator[pq.ParquetFile]:
        """The file, for reading. ``pre_buffer`` fetches each read's column chunks at once (fewer, larger
        requests to an object store); without it pages are read as they are decoded."""
        with _open_parquet(self.location, pre_buffer) as parquet_file:
            yield parquet_file


@dataclass(frozen=True)
class Corpus:
    """A corpus whose files all passed the schema checks."""

    location: Location
    layout: CorpusLayout
    files: tuple[CorpusFile, ...]


def open_corpus(location: Location, columns: CorpusColumns) -> Corpus:
    """Find the corpus's files and check their schemas; every file-level problem is a ``CorpusError``."""
    info = location.info()
    if info.type == pafs.FileType.NotFound:
        raise CorpusError(f"corpus file not found: {location.uri}")
    if info.type == pafs.FileType.File:
        file, layout = _checked_file(location, "", {}, columns)
        if file.num_rows == 0:
            raise CorpusError(f"{location.uri} has no rows")
        return Corpus(location, layout, (file,))
    found = _dataset_files(location)
    if not found:
        raise CorpusError(
            f"{location.uri} is a directory without Parquet files (names starting with "
            f"{' or '.join(repr(p) for p in HIDDEN_PREFIXES)} are skipped); give one Parquet file or a "
            "directory of them"
        )
    files: list[CorpusFile] = []
    first: tuple[CorpusFile, CorpusLayout] | None = None
    for file_location, partition in found:
        label = file_location.relative_to(location)
        if first is None:
            first = _checked_file(file_location, label, partition, columns)
            files.append(first[0])
        else:
            files.append(_same_schema(file_location, label, partition, columns, *first))
    assert first is not None
    if not any(file.num_rows for file in files):
        raise CorpusError(f"{location.uri} has no rows in any of its {len(files)} files")
    return Corpus(location, first[1], tuple(files))


def _dataset_files(location: Location) -> list[tuple[Location, dict[str, pa.Scalar]]]:
    """The files below a directory in path order, each with its Hive partition values."""
    options = ds.FileSystemFactoryOptions(
        partitioning=ds.HivePartitioning.discover(), selector_ignore_prefixes=list(HIDDEN_PREFIXES)
    )

    def discover() -> list[ds.Fragment]:
        selector = pafs.FileSelector(location.path, recursive=True)
        factory = ds.FileSystemDatasetFactory(location.filesystem, selector, ds.ParquetFileFormat(), options)
        # Inspecting no fragment reads no file: the schema is the partition keys' alone.
        partition_schema = factory.inspect(fragments=0)
        return list(factory.finish(partition_schema).get_fragments())

    try:
        fragments = discover()
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{location.uri}: its files cannot be listed: {exc}") from exc
    found = []
    for fragment in sorted(fragments, key=lambda fragment: fragment.path):
        keys = ds.get_partition_keys(fragment.partition_expression)
        file_location = location.join(fragment.path[len(location.path.rstrip("/")) + 1 :])
        found.append((file_location, {name: pa.scalar(value) for name, value in keys.items()}))
    return found


def _checked_file(
    location: Location, label: str, partition: Mapping[str, pa.Scalar], columns: CorpusColumns
) -> tuple[CorpusFile, CorpusLayout]:
    with _open_parquet(location) as parquet_file:
        schema, constants = _effective_schema(parquet_file.schema_arrow, partition, columns)
        layout = resolve_layout(schema, columns, location.uri)
        return _corpus_file(location, label, parquet_file, layout, constants), layout


def _same_schema(
    location: Location,
    label: str,
    partition: Mapping[str, pa.Scalar],
    columns: CorpusColumns,
    first: CorpusFile,
    first_layout: CorpusLayout,
) -> CorpusFile:
    """A later file of a dataset, which must resolve to the first file's layout."""
    with _open_parquet(location) as parquet_file:
        schema, constants = _effective_schema(parquet_file.schema_arrow, partition, columns)
        problems, layout = layout_problems(schema, columns)
        if layout is not None and layout != first_layout:
            problems = _differences(layout, first_layout)
        if problems:
            raise CorpusError(
                f"{location.uri}: its schema differs from that of {first.label} (every file must have the "
                f"same columns): {'; '.join(problems)}"
            )
        assert layout is not None
        return _corpus_file(location, label, parquet_file, layout, constants)


def _differences(layout: CorpusLayout, first: CorpusLayout) -> list[str]:
    if layout.form != first.form:
        return [f"it is in the {layout.form} form, the first file in the {first.form} form"]
    names = layout.columns
    doc_id = f"{names.candidates}.{names.doc_id}" if layout.form == "nested" else names.doc_id
    return [
        f"column {label!r} holds {_kind(mine)} ids, the first file's {_kind(theirs)} ids"
        for label, mine, theirs in (
            (names.query_id, layout.query_id_type, first.query_id_type),
            (doc_id, layout.doc_id_type, first.doc_id_type),
        )
        if mine != theirs
    ]


def _kind(id_type: pa.DataType) -> str:
    return "integer" if pa.types.is_integer(id_type) else "string"


def _effective_schema(
    schema: pa.Schema, partition: Mapping[str, pa.Scalar], columns: CorpusColumns
) -> tuple[pa.Schema, dict[str, pa.Scalar]]:
    """The file's schema plus the named columns that only its partition directories hold."""
    named = {columns.query_id, columns.query, columns.doc_id, columns.text, columns.candidates}
    constants = {
        name: value for name, value in partition.items() if name in named and name not in schema.names
    }
    for name, value in constants.items():
        schema = schema.append(pa.field(name, value.type))
    return schema, constants


def _corpus_file(
    location: Location,
    label: str,
    parquet_file: pq.ParquetFile,
    layout: CorpusLayout,
    constants: dict[str, pa.Scalar],
) -> CorpusFile:
    metadata = parquet_file.metadata
    groups = [metadata.row_group(index) for index in range(metadata.num_row_groups)]
    wanted = set(layout.file_columns)
    leaves = [
        index
        for index in range(metadata.num_columns)
        if metadata.schema.column(index).path.split(".")[0] in wanted
    ]
    return CorpusFile(
        location,
        label,
        metadata.num_rows,
        _footer_pair_slots(parquet_file, layout),
        tuple(group.num_rows for group in groups),
        tuple(sum(group.column(leaf).total_compressed_size for leaf in leaves) for group in groups),
        constants,
    )


@contextmanager
def _open_parquet(location: Location, pre_buffer: bool = False) -> Iterator[pq.ParquetFile]:
    try:
        source = location.open_input()
    except StorageError as exc:
        raise CorpusError(f"{location.uri} cannot be opened: {exc}") from exc
    with source:
        if source.size() == 0:
            raise CorpusError(f"{location.uri} is empty (0 bytes)")
        try:
            parquet_file = pq.ParquetFile(source, pre_buffer=pre_buffer, buffer_size=_STREAM_BUFFER_BYTES)
        except UNREADABLE_ERRORS as exc:
            raise CorpusError(f"{location.uri} is not a readable Parquet file: {exc}") from exc
        with parquet_file:
            yield parquet_file


def _footer_pair_slots(parquet_file: pq.ParquetFile, layout: CorpusLayout) -> int:
    """An upper bound of the number of pairs in one file, from its footer alone."""
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
