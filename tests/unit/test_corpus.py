"""Corpus validation, canonical pairs and shard inputs, on real Parquet files written with pyarrow."""

from __future__ import annotations

import itertools
import random
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import storage.corpus.keys
import storage.corpus.pair_hashes
import storage.corpus.queries
import storage.corpus.validation
import storage.shards.shard_files
from core.errors import CorpusError
from storage.corpus import CANONICAL_COLUMNS, CorpusColumns, CorpusSummary, iter_pairs, validate_corpus
from storage.shards.inputs import ShardInput, read_shard_input, write_shard_inputs
from storage.shards.plan import plan_shards
from testkit.corpora import location

DEFAULT = CorpusColumns()
CANDIDATE = pa.struct([("doc_id", pa.string()), ("text", pa.string())])


def long_table(rows: list[tuple], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """rows of (query_id, query, doc_id, text)."""
    types = {"query_id": pa.string(), "query": pa.string(), "doc_id": pa.string(), "text": pa.string()} | (
        types or {}
    )
    columns = {name: pa.array([row[i] for row in rows], types[name]) for i, name in enumerate(types)}
    return pa.table(columns)


def nested_table(rows: list[tuple], candidate_type: pa.DataType = CANDIDATE) -> pa.Table:
    """rows of (query_id, query, [(doc_id, text), ...] or None)."""
    names = [candidate_type.field(i).name for i in range(candidate_type.num_fields)]
    candidates = [
        None if row[2] is None else [dict(zip(names, c, strict=True)) for c in row[2]] for row in rows
    ]
    return pa.table(
        {
            "query_id": [row[0] for row in rows],
            "query": [row[1] for row in rows],
            "candidates": pa.array(candidates, pa.list_(candidate_type)),
        }
    )


def write(table: pa.Table, path: Path, row_group_size: int | None = None) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def corpus_error(path: Path, columns: CorpusColumns = DEFAULT, batch_rows: int = 65536) -> str:
    with pytest.raises(CorpusError) as caught:
        validate_corpus(location(path), columns, batch_rows=batch_rows)
    return str(caught.value)


def pairs_of(path: Path, columns: CorpusColumns = DEFAULT, batch_rows: int = 65536) -> pa.Table:
    return pa.Table.from_batches(list(iter_pairs(location(path), columns, batch_rows)))


def shard_all(
    path: Path, out: Path, shard_pairs: int, columns: CorpusColumns = DEFAULT, batch_rows: int = 65536
):
    summary = validate_corpus(location(path), columns, batch_rows=batch_rows)
    plans = plan_shards(summary, shard_pairs)
    inputs = write_shard_inputs(location(path), columns, summary, plans, location(out), batch_rows=batch_rows)
    return summary, plans, inputs


def rows_of(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(name).to_pylist() for name in CANONICAL_COLUMNS), strict=True))


def interleaved_rows(n_queries: int, docs_per_query: int, seed: int) -> list[tuple]:
    rows = [
        (f"q{q}", f"query {q}", f"d{q}-{d}", f"text {q} {d}")
        for q in range(n_queries)
        for d in range(docs_per_query)
    ]
    random.Random(seed).shuffle(rows)
    return rows


def assert_whole_queries(inputs: list[ShardInput], corpus_pairs: pa.Table) -> None:
    """Every pair in exactly one shard, no query split, corpus order kept within each shard."""
    position = {(row[0], row[2]): index for index, row in enumerate(rows_of(corpus_pairs))}
    shard_of_query: dict[object, int] = {}
    written: list[tuple] = []
    for shard in inputs:
        table = read_shard_input(shard.location)
        assert table.num_rows == shard.n_pairs
        shard_rows = rows_of(table)
        assert len({row[0] for row in shard_rows}) == shard.n_queries
        for row in shard_rows:
            assert shard_of_query.setdefault(row[0], shard.shard_id) == shard.shard_id
        order = [position[(row[0], row[2])] for row in shard_rows]
        assert order == sorted(order)
        written += shard_rows
    assert Counter(written) == Counter(rows_of(corpus_pairs))


# --- forms, types and overrides -----------------------------------------------------------------


