"""``run_shard`` in-process, end to end: a shard input written by the producer, a tiny reranker, a SQLite
ledger file; and an attempt whose lease a second attempt takes over, which stops at its next batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update

from core.messages import ShardRef
from core.model_spec import ModelSpec
from core.settings import Settings
from producer.submission import create_run
from storage.corpus import CorpusColumns, validate_corpus
from storage.ledger import AttemptUsage, Granted, Ledger, UsageOutcome
from storage.ledger.schema import Run, Shard, Usage
from storage.ledger.types import utcnow
from storage.location import data_location, parse_location
from storage.shards.publication import attempt_key
from storage.shards.scores import read_metadata
from testkit import corpora
from worker.backends.base import ScoreResult
from worker.backends.progress_sink import listening, report_progress
from worker.runtime import WorkerRuntime
from worker.shard_runner import ShardBusyError, ShardOutcome, run_shard

SPEC = ModelSpec.parse("cross-encoder:word-overlap")


def word_overlap(query: str, text: str) -> float:
    words = set(query.split())
    return len(words & set(text.split())) / len(words)


class WordOverlapReranker:
    """A ``Reranker`` as small as one can be: a pair's score is the share of the query's words that the
    text contains. It scores ``batch_size`` pairs at a time and reports each batch, as local models do;
    ``seconds_per_batch`` makes each batch take that long."""

    def __init__(self, instance: str, batch_size: int, seconds_per_batch: float = 0.0) -> None:
        self.spec = SPEC
        self.instance = instance
        self.batch_size = batch_size
        self.seconds_per_batch = seconds_per_batch
        self.scored = 0
        self.tokens = 0

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        scores: list[float] = []
        tokens = 0
        busy = 0.0
        for start in range(0, len(queries), self.batch_size):
            began = time.perf_counter()
            stop = start + self.batch_size
            batch = list(zip(queries[start:stop], texts[start:stop], strict=True))
            time.sleep(self.seconds_per_batch)
            scores.extend(word_overlap(query, text) for query, text in batch)
            batch_tokens = sum(len(query.split()) + len(text.split()) for query, text in batch)
            tokens += batch_tokens
            busy += time.perf_counter() - began
            self.scored += len(batch)
            self.tokens += batch_tokens
            report_progress(len(batch), batch_tokens)
        return ScoreResult(np.array(scores, dtype=np.float32), tokens=tokens, device_seconds=busy)

    def describe(self) -> dict[str, str]:
        return {"kind": SPEC.kind, "name": SPEC.name, "device": "cpu", "instance": self.instance}


def submit(tmp_path: Path, n_queries: int, docs_per_query: int) -> tuple[Settings, Ledger, ShardRef]:
    """A one-shard run recorded in a SQLite ledger, its input written by the producer's own code."""
    settings, ledger, [ref] = submit_shards(tmp_path, n_queries, docs_per_query, shard_pairs=100_000)
    return settings, ledger, ref


