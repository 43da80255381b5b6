"""Corpora of many Parquet files: plain and Hive-partitioned directories, on local disk and on an fsspec
``memory://`` filesystem, read in path order and validated as one corpus."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import CorpusError
from storage.corpus import CorpusColumns, iter_pairs, validate_corpus
from storage.location import Location, parse_location
from storage.shards.inputs import read_shard_input, write_shard_inputs
from storage.shards.plan import plan_shards
from testkit.corpora import location
from tests.unit.test_corpus import assert_whole_queries, long_table, nested_table, rows_of

DEFAULT = CorpusColumns()


def rows(queries: range, docs: int = 3) -> list[tuple]:
    return [(f"q{q}", f"query {q}", f"d{q}-{d}", f"text {q} {d}") for q in queries for d in range(docs)]


def write_files(root: Location, files: dict[str, pa.Table]) -> Location:
    """Write each table at its relative path below root (directories made as needed)."""
    for relative, table in files.items():
        target = root.join(relative)
        target.parent.make_dir()
        pq.write_table(table, target.path, filesystem=target.filesystem)
    return root


def corpus_error(corpus: Location) -> str:
    with pytest.raises(CorpusError) as caught:
        validate_corpus(corpus, DEFAULT)
    return str(caught.value)


def pairs_of(corpus: Location, batch_rows: int = 65536) -> pa.Table:
    return pa.Table.from_batches(list(iter_pairs(corpus, DEFAULT, batch_rows)))


@pytest.fixture
def memory_root() -> Iterator[Location]:
    """A fresh prefix on fsspec's in-process memory filesystem, removed afterwards."""
    root = parse_location(f"memory://corpora/{secrets.token_hex(4)}")
    yield root
    root.delete_tree()


def test_many_files_read_in_path_order_as_one_corpus(tmp_path: Path) -> None:
    files = {
        "part-0.parquet": long_table(rows(range(0, 3))),
        "part-1.parquet": long_table(rows(range(3, 5))),
        "sub/part-2.parquet": long_table(rows(range(5, 9))),
        "_SUCCESS": pa.table({"x": [1]}),
        ".part-9.parquet.crc": pa.table({"x": [1]}),
        "_tmp/part-3.parquet": pa.table({"x": [1]}),
    }
    corpus = write_files(location(tmp_path / "corpus"), files)

    summary = validate_corpus(corpus, DEFAULT)

    assert (summary.n_pairs, summary.n_queries, summary.queries_contiguous) == (27, 9, True)
    assert rows_of(pairs_of(corpus, batch_rows=4)) == rows(range(9))
    plans = plan_shards(summary, shard_pairs=6)
    inputs = write_shard_inputs(corpus, DEFAULT, summary, plans, location(tmp_path / "inputs"))
    assert [shard.n_pairs for shard in inputs] == [6, 6, 6, 6, 3]
    assert_whole_queries(inputs, pairs_of(corpus))


def test_a_query_split_across_two_files_lands_in_one_shard(tmp_path: Path) -> None:
    first, second = rows(range(0, 4)), rows(range(4, 6))
    # q1's last document is in the second file, after q4 and q5.
    files = {
        "a.parquet": long_table([row for row in first if row[2] != "d1-2"]),
        "b.parquet": long_table([*second, ("q1", "query 1", "d1-2", "text 1 2")]),
    }
    corpus = write_files(location(tmp_path / "corpus"), files)

    summary = validate_corpus(corpus, DEFAULT)
    inputs = write_shard_inputs(
        corpus, DEFAULT, summary, plan_shards(summary, 3), location(tmp_path / "inputs")
    )

    assert not summary.queries_contiguous
    assert summary.query_pair_counts.tolist() == [3] * 6
    [shard_of_q1] = [
        shard for shard in inputs if "q1" in read_shard_input(shard.location)["query_id"].to_pylist()
    ]
    assert read_shard_input(shard_of_q1.location)["doc_id"].to_pylist() == ["d1-0", "d1-1", "d1-2"]
    assert_whole_queries(inputs, pairs_of(corpus))


def test_a_query_continued_at_the_start_of_the_next_file_stays_contiguous(tmp_path: Path) -> None:
    first, second = rows(range(0, 2)), rows(range(2, 4))
    files = {"a.parquet": long_table([*first, second[0]]), "b.parquet": long_table(second[1:])}
    corpus = write_files(location(tmp_path / "corpus"), files)

    summary = validate_corpus(corpus, DEFAULT)
    inputs = write_shard_inputs(corpus, DEFAULT, summary, plan_shards(summary, 3), location(tmp_path / "in"))

    assert summary.queries_contiguous and summary.query_pair_counts.tolist() == [3] * 4
    assert read_shard_input(inputs[2].location)["doc_id"].to_pylist() == ["d2-0", "d2-1", "d2-2"]
    assert_whole_queries(inputs, pairs_of(corpus))