def test_long_form_summary_and_canonical_pairs(tmp_path: Path) -> None:
    rows = [("q1", "first", "a", "alpha"), ("q1", "first", "b", "beta"), ("q2", "second", "a", "gamma")]
    path = write(long_table(rows), tmp_path / "c.parquet")

    summary = validate_corpus(location(path), DEFAULT)

    assert (summary.form, summary.n_pairs, summary.n_queries) == ("long", 3, 2)
    assert summary.query_id_type == pa.large_string() and summary.doc_id_type == pa.large_string()
    assert summary.query_pair_counts.tolist() == [2, 1]
    assert summary.queries_contiguous
    pairs = pairs_of(path)
    assert pairs.column_names == list(CANONICAL_COLUMNS)
    assert rows_of(pairs) == rows


def test_nested_form_is_flattened_and_empty_lists_add_nothing(tmp_path: Path) -> None:
    table = nested_table(
        [
            ("q1", "first", [("a", "alpha"), ("b", "beta")]),
            ("q0", "empty", []),
            ("q2", "second", [("c", "gamma")]),
        ]
    )
    path = write(table, tmp_path / "c.parquet")

    summary = validate_corpus(location(path), DEFAULT)

    assert (summary.form, summary.n_pairs, summary.n_queries) == ("nested", 3, 2)
    assert rows_of(pairs_of(path)) == [
        ("q1", "first", "a", "alpha"),
        ("q1", "first", "b", "beta"),
        ("q2", "second", "c", "gamma"),
    ]


def test_nested_pairs_come_in_batches_of_at_most_batch_rows(tmp_path: Path) -> None:
    rows = [(f"q{q}", "query", [(f"d{d}", "text") for d in range(50)]) for q in range(6)]
    path = write(nested_table(rows), tmp_path / "c.parquet", row_group_size=4)

    batches = list(iter_pairs(location(path), DEFAULT, batch_rows=16))

    assert max(batch.num_rows for batch in batches) <= 16
    assert sum(batch.num_rows for batch in batches) == 300


@pytest.mark.parametrize("id_type", [pa.int8(), pa.int32(), pa.uint16(), pa.int64(), pa.uint64()])
def test_integer_ids_stay_integers_through_shards(tmp_path: Path, id_type: pa.DataType) -> None:
    rows = [(q, f"query {q}", d, f"text {q} {d}") for q in range(5) for d in range(4)]
    table = long_table(rows, {"query_id": id_type, "doc_id": id_type})
    path = write(table, tmp_path / "c.parquet")

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=6)

    assert summary.query_id_type == pa.int64() and summary.doc_id_type == pa.int64()
    assert pairs_of(path).schema.field("query_id").type == pa.int64()
    shard = read_shard_input(inputs[0].location)
    assert shard.schema.field("query_id").type == pa.int64()
    assert shard.schema.field("doc_id").type == pa.int64()
    assert_whole_queries(inputs, pairs_of(path))


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_string_ids_and_texts_become_large_strings(tmp_path: Path, string_type: pa.DataType) -> None:
    rows = [("q1", "first", "a", "alpha"), ("q2", "second", "b", "beta")]
    types = dict.fromkeys(["query_id", "query", "doc_id", "text"], string_type)
    path = write(long_table(rows, types), tmp_path / "c.parquet")

    _, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=10)

    schema = read_shard_input(inputs[0].location).schema
    assert [field.type for field in schema] == [pa.large_string()] * 4


def test_mixed_id_types_and_dictionary_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "query_id": pa.array(["q1", "q1", "q2"]).dictionary_encode(),
            "query": pa.array(["x", "x", "y"]).dictionary_encode(),
            "doc_id": pa.array([7, 8, 7], pa.int32()),
            "text": ["a", "b", "c"],
        }
    )
    path = write(table, tmp_path / "c.parquet")

    summary = validate_corpus(location(path), DEFAULT)

    assert (summary.query_id_type, summary.doc_id_type) == (pa.large_string(), pa.int64())
    assert rows_of(pairs_of(path)) == [("q1", "x", 7, "a"), ("q1", "x", 8, "b"), ("q2", "y", 7, "c")]


