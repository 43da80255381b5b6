"""An API model's attempt whose lease a second attempt takes over stops at its next answered request:
it publishes nothing, and its request rows and its attempt row are each recorded once.

In-process ``run_shard`` with real API rerankers (real HTTP to fake TEI servers on loopback, the real
Redis limiter) and a SQLite ledger; tests/unit/test_shard_runner.py does the same for a local model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from core.model_spec import ModelSpec
from producer.submission import create_run
from storage.corpus import CorpusColumns, validate_corpus
from storage.ledger import Ledger, UsageOutcome
from storage.ledger.schema import Shard, Usage
from storage.ledger.types import utcnow
from storage.location import data_location
from storage.shards.scores import read_metadata
from testkit import corpora
from testkit.api_servers import FakeRerankServer, running
from tests.api_fixtures import API_KEY, api_reranker, api_settings
from worker.backends.progress_sink import listening
from worker.runtime import WorkerRuntime
from worker.shard_runner import ShardBusyError, ShardOutcome, run_shard

SPEC = ModelSpec.parse("tei:m1")


def test_an_api_attempt_whose_lease_was_taken_over_stops_at_its_next_request(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    # 16 requests of 32
    corpus = corpora.location(corpora.write(corpora.long_corpus(8, 64), tmp_path / "corpus.parquet"))
    columns = CorpusColumns()
    with (
        running(FakeRerankServer("tei", api_key=API_KEY, latency_s=0.1)) as first_server,
        running(FakeRerankServer("tei", api_key=API_KEY)) as second_server,
    ):
        common = {"data_dir": tmp_path / "data", "ledger_url": ledger_url, "api_concurrency": 1}
        first_settings = api_settings(first_server, redis_url, redis_prefix, lease_s=1.0, **common)
        second_settings = api_settings(second_server, redis_url, redis_prefix, **common)
        created = create_run(
            corpus, validate_corpus(corpus, columns), SPEC, columns, first_settings, ledger, 100_000
        )
        run = ledger.get_run(created.run_id)
        assert run is not None
        ref = created.shards[0].ref(run)

        with (
            api_reranker("tei", first_settings) as first,
            api_reranker("tei", second_settings) as second,
        ):
            second_runtime = WorkerRuntime(second_settings, second)

            def take_over() -> ShardOutcome:
                for _ in range(100):
                    with ledger.session() as session, session.begin():  # the first worker stalls
                        session.execute(
                            update(Shard)
                            .where(Shard.run_id == ref.run_id)
                            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                        )
                    try:
                        return run_shard(ref, second_runtime, "worker-2")
                    except ShardBusyError:
                        continue
                raise AssertionError("the second worker never got the shard")

            class TakeOverAtFirstAnswer:
                second: ShardOutcome | None = None

                def advance(self, pairs: int, tokens: int = 0) -> None:
                    if self.second is None:
                        with ThreadPoolExecutor(max_workers=1) as other_worker:
                            self.second = other_worker.submit(take_over).result()

            stall = TakeOverAtFirstAnswer()
            with listening(stall):
                outcome = run_shard(ref, WorkerRuntime(first_settings, first), "worker-1")

    first_requests = len(first_server.received)
    assert stall.second is not None and stall.second.status == "done"
    assert outcome.status == "superseded" and outcome.attempt == 1
    assert 0 < first_requests < 16, "the first attempt stopped long before its last request"
    output = data_location(first_settings).join(ref.output_key)
    assert str(read_metadata(output)["endpoint"]).startswith(second_server.url)

    with ledger.session() as session:
        rows = list(session.scalars(select(Usage).where(Usage.run_id == ref.run_id, Usage.attempt == 1)))
    summary = [row for row in rows if row.request_index == 0]
    requests = [row for row in rows if row.request_index > 0]
    [lost] = summary
    assert (lost.outcome, lost.worker, lost.tokens, lost.device_seconds) == (
        UsageOutcome.LEASE_LOST,
        "worker-1",
        0,
        0.0,
    )
    assert lost.pairs == outcome.pairs > 0
    # Every request the first attempt sent has its row, once, with the tokens it used.
    assert sorted(row.request_index for row in requests) == list(range(1, first_requests + 1))
    assert all(row.tokens > 0 and row.outcome == "ok" for row in requests)
    assert sum(row.pairs for row in requests) >= lost.pairs
    totals = ledger.api_usage_totals(ref.run_id)
    assert totals.requests == first_requests + len(second_server.received)
    assert ledger.usage_totals(ref.run_id).attempts == 2