def submit_shards(
    tmp_path: Path, n_queries: int, docs_per_query: int, shard_pairs: int
) -> tuple[Settings, Ledger, list[ShardRef]]:
    """A run of shards of up to ``shard_pairs`` pairs, recorded in a SQLite ledger."""
    settings = Settings(data_dir=tmp_path / "data", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(settings.resolved_ledger_url)
    ledger.create_schema()
    corpus = corpora.location(
        corpora.write(corpora.long_corpus(n_queries, docs_per_query), tmp_path / "corpus.parquet")
    )
    columns = CorpusColumns()
    summary = validate_corpus(corpus, columns)
    created = create_run(corpus, summary, SPEC, columns, settings, ledger, shard_pairs=shard_pairs)
    run = ledger.get_run(created.run_id)
    assert run is not None
    return settings, ledger, [shard.ref(run) for shard in created.shards]


def attempt_rows(ledger: Ledger, run_id: str) -> list[Usage]:
    with ledger.session() as session:
        return list(session.scalars(select(Usage).where(Usage.run_id == run_id).order_by(Usage.attempt)))


def leftovers(output_file: Path) -> list[str]:
    """Files other than the shard's output that attempts left in the run dir: temporaries, attempt files."""
    return sorted(
        str(path.relative_to(output_file.parent))
        for path in output_file.parent.rglob("*")
        if path.is_file() and path != output_file and path.parent.name != "_inputs"
    )


def test_a_shard_is_scored_published_and_recorded(tmp_path: Path) -> None:
    settings, ledger, ref = submit(tmp_path, n_queries=5, docs_per_query=12)
    reranker = WordOverlapReranker("only", batch_size=16)

    outcome = run_shard(ref, WorkerRuntime(settings, reranker), "worker-1")

    assert outcome == ShardOutcome("done", 1, ref.pairs, outcome.seconds)
    output = Path(data_location(settings).path) / ref.output_key
    scores = pq.read_table(output).to_pylist()
    corpus = pq.read_table(tmp_path / "corpus.parquet").to_pylist()
    expected = {(row["query_id"], row["doc_id"]): word_overlap(row["query"], row["text"]) for row in corpus}
    assert len(scores) == len(expected) == ref.pairs
    for row in scores:
        assert row["score"] == pytest.approx(expected[(row["query_id"], row["doc_id"])])
    for query_id in {row["query_id"] for row in scores}:
        ranked = sorted((row for row in scores if row["query_id"] == query_id), key=lambda row: row["rank"])
        assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
        assert [row["score"] for row in ranked] == sorted((row["score"] for row in ranked), reverse=True)
    assert read_metadata(parse_location(str(output))) == {
        "run_id": ref.run_id,
        "shard_id": ref.shard_id,
        **reranker.describe(),
    }
    assert leftovers(output) == []

    [shard] = ledger.shards(ref.run_id)
    assert (shard.status, shard.attempts, shard.worker) == ("done", 1, "worker-1")
    assert shard.scores_path == shard.output_path  # the chosen attempt file was copied there and removed
    assert shard.lease_expires_at is None
    run = ledger.get_run(ref.run_id)
    assert run is not None and run.status == "completed" and run.finished_at is not None
    [row] = attempt_rows(ledger, ref.run_id)
    assert (row.attempt, row.request_index, row.outcome) == (1, 0, "ok")
    assert (row.worker, row.device) == ("worker-1", "cpu")
    assert row.pairs == ref.pairs
    assert row.tokens == sum(len(r["query"].split()) + len(r["text"].split()) for r in corpus)
    assert 0 < row.device_seconds <= row.wall_seconds


def test_the_attempt_that_finishes_a_run_settles_what_a_killed_worker_left_of_another_shard(
    tmp_path: Path,
) -> None:
    settings, ledger, [first, last] = submit_shards(tmp_path, n_queries=4, docs_per_query=10, shard_pairs=20)
    runtime = WorkerRuntime(settings, WordOverlapReranker("only", batch_size=16))
    data = data_location(settings)
    # A worker published the first shard, then was killed before copying its file to the output and
    # deleting its attempt files; a stale attempt's file lies beside it too.
    leases = ledger.leases(max_attempts=3, lease_s=60)
    grant = leases.acquire(first.run_id, first.shard_id, "killed-worker")
    assert isinstance(grant, Granted)
    chosen = attempt_key(first.output_key, grant.attempt)
    table = pa.table({"query_id": ["q"], "doc_id": ["d"], "score": [0.5]})
    (Path(data.path) / chosen).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, Path(data.path) / chosen)
    (Path(data.path) / attempt_key(first.output_key, 9)).write_bytes(b"a stale attempt's file")
    usage = AttemptUsage(worker="killed-worker", model=first.model, device="cpu", pairs=first.pairs)
    assert leases.publish(first.run_id, first.shard_id, grant.attempt, usage, utcnow(), chosen)

    outcome = run_shard(last, runtime, "worker-1")

    assert outcome.status == "done"
    run = ledger.get_run(first.run_id)
    assert run is not None and run.status == "completed"
    shards = ledger.shards(first.run_id)
    assert [shard.scores_path for shard in shards] == [shard.output_path for shard in shards]
    first_output = Path(data.path) / first.output_key
    assert leftovers(first_output) == [Path(last.output_key).name]
    assert pq.read_table(first_output).equals(table)


