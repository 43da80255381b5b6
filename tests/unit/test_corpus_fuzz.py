"""Hostile corpora: malformed Parquet, odd types, huge strings, invalid UTF-8, nulls everywhere. The
reader always answers with a clear CorpusError or a correct summary, never a traceback or a hang."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import CorpusError
from storage.corpus import CorpusColumns, iter_pairs, validate_corpus
from testkit.corpora import location

COLUMNS = ("query_id", "query", "doc_id", "text", "candidates", "extra")
FUZZ = settings(
    max_examples=60,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_invalid_utf8 = st.binary(min_size=1, max_size=8).map(lambda b: b"\xff\xfe" + b)


def _column(kind: str, rows: int, data: st.DataObject) -> pa.Array:
    nulls = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))

    def maybe(values: list[object]) -> list[object]:
        return [None if null else value for value, null in zip(values, nulls, strict=True)]

    if kind == "int":
        return pa.array(
            maybe(data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=rows, max_size=rows)))
        )
    if kind == "float":
        return pa.array(maybe(data.draw(st.lists(st.floats(allow_nan=True), min_size=rows, max_size=rows))))
    if kind == "bool":
        return pa.array(maybe(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))))
    if kind == "text":
        return pa.array(maybe(data.draw(st.lists(st.text(max_size=12), min_size=rows, max_size=rows))))
    if kind == "huge-text":
        return pa.array(maybe(["x" * 300_000 + str(i) for i in range(rows)]), pa.large_string())
    if kind == "binary":
        return pa.array(maybe(data.draw(st.lists(_invalid_utf8, min_size=rows, max_size=rows))), pa.binary())
    if kind == "dictionary":
        return pa.array(maybe([f"v{i % 3}" for i in range(rows)]), pa.string()).dictionary_encode()
    if kind == "timestamp":
        return pa.array(maybe(list(range(rows))), pa.timestamp("s"))
    if kind == "list-int":
        return pa.array(maybe([[i] for i in range(rows)]), pa.list_(pa.int64()))
    if kind == "candidates":
        return pa.array(
            maybe([[{"doc_id": f"d{i}", "text": data.draw(st.text(max_size=6))}] for i in range(rows)]),
            pa.list_(pa.struct([("doc_id", pa.string()), ("text", pa.string())])),
        )
    if kind == "bad-candidates":
        return pa.array(
            maybe([[{"doc_id": 1.5}] for _ in range(rows)]), pa.list_(pa.struct([("doc_id", pa.float64())]))
        )
    return pa.nulls(rows)


KINDS = [
    "int",
    "float",
    "bool",
    "text",
    "huge-text",
    "binary",
    "dictionary",
    "timestamp",
    "list-int",
    "candidates",
    "bad-candidates",
    "null",
]


def _check(path: Path) -> None:
    try:
        summary = validate_corpus(location(path), CorpusColumns())
    except CorpusError as error:
        message = str(error)
        assert message and "Traceback" not in message
        return
    pairs = sum(batch.num_rows for batch in iter_pairs(location(path), CorpusColumns()))
    assert pairs == summary.n_pairs > 0


@FUZZ
@given(data=st.data())
def test_random_schemas_and_values(tmp_path_factory, data: st.DataObject) -> None:
    rows = data.draw(st.integers(0, 6))
    names = data.draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5, unique=True))
    table = pa.table({name: _column(data.draw(st.sampled_from(KINDS)), rows, data) for name in names})
    path = tmp_path_factory.mktemp("fuzz") / "corpus.parquet"
    pq.write_table(table, path)
    _check(path)


@FUZZ
@given(data=st.data())
def test_damaged_files(tmp_path_factory, data: st.DataObject) -> None:
    buffer = io.BytesIO()
    pq.write_table(
        pa.table(
            {"query_id": [1, 1, 2], "query": ["a", "a", "b"], "doc_id": [1, 2, 1], "text": ["x", "y", "z"]}
        ),
        buffer,
    )
    good = buffer.getvalue()
    damage = data.draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if damage == "truncate":
        content = good[: data.draw(st.integers(0, len(good) - 1))]
    elif damage == "flip":
        position = data.draw(st.integers(0, len(good) - 1))
        content = good[:position] + bytes([good[position] ^ 0xFF]) + good[position + 1 :]
    else:
        content = data.draw(st.binary(max_size=200))
    path = tmp_path_factory.mktemp("damaged") / "corpus.parquet"
    path.write_bytes(content)
    _check(path)