def test_long_column_overrides(tmp_path: Path) -> None:
    table = pa.table({"qid": ["q1", "q2"], "question": ["x", "y"], "pid": ["a", "b"], "passage": ["p", "r"]})
    path = write(table, tmp_path / "c.parquet")
    columns = CorpusColumns(query_id="qid", query="question", doc_id="pid", text="passage")

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=1, columns=columns)

    assert summary.n_pairs == 2
    assert rows_of(pairs_of(path, columns)) == [("q1", "x", "a", "p"), ("q2", "y", "b", "r")]
    assert read_shard_input(inputs[1].location).column_names == list(CANONICAL_COLUMNS)


def test_nested_column_overrides(tmp_path: Path) -> None:
    candidate = pa.struct([("pid", pa.int64()), ("passage", pa.large_string())])
    table = nested_table([(1, "x", [(10, "p"), (11, "r")])], candidate).rename_columns(["qid", "q", "cands"])
    path = write(table, tmp_path / "c.parquet")
    columns = CorpusColumns(query_id="qid", query="q", doc_id="pid", text="passage", candidates="cands")

    summary = validate_corpus(location(path), columns)

    assert summary.form == "nested"
    assert rows_of(pairs_of(path, columns)) == [(1, "x", 10, "p"), (1, "x", 11, "r")]


# --- shards -----------------------------------------------------------------------------------


def test_interleaved_queries_are_grouped_into_whole_shards(tmp_path: Path) -> None:
    path = write(long_table(interleaved_rows(12, 5, seed=1)), tmp_path / "c.parquet", row_group_size=7)

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=10, batch_rows=8)

    assert not summary.queries_contiguous
    assert [shard.n_pairs for shard in inputs] == [10] * 6
    assert [shard.location.name for shard in inputs] == [f"shard-{i:05d}.parquet" for i in range(6)]
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [s.location.name for s in inputs]
    assert_whole_queries(inputs, pairs_of(path))


def test_contiguous_queries_over_many_row_groups(tmp_path: Path) -> None:
    rows = sorted(interleaved_rows(20, 3, seed=2))
    path = write(long_table(rows), tmp_path / "c.parquet", row_group_size=4)

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=7, batch_rows=5)

    assert summary.queries_contiguous
    assert_whole_queries(inputs, pairs_of(path))


def test_nested_rows_of_one_query_spread_over_the_file(tmp_path: Path) -> None:
    rows = [("q1", "x", [("a", "1")]), ("q2", "y", [("b", "2")]), ("q1", "x", [("c", "3")])]
    path = write(nested_table(rows), tmp_path / "c.parquet")

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=1)

    assert summary.query_pair_counts.tolist() == [2, 1]
    assert rows_of(read_shard_input(inputs[0].location)) == [("q1", "x", "a", "1"), ("q1", "x", "c", "3")]


def _summary_with_counts(tmp_path: Path, counts: list[int]) -> CorpusSummary:
    rows = [(f"q{q}", "query", f"d{d}", "text") for q, count in enumerate(counts) for d in range(count)]
    return validate_corpus(location(write(long_table(rows), tmp_path / "c.parquet")), DEFAULT)


def test_plan_keeps_queries_whole_and_shards_near_the_target(tmp_path: Path) -> None:
    counts = [3, 4, 2, 25, 1, 1, 6, 5, 9, 2, 2, 2, 2, 11, 3]
    summary = _summary_with_counts(tmp_path, counts)

    plans = plan_shards(summary, shard_pairs=10)

    # 25 and 11 exceed the target: a shard each; 5 + 9 = 14 is nearer 10 than 5 alone
    assert [plan.n_pairs for plan in plans] == [9, 25, 8, 14, 8, 11, 3]
    assert [plan.first_query for plan in plans] == [0, 3, 4, 7, 9, 13, 14]
    assert plans[-1].stop_query == len(counts)
    for plan, following in itertools.pairwise(plans):
        # a shard stops only when the next query would not fit
        assert plan.n_pairs + counts[following.first_query] > 10


def test_plan_takes_one_more_query_when_that_lands_nearer(tmp_path: Path) -> None:
    summary = _summary_with_counts(tmp_path, [7, 4, 9, 6])

    plans = plan_shards(summary, shard_pairs=10)

    # 7 + 4 overshoots by 1 where 7 falls short by 3; 9 + 6 would overshoot by 5
    assert [(plan.first_query, plan.stop_query, plan.n_pairs) for plan in plans] == [
        (0, 2, 11),
        (2, 3, 9),
        (3, 4, 6),
    ]