def test_hive_partitions_are_ignored_unless_they_name_a_column(tmp_path: Path) -> None:
    by_language = {
        "lang=en/part-0.parquet": long_table(rows(range(0, 2))),
        "lang=fr/part-0.parquet": long_table(rows(range(2, 4))),
    }
    corpus = write_files(location(tmp_path / "by-language"), by_language)
    assert pairs_of(corpus).column_names == ["query_id", "query", "doc_id", "text"]
    assert validate_corpus(corpus, DEFAULT).n_pairs == 12

    # Partitioned by the query id itself: the files hold no query_id column.
    by_query = {
        f"query_id={q}/part-0.parquet": pa.table(
            {"query": [f"query {q}"] * 2, "doc_id": [f"d{q}-0", f"d{q}-1"], "text": ["t", "u"]}
        )
        for q in (3, 12)
    }
    corpus = write_files(location(tmp_path / "by-query"), by_query)
    summary = validate_corpus(corpus, DEFAULT)
    assert (summary.n_queries, summary.query_id_type) == (2, pa.int64())
    assert pairs_of(corpus).column("query_id").to_pylist() == [12, 12, 3, 3]


def test_row_references_name_the_file(tmp_path: Path) -> None:
    second = rows(range(3, 5))
    second[2] = (*second[2][:3], " ")
    files = {"part-0.parquet": long_table(rows(range(0, 3))), "part-1.parquet": long_table(second)}
    message = corpus_error(write_files(location(tmp_path / "corpus"), files))
    assert message.endswith(
        "column 'text': 1 row is null, empty or whitespace-only (first at part-1.parquet row 2)"
    )


def test_duplicates_and_conflicting_texts_across_files(tmp_path: Path) -> None:
    files = {
        "part-0.parquet": long_table(rows(range(0, 3))),
        "part-1.parquet": long_table([rows(range(0, 1))[0], ("q2", "another text", "d2-9", "t")]),
    }
    message = corpus_error(write_files(location(tmp_path / "corpus"), files))
    assert "columns 'query_id', 'doc_id': 1 row is a duplicate" in message
    assert "column 'query': 1 query id has more than one query text" in message


def test_a_file_with_another_schema_is_named(tmp_path: Path) -> None:
    good = long_table(rows(range(0, 2)))
    cases = {
        "missing": good.drop_columns(["text"]),
        "ids": long_table([(1, "x", 2, "t")], {"query_id": pa.int64(), "doc_id": pa.int64()}),
        "form": nested_table([("q9", "x", [("a", "t")])]),
    }
    expected = {
        "missing": "missing column 'text'",
        "ids": "column 'query_id' holds integer ids, the first file's string ids",
        "form": "it is in the nested form, the first file in the long form",
    }
    for name, table in cases.items():
        corpus = write_files(location(tmp_path / name), {"a.parquet": good, "b.parquet": table})
        message = corpus_error(corpus)
        assert message.startswith(f"{corpus.uri}/b.parquet: its schema differs from that of a.parquet")
        assert expected[name] in message


def test_string_and_large_string_files_mix(tmp_path: Path) -> None:
    large = dict.fromkeys(["query_id", "query", "doc_id", "text"], pa.large_string())
    files = {"a.parquet": long_table(rows(range(2))), "b.parquet": long_table(rows(range(2, 4)), large)}
    assert validate_corpus(write_files(location(tmp_path / "corpus"), files), DEFAULT).n_pairs == 12


def test_empty_directory_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "is a directory without Parquet files" in corpus_error(location(tmp_path / "empty"))

    no_rows = write_files(
        location(tmp_path / "no-rows"), {"a.parquet": long_table([]), "b.parquet": long_table([])}
    )
    assert corpus_error(no_rows).endswith("has no rows in any of its 2 files")

    zero_bytes = write_files(location(tmp_path / "zero"), {"a.parquet": long_table(rows(range(2)))})
    (tmp_path / "zero" / "b.parquet").touch()
    assert corpus_error(zero_bytes) == f"{zero_bytes.uri}/b.parquet is empty (0 bytes)"


def test_a_file_without_rows_among_others_is_fine(tmp_path: Path) -> None:
    files = {"a.parquet": long_table([]), "b.parquet": long_table(rows(range(2)))}
    assert validate_corpus(write_files(location(tmp_path / "corpus"), files), DEFAULT).n_pairs == 6


def test_a_dataset_on_an_fsspec_filesystem(memory_root: Location) -> None:
    files = {
        "day=1/part-0.parquet": long_table(rows(range(0, 4))),
        "day=2/part-0.parquet": long_table(list(reversed(rows(range(2, 7))))),
        "_SUCCESS": pa.table({"x": [1]}),
    }
    corpus = write_files(memory_root.join("corpus"), files)
    duplicated = corpus_error(corpus)
    assert "columns 'query_id', 'doc_id': 6 rows are duplicates" in duplicated

    # Interleaved: each query's documents apart from each other.
    files["day=2/part-0.parquet"] = long_table(sorted(rows(range(4, 7)), key=lambda row: row[2][-1]))
    corpus = write_files(memory_root.join("corpus"), files)
    summary = validate_corpus(corpus, DEFAULT)
    inputs_dir = memory_root.join("inputs")
    inputs = write_shard_inputs(corpus, DEFAULT, summary, plan_shards(summary, 5), inputs_dir)

    assert summary.n_pairs == 21 and not summary.queries_contiguous
    assert [shard.location.uri for shard in inputs] == [
        f"{inputs_dir.uri}/shard-{index:05d}.parquet" for index in range(len(inputs))
    ]
    assert [file.name for file in inputs_dir.files()] == [shard.location.name for shard in inputs]
    assert_whole_queries(inputs, pairs_of(corpus))


def test_shard_input_errors_name_the_location(memory_root: Location) -> None:
    missing = memory_root.join("shard-00000.parquet")
    with pytest.raises(CorpusError, match=f"shard input {missing.uri} cannot be read"):
        read_shard_input(missing)