class TakeOverAtFirstReport:
    """Listens to the first attempt's progress as the task's progress events do. At the first report
    the first worker stalls past its lease, and meanwhile a second worker takes the shard over and
    finishes it."""

    def __init__(self, take_over: Callable[[], ShardOutcome]) -> None:
        self._take_over = take_over
        self.second: ShardOutcome | None = None

    def advance(self, pairs: int, tokens: int = 0) -> None:
        if self.second is None:
            with ThreadPoolExecutor(max_workers=1) as other_worker:  # a thread of its own, no sinks
                self.second = other_worker.submit(self._take_over).result()


def test_an_attempt_whose_lease_was_taken_over_stops_at_its_next_batch_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    settings, ledger, ref = submit(tmp_path, n_queries=10, docs_per_query=40)
    # The first worker's lease lasts 1 s and is renewed every third of it; a batch takes 50 ms, so
    # scoring the whole shard would take 5 s.
    first = WordOverlapReranker("first", batch_size=4, seconds_per_batch=0.05)
    first_runtime = WorkerRuntime(settings.model_copy(update={"lease_s": 1.0}), first)
    second = WordOverlapReranker("second", batch_size=64)
    second_runtime = WorkerRuntime(settings, second)

    def take_over() -> ShardOutcome:
        for _ in range(100):
            # The lease runs out, as it does when the first worker's process stalls.
            with ledger.session() as session, session.begin():
                session.execute(
                    update(Shard)
                    .where(Shard.run_id == ref.run_id, Shard.shard_id == ref.shard_id)
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
            try:
                return run_shard(ref, second_runtime, "worker-2")
            except ShardBusyError:
                continue  # the first attempt renewed in between: let the lease run out again
        raise AssertionError("the second worker never got the shard")

    stall = TakeOverAtFirstReport(take_over)
    with listening(stall):
        outcome = run_shard(ref, first_runtime, "worker-1")

    assert stall.second == ShardOutcome("done", 2, ref.pairs, stall.second.seconds)
    # The first attempt stopped at the first batch after its keeper found the lease gone, long before
    # the end of the shard, and reports the pairs it had scored.
    assert outcome == ShardOutcome("superseded", 1, first.scored, outcome.seconds)
    assert 0 < first.scored < ref.pairs
    assert outcome.seconds < 4.0

    # What is published is the second attempt's, and the first left nothing behind.
    output = Path(data_location(settings).path) / ref.output_key
    assert read_metadata(parse_location(str(output)))["instance"] == "second"
    assert leftovers(output) == []
    [shard] = ledger.shards(ref.run_id)
    assert (shard.status, shard.attempts, shard.worker) == ("done", 2, "worker-2")
    with ledger.session() as session:
        assert session.scalar(select(Run.status).where(Run.run_id == ref.run_id)) == "completed"

    # One usage row per attempt: the first's holds what it consumed before it stopped.
    lost, done = attempt_rows(ledger, ref.run_id)
    assert (lost.attempt, lost.request_index, lost.outcome, lost.worker) == (
        1,
        0,
        UsageOutcome.LEASE_LOST,
        "worker-1",
    )
    assert lost.pairs == first.scored
    assert lost.tokens == first.tokens > 0  # the tokens of the batches it finished
    assert 0 < lost.device_seconds <= lost.wall_seconds
    assert (done.attempt, done.request_index, done.outcome, done.worker) == (2, 0, "ok", "worker-2")
    assert done.pairs == ref.pairs
    totals = ledger.usage_totals(ref.run_id)
    assert (totals.attempts, totals.failed_attempts, totals.pairs) == (2, 1, first.scored + ref.pairs)