def test_plan_rejects_a_zero_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_pairs"):
        plan_shards(_summary_with_counts(tmp_path, [1]), shard_pairs=0)


def test_write_refuses_a_corpus_changed_since_validation(tmp_path: Path) -> None:
    path = write(long_table([("q1", "x", "a", "t")]), tmp_path / "c.parquet")
    summary = validate_corpus(location(path), DEFAULT)
    write(long_table([("q9", "x", "a", "t")]), path)

    with pytest.raises(CorpusError, match="changed since it was validated"):
        write_shard_inputs(
            location(path), DEFAULT, summary, plan_shards(summary, 10), location(tmp_path / "inputs")
        )


@pytest.mark.parametrize("interleaved", [False, True])
def test_a_failed_shard_write_is_raised_by_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interleaved: bool
) -> None:
    """The Parquet writer thread's error reaches the caller, whatever it was doing."""
    rows = interleaved_rows(30, 4, seed=6) if interleaved else sorted(interleaved_rows(30, 4, seed=6))
    path = write(long_table(rows), tmp_path / "c.parquet")
    summary = validate_corpus(location(path), DEFAULT)
    monkeypatch.setattr(storage.shards.shard_files, "_IN_FLIGHT", 1)
    real_writer = pq.ParquetWriter

    class FailingWriter(real_writer):
        def write_table(self, *args: object, **kwargs: object) -> None:
            if "shard-00003" in str(self.where):
                raise OSError("disk full")
            super().write_table(*args, **kwargs)

    monkeypatch.setattr(storage.shards.shard_files.pq, "ParquetWriter", FailingWriter)

    with pytest.raises(OSError, match="disk full"):
        write_shard_inputs(
            location(path), DEFAULT, summary, plan_shards(summary, 4), location(tmp_path / "in")
        )


