"""The producer records a run with each shard input written once, annotated as it is written, and leaves
nothing behind when writing the inputs or recording the run fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy.exc import OperationalError

import producer.submission
from core.errors import CorpusError
from core.model_spec import ModelSpec
from core.settings import Settings
from producer.submission import create_run
from storage.corpus import CorpusColumns, validate_corpus
from storage.ledger import Ledger, RunStatus, ShardStatus
from storage.location import Location, data_location
from storage.shards.annotations import CONTENT_HASH, REUSED_SCORE
from storage.shards.content_hash import scoring_fingerprint
from storage.shards.inputs import read_shard_input
from storage.shards.reuse import PreviousScores
from testkit.corpora import location, long_corpus, write
from tests.unit.test_content_hash import per_pair_hashes

SPEC = ModelSpec.parse("cross-encoder:cross-encoder/tiny-test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


def _corpus(tmp_path: Path) -> tuple[Location, pa.Table]:
    table = long_corpus(n_queries=12, docs_per_query=5, seed=9)
    return location(write(table, tmp_path / "corpus.parquet")), table


def _leftovers(settings: Settings) -> list[str]:
    runs_dir = Path(data_location(settings).path) / producer.submission.RUNS_DIRNAME
    return sorted(path.name for path in runs_dir.iterdir()) if runs_dir.exists() else []


def test_each_shard_input_is_written_with_hashes_and_reused_scores(
    tmp_path: Path, settings: Settings, ledger: Ledger
) -> None:
    corpus, table = _corpus(tmp_path)
    summary = validate_corpus(corpus, CorpusColumns())
    fingerprint = scoring_fingerprint(str(SPEC), settings.max_length)
    hashes = per_pair_hashes(fingerprint, table.column("query").to_pylist(), table.column("text").to_pylist())
    previous = PreviousScores(hashes[:25], np.linspace(0, 1, 25, dtype=np.float32))

    created = create_run(corpus, summary, SPEC, CorpusColumns(), settings, ledger, 20, previous, "earlier")

    assert created.reused_pairs == 25 and created.n_pairs == 60
    assert _leftovers(settings) == [created.run_id]
    run = ledger.get_run(created.run_id)
    assert run is not None and run.status is RunStatus.QUEUED
    assert (run.options["reused_pairs"], run.options["fingerprint"]) == (25, fingerprint)
    reused = 0
    for shard in created.shards:
        assert shard.status is ShardStatus.QUEUED
        pairs = read_shard_input(location(Path(data_location(settings).path) / shard.input_path))
        queries, texts = pairs.column("query").to_pylist(), pairs.column("text").to_pylist()
        assert pairs.column(CONTENT_HASH).to_pylist() == per_pair_hashes(fingerprint, queries, texts).tolist()
        reused += pairs.num_rows - pairs.column(REUSED_SCORE).null_count
    assert reused == 25


def test_a_corpus_changed_while_writing_leaves_nothing(
    tmp_path: Path, settings: Settings, ledger: Ledger
) -> None:
    corpus, table = _corpus(tmp_path)
    summary = validate_corpus(corpus, CorpusColumns())
    other_ids = pc.add(table.column("query_id"), 100)
    write(table.set_column(0, "query_id", other_ids), Path(corpus.path))
    latest = ledger.latest_run_id()

    with pytest.raises(CorpusError, match="changed since it was validated"):
        create_run(corpus, summary, SPEC, CorpusColumns(), settings, ledger, 20)

    assert _leftovers(settings) == []
    assert ledger.latest_run_id() == latest


def test_a_failed_ledger_write_removes_the_written_inputs(tmp_path: Path, settings: Settings) -> None:
    corpus, _ = _corpus(tmp_path)
    summary = validate_corpus(corpus, CorpusColumns())
    without_tables = Ledger(f"sqlite:///{tmp_path / 'empty.db'}")

    with pytest.raises(OperationalError, match="no such table"):
        create_run(corpus, summary, SPEC, CorpusColumns(), settings, without_tables, 20)

    assert _leftovers(settings) == []
    without_tables.dispose()