def test_read_shard_input_errors_are_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="cannot be read"):
        read_shard_input(location(tmp_path / "missing.parquet"))
    other = write(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(CorpusError, match="has columns"):
        read_shard_input(location(other))


# --- bad inputs: files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "corpus file not found" in corpus_error(tmp_path / "nope.parquet")


def test_directory_without_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden").mkdir()
    write(long_table([("q1", "x", "a", "t")]), tmp_path / ".hidden" / "c.parquet")
    assert "is a directory without Parquet files" in corpus_error(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    path.touch()
    assert "is empty (0 bytes)" in corpus_error(path)


def test_file_without_rows(tmp_path: Path) -> None:
    path = write(long_table([]), tmp_path / "c.parquet")
    assert "has no rows" in corpus_error(path)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    path.write_text("query_id,query,doc_id,text\nq1,x,a,t\n")
    assert "is not a readable Parquet file" in corpus_error(path)


def test_truncated_parquet(tmp_path: Path) -> None:
    path = write(long_table(interleaved_rows(3, 3, seed=0)), tmp_path / "c.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    assert "is not a readable Parquet file" in corpus_error(path)


def test_corrupted_data_pages(tmp_path: Path) -> None:
    rows = [("q1", "x" * 50, f"d{i}", "some text " * 50) for i in range(200)]
    path = tmp_path / "c.parquet"
    pq.write_table(long_table(rows), path, compression="snappy")
    data = bytearray(path.read_bytes())
    start = pq.ParquetFile(path).metadata.row_group(0).column(3).data_page_offset + 20
    data[start : start + 400] = b"\xff" * 400
    path.write_bytes(bytes(data))
    assert "could not be read after row 0" in corpus_error(path)


# --- bad inputs: columns ----------------------------------------------------------------------


def test_missing_column_names_it_the_existing_ones_and_the_flag(tmp_path: Path) -> None:
    table = pa.table({"query_id": ["q1"], "query": ["x"], "doc_id": ["a"], "body": ["t"]})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert "missing column 'text'" in message
    assert "'query_id', 'query', 'doc_id', 'body'" in message
    assert "--text-column" in message


def test_several_missing_columns_in_one_line(tmp_path: Path) -> None:
    message = corpus_error(write(pa.table({"query_id": ["q1"], "question": ["x"]}), tmp_path / "c.parquet"))
    assert "missing columns 'query', 'doc_id', 'text'" in message
    assert "--query-column, --doc-id-column, --text-column" in message
    assert "'candidates'" in message


@pytest.mark.parametrize(
    ("column", "bad_type", "values", "expected"),
    [
        ("query", pa.int64(), [1], "column 'query' has type int64; it must be a string"),
        ("text", pa.binary(), [b"t"], "column 'text' has type binary; it must be a string"),
        (
            "query_id",
            pa.float64(),
            [1.5],
            "column 'query_id' has type double; ids must be integers or strings",
        ),
        ("doc_id", pa.bool_(), [True], "column 'doc_id' has type bool; ids must be integers or strings"),
    ],
)
def test_mistyped_long_column(
    tmp_path: Path, column: str, bad_type: pa.DataType, values: list, expected: str
) -> None:
    table = long_table([("q1", "x", "a", "t")])
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, bad_type))
    assert expected in corpus_error(write(table, tmp_path / "c.parquet"))


def test_all_mistyped_columns_reported_together(tmp_path: Path) -> None:
    table = pa.table({"query_id": [1.0], "query": [1], "doc_id": ["a"], "text": [b"t"]})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert "has 3 problems" in message
    assert message.count("\n") == 3


def test_candidates_not_a_list_of_structs(tmp_path: Path) -> None:
    table = pa.table({"query_id": ["q1"], "query": ["x"], "candidates": [["a", "b"]]})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert (
        "column 'candidates' has type list<element: string>; it must be list<struct<doc_id, text>>" in message
    )


def test_candidate_struct_without_text(tmp_path: Path) -> None:
    candidate = pa.struct([("doc_id", pa.string()), ("body", pa.string())])
    message = corpus_error(
        write(nested_table([("q1", "x", [("a", "t")])], candidate), tmp_path / "c.parquet")
    )
    assert "column 'candidates': its structs lack the field 'text'" in message
    assert "--text-column" in message


def test_candidate_doc_id_mistyped(tmp_path: Path) -> None:
    candidate = pa.struct([("doc_id", pa.float32()), ("text", pa.string())])
    message = corpus_error(
        write(nested_table([("q1", "x", [(1.0, "t")])], candidate), tmp_path / "c.parquet")
    )
    assert "column 'candidates.doc_id' has type float; ids must be integers or strings" in message


# --- bad inputs: values -----------------------------------------------------------------------


def _rows_with(column: int, bad_rows: dict[int, object], n_rows: int = 20) -> list[tuple]:
    rows = [[f"q{i}", f"query {i}", f"d{i}", f"text {i}"] for i in range(n_rows)]
    for index, value in bad_rows.items():
        rows[index][column] = value
    return [tuple(row) for row in rows]


def test_blank_texts_counted_with_first_row(tmp_path: Path) -> None:
    rows = _rows_with(3, {17: None, 18: "", 19: " \t\n"})
    message = corpus_error(write(long_table(rows), tmp_path / "c.parquet", row_group_size=5), batch_rows=4)
    assert message.endswith("column 'text': 3 rows are null, empty or whitespace-only (first at row 17)")


def test_unicode_whitespace_is_blank_and_other_first_characters_are_not(tmp_path: Path) -> None:
    texts = ["\u3000\u00a0", "\u00a0", " x", "\tx", "\u00e9", "\u3000x", "\x7f", "x"]
    rows = [(f"q{i}", "query", f"d{i}", text) for i, text in enumerate(texts)]
    message = corpus_error(write(long_table(rows), tmp_path / "c.parquet"))
    assert message.endswith("column 'text': 2 rows are null, empty or whitespace-only (first at row 0)")


def test_one_blank_query(tmp_path: Path) -> None:
    message = corpus_error(write(long_table(_rows_with(1, {4: "  "})), tmp_path / "c.parquet"))
    assert "column 'query': 1 row is null, empty or whitespace-only (first at row 4)" in message


def test_null_query_ids(tmp_path: Path) -> None:
    message = corpus_error(write(long_table(_rows_with(0, {2: None, 9: None})), tmp_path / "c.parquet"))
    assert "column 'query_id': 2 rows are null or empty (first at row 2)" in message


def test_null_integer_doc_ids(tmp_path: Path) -> None:
    rows = [(1, "x", None, "t"), (1, "x", 2, "t"), (2, "y", None, "t")]
    table = long_table(rows, {"query_id": pa.int64(), "doc_id": pa.int64()})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert "column 'doc_id': 2 rows are null (first at row 0)" in message


def test_empty_string_doc_id(tmp_path: Path) -> None:
    message = corpus_error(write(long_table(_rows_with(2, {3: ""})), tmp_path / "c.parquet"))
    assert "column 'doc_id': 1 row is null or empty (first at row 3)" in message


def test_unsigned_ids_beyond_int64(tmp_path: Path) -> None:
    rows = [(1, "x", 2**63, "t"), (1, "x", 5, "t")]
    table = long_table(rows, {"query_id": pa.uint64(), "doc_id": pa.uint64()})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert "column 'doc_id': 1 row is above the int64 maximum" in message


def test_null_candidates_list(tmp_path: Path) -> None:
    rows = [("q1", "x", [("a", "t")]), ("q2", "y", None)]
    message = corpus_error(write(nested_table(rows), tmp_path / "c.parquet"))
    assert "column 'candidates': 1 row is null (use an empty list" in message
    assert "(first at row 1)" in message


def test_null_candidate_entries(tmp_path: Path) -> None:
    candidates = pa.array([[{"doc_id": "a", "text": "t"}, None], [None]], pa.list_(CANDIDATE))
    table = pa.table({"query_id": ["q1", "q2"], "query": ["x", "y"], "candidates": candidates})
    message = corpus_error(write(table, tmp_path / "c.parquet"))
    assert message.endswith("column 'candidates': 2 entries are null (first at row 0)")


def test_blank_candidate_texts_and_null_candidate_ids(tmp_path: Path) -> None:
    rows = [("q1", "x", [("a", "t"), ("b", " ")]), ("q2", "y", [(None, "u"), ("c", None)])]
    message = corpus_error(write(nested_table(rows), tmp_path / "c.parquet"))
    assert "has 2 problems" in message
    assert "column 'candidates.doc_id': 1 candidate is null or empty (first at row 1)" in message
    assert (
        "column 'candidates.text': 2 candidates are null, empty or whitespace-only (first at row 0)"
        in message
    )


def test_every_candidates_list_empty(tmp_path: Path) -> None:
    message = corpus_error(write(nested_table([("q1", "x", []), ("q2", "y", [])]), tmp_path / "c.parquet"))
    assert "no pairs: every list in column 'candidates' is empty" in message


def test_duplicate_pairs_across_batches(tmp_path: Path) -> None:
    rows = interleaved_rows(4, 5, seed=3)
    rows += [rows[2], rows[2], rows[7]]
    message = corpus_error(write(long_table(rows), tmp_path / "c.parquet", row_group_size=4), batch_rows=3)
    assert (
        "columns 'query_id', 'doc_id': 3 rows are duplicates of an earlier (query_id, doc_id) pair" in message
    )
    assert f"e.g. query_id={rows[2][0]!r}, doc_id={rows[2][2]!r} appears 3 times" in message


def test_duplicate_candidates_in_nested_form(tmp_path: Path) -> None:
    rows = [("q1", "x", [("a", "t"), ("b", "u")]), ("q1", "x", [("a", "t")])]
    message = corpus_error(write(nested_table(rows), tmp_path / "c.parquet"))
    assert "columns 'query_id', 'candidates.doc_id': 1 row is a duplicate" in message


def test_same_doc_id_under_two_queries_is_fine(tmp_path: Path) -> None:
    rows = [("q1", "x", "a", "t"), ("q2", "y", "a", "t")]
    assert validate_corpus(location(write(long_table(rows), tmp_path / "c.parquet")), DEFAULT).n_pairs == 2


def test_query_id_with_two_texts(tmp_path: Path) -> None:
    rows = [("q1", "x", "a", "t"), ("q2", "y", "b", "t"), ("q1", "x!", "c", "t"), ("q3", "z", "a", "t")]
    rows += [("q3", "z", "b", "t"), ("q3", "w", "c", "t")]
    message = corpus_error(write(long_table(rows), tmp_path / "c.parquet", row_group_size=2), batch_rows=2)
    assert "column 'query': 2 query ids have more than one query text" in message
    assert "(e.g. query_id='q1' has 'x' and 'x!')" in message


def test_problems_of_every_kind_in_one_message(tmp_path: Path) -> None:
    rows = [("q1", "x", "a", "t"), ("q1", "x", "a", "t"), ("q1", "y", "b", ""), (None, "z", "c", "t")]
    message = corpus_error(write(long_table(rows), tmp_path / "c.parquet"))
    lines = message.splitlines()
    assert lines[0].endswith("has 4 problems:")
    assert [line.strip().split(":")[0] for line in lines[1:]] == [
        "column 'query_id'",
        "column 'text'",
        "columns 'query_id', 'doc_id'",
        "column 'query'",
    ]


# --- hashing ----------------------------------------------------------------------------------


def test_hash_collisions_are_confirmed_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With seed 0 every string hashes alike: no false duplicates, and the scan retries with seed 1."""
    real_hash = storage.corpus.keys.hash_strings

    def weak_for_seed_zero(array: pa.Array, seed: int) -> np.ndarray:
        hashes = real_hash(array, seed)
        return np.zeros_like(hashes) if seed == 0 else hashes

    monkeypatch.setattr(storage.corpus.keys, "hash_strings", weak_for_seed_zero)
    path = write(long_table(interleaved_rows(5, 3, seed=4)), tmp_path / "c.parquet")

    summary, _, inputs = shard_all(path, tmp_path / "inputs", shard_pairs=4)

    assert (summary.key_seed, summary.n_queries) == (1, 5)
    assert_whole_queries(inputs, pairs_of(path))


def test_bookkeeping_folded_and_grown_mid_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding query records after every batch and spilling pair hashes to buckets change nothing."""
    rows = interleaved_rows(6, 4, seed=5)
    path = write(long_table(rows), tmp_path / "c.parquet", row_group_size=3)
    expected = validate_corpus(location(path), DEFAULT, batch_rows=3)
    monkeypatch.setattr(storage.corpus.queries, "_FOLD_AFTER_RECORDS", 1)
    monkeypatch.setattr(storage.corpus.pair_hashes, "_MEMORY_HASHES", 5)

    summary = validate_corpus(location(path), DEFAULT, batch_rows=3)

    assert summary.query_keys.tolist() == expected.query_keys.tolist()
    assert summary.query_pair_counts.tolist() == expected.query_pair_counts.tolist() == [4] * 6
    conflict = (rows[0][0], "another text", "new", "t")
    conflicting = write(long_table([rows[0], conflict, *rows[1:]]), tmp_path / "d.parquet")
    assert "1 query id has more than one query text" in corpus_error(conflicting, batch_rows=3)
    duplicated = write(long_table([*rows, rows[0]]), tmp_path / "e.parquet")
    assert "1 row is a duplicate" in corpus_error(duplicated, batch_rows=3)


def test_short_strings_hash_as_long_ones_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids of at most four words take a faster path to the same hashes."""
    generator = random.Random(3)
    strings = ["", "a", "abcdefgh", "abcdefghi", "x" * 32, "é" * 16, None]
    strings += [
        "".join(generator.choice("ab\x00é") for _ in range(generator.randint(0, 40))) for _ in range(500)
    ]
    array = pa.array(strings, pa.large_string())
    short = storage.corpus.keys.hash_strings(array, seed=5)
    monkeypatch.setattr(storage.corpus.keys, "_SHORT_WORDS", 0)
    assert short.tolist() == storage.corpus.keys.hash_strings(array, seed=5).tolist()


def test_pair_hashes_spilled_in_buckets_find_every_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage.corpus.pair_hashes, "_MEMORY_HASHES", 1000)
    generator = np.random.default_rng(0)
    values = np.frombuffer(generator.bytes(8 * 10_000), dtype=np.uint64)
    repeats = values[generator.choice(values.size, 50)]
    stream = np.concatenate([values, repeats, repeats[:5]])
    generator.shuffle(stream)

    with storage.corpus.pair_hashes.PairHashes() as hashes:
        for part in np.array_split(stream, 37):
            hashes.append(part)
        spill_dir = hashes._spill_dir
        assert spill_dir is not None and len(list(spill_dir.iterdir())) == 256
        found = hashes.repeated()

    assert found.tolist() == np.unique(repeats).tolist()
    assert not spill_dir.exists()


def test_hashes_distinguish_near_identical_strings() -> None:
    strings = ["", "a", "a\x00", "ab", "ba", "abcdefgh", "abcdefgh\x00", "abcdefghi", "é", "e"]
    hashes = storage.corpus.keys.hash_strings(pa.array(strings), seed=0)
    assert len(set(hashes.tolist())) == len(strings)
    sliced = storage.corpus.keys.hash_strings(pa.array(strings).slice(3), seed=0)
    assert sliced.tolist() == hashes[3:].tolist()


def test_reading_holds_no_more_than_a_few_row_groups(tmp_path: Path) -> None:
    """Arrow memory while streaming a file of many row groups stays far below the file's size."""
    generator = random.Random(7)
    rows = [(f"q{i // 10}", "query", f"d{i}", generator.randbytes(120).hex()) for i in range(12000)]
    path = write(long_table(rows), tmp_path / "c.parquet", row_group_size=400)
    peak = 0
    for _ in iter_pairs(location(path), DEFAULT, batch_rows=400):
        peak = max(peak, pa.total_allocated_bytes())
    assert peak < pq.ParquetFile(path).metadata.row_group(0).total_byte_size * 10


def test_validation_memory_does_not_hold_the_texts(tmp_path: Path) -> None:
    """Python and numpy allocations stay far below the size of the texts (Arrow's own are bounded
    by the batch size)."""
    text = "lorem ipsum " * 800
    rows = [(f"q{i // 10}", f"query {i // 10}", f"d{i}", f"{i} {text}") for i in range(3000)]
    path = write(long_table(rows), tmp_path / "c.parquet", row_group_size=250)
    text_bytes = sum(len(row[3]) for row in rows)

    tracemalloc.start()
    try:
        validate_corpus(location(path), DEFAULT, batch_rows=250)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < text_bytes / 10


# --- round trip -------------------------------------------------------------------------------


@st.composite
def corpora(draw: st.DrawFn) -> tuple[pa.Table, int, int, int]:
    integer_ids = draw(st.booleans())
    n_queries = draw(st.integers(1, 8))
    texts = st.text("abc ", min_size=1, max_size=6).filter(str.strip)
    pairs = []
    for q in range(n_queries):
        query_id = q * 7 - 20 if integer_ids else f"q{q}"
        query = draw(texts)
        doc_ids = draw(st.lists(st.integers(0, 30), min_size=1, max_size=6, unique=True))
        pairs += [(query_id, query, doc if integer_ids else f"d{doc}", draw(texts)) for doc in doc_ids]
    order = draw(st.permutations(range(len(pairs))))
    pairs = [pairs[i] for i in order]
    id_type = pa.int32() if integer_ids else pa.string()
    if draw(st.booleans()):
        table = long_table(pairs, {"query_id": id_type, "doc_id": id_type})
    else:  # nested: each pair its own row, so a query's rows are as scattered as the pairs
        candidate = pa.struct([("doc_id", id_type), ("text", pa.string())])
        table = nested_table([(q, query, [(d, t)]) for q, query, d, t in pairs], candidate)
    return table, draw(st.integers(1, 15)), draw(st.integers(1, 9)), draw(st.integers(1, 9))


@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(corpora())
def test_random_corpora_round_trip_through_shards(corpus: tuple[pa.Table, int, int, int]) -> None:
    table, shard_pairs, row_group_size, batch_rows = corpus
    with tempfile.TemporaryDirectory() as directory:
        path = write(table, Path(directory) / "c.parquet", row_group_size=row_group_size)

        summary, plans, inputs = shard_all(
            path, Path(directory) / "inputs", shard_pairs, batch_rows=batch_rows
        )

        pairs = pairs_of(path)
        assert summary.n_pairs == pairs.num_rows == sum(shard.n_pairs for shard in inputs)
        assert [shard.n_pairs for shard in inputs] == [plan.n_pairs for plan in plans]
        assert_whole_queries(inputs, pairs)
