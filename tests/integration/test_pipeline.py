"""End to end: submit.py -> Redis -> workers.py (real Celery worker processes) -> Parquet + ledger."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.broker.url import connect
from core.model_spec import ModelSpec
from storage.ledger import Ledger
from storage.shards.scores import read_metadata
from testkit import corpora
from testkit.checks import assert_output_matches, reference_scores
from testkit.fleet import Fleet, local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce", seed=3)


@pytest.fixture(scope="module")
def sqlite_setup(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model: Path
) -> Iterator[dict]:
    """Two CPU workers hosting the tiny cross-encoder, with a SQLite ledger."""
    root = tmp_path_factory.mktemp("pipeline")
    prefix = new_prefix()
    env = local_worker_env(root, redis_url, prefix)
    model = f"cross-encoder:{tiny_model}"
    fleet = start_fleet(model, 2, env, redis_url, prefix, root / "workers.log")
    yield {
        "env": env,
        "root": root,
        "model": model,
        "fleet": fleet,
        "ledger_url": f"sqlite:///{root / 'data' / 'ledger.db'}",
    }
    fleet.stop()
    delete_prefixed(redis_url, prefix)


def test_20k_pairs_through_two_cpu_workers(sqlite_setup: dict, tiny_model: Path, tmp_path: Path) -> None:
    corpus = corpora.long_corpus(n_queries=1000, docs_per_query=20, seed=1, integer_ids=True)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    result = run_script(
        "submit.py",
        str(corpus_path),
        "--model",
        sqlite_setup["model"],
        "--wait",
        "--out",
        str(out),
        "--shard-pairs",
        "1000",
        "--timeout",
        "240",
        env=sqlite_setup["env"],
    )
    assert result.returncode == 0, result.stderr + sqlite_setup["fleet"].log()[-3000:]
    run_id = result.stdout.strip().splitlines()[-1]

    scores = pq.read_table(out)
    assert scores.schema.field("query_id").type == pa.int64()
    assert_output_matches(corpus, scores, reference_scores(tiny_model, corpus))
    metadata = read_metadata(corpora.location(out))
    assert metadata["run_id"] == run_id and metadata["kind"] == "cross-encoder"

    ledger = Ledger(sqlite_setup["ledger_url"])
    progress = ledger.progress(run_id)
    assert (progress.status, progress.shards_done, progress.pairs_done) == ("completed", 20, 20000)
    usage = ledger.usage_totals(run_id)
    assert usage.pairs == 20000 and usage.failed_attempts == 0 and usage.tokens > 20000
    assert usage.workers == 2 and len(usage.devices) == 1 and usage.devices[0].startswith("cpu ")
    shards = ledger.shards(run_id)
    assert sum(shard.pairs for shard in shards) == 20000
    assert all(shard.attempts == 1 and shard.worker for shard in shards)

    # Without --out the run directory is itself a dataset readers take as is.
    run_dir = Path(sqlite_setup["env"]["RERANK_DATA_DIR"]) / "runs" / run_id
    dataset = pq.read_table(run_dir)
    assert dataset.num_rows == 20000
    assert set(dataset.column_names) == {
        "query_id",
        "doc_id",
        "score",
        "rank",
        "content_hash",
        "tokens",
        "truncated",
        "model",
    }
    assert dataset["model"].unique().to_pylist() == [sqlite_setup["model"]]
    assert dataset["tokens"].null_count == dataset["truncated"].null_count == 0


def test_shards_never_split_a_query(sqlite_setup: dict, tmp_path: Path) -> None:
    corpus = corpora.long_corpus(n_queries=40, docs_per_query=7, seed=2, integer_ids=False)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet", row_group_size=50)
    result = run_script(
        "submit.py",
        str(corpus_path),
        "--model",
        sqlite_setup["model"],
        "--wait",
        "--shard-pairs",
        "30",
        "--timeout",
        "120",
        env=sqlite_setup["env"],
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    run_dir = Path(sqlite_setup["env"]["RERANK_DATA_DIR"]) / "runs" / run_id
    owners: dict[str, int] = {}
    for index, path in enumerate(sorted(run_dir.glob("shard-*.parquet"))):
        for query_id in set(pq.read_table(path).column("query_id").to_pylist()):
            assert query_id not in owners, f"query {query_id} split over shards"
            owners[query_id] = index
    assert len(owners) == 40 and len(set(owners.values())) > 5


def test_postgres_ledger_resume_after_lost_queue(
    postgres_url: str, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix, ledger_url=postgres_url)
    model = f"cross-encoder:{tiny_model}"
    corpus = corpora.nested_corpus(n_queries=60, docs_per_query=12, seed=4)
    corpus_path = corpora.write(corpus, tmp_path / "nested.parquet")
    fleet: Fleet | None = None
    try:
        submitted = run_script(
            "submit.py", str(corpus_path), "--model", model, "--shard-pairs", "100", env=env
        )
        assert submitted.returncode == 0, submitted.stderr
        assert "no worker consumes queue" in submitted.stderr
        run_id = submitted.stdout.strip()
        # The broker loses its queue before any worker took a shard.
        queue_key = f"{prefix}{ModelSpec.parse(model).queue}"
        client = connect(redis_url)
        assert client.llen(queue_key) == 8
        client.delete(queue_key)

        fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
        out = tmp_path / "scores.parquet"
        resumed = run_script(
            "submit.py", "--resume", run_id, "--wait", "--out", str(out), "--timeout", "120", env=env
        )
        assert resumed.returncode == 0, resumed.stderr + fleet.log()[-3000:]
        assert "re-enqueued 8 shard(s)" in resumed.stderr
    finally:
        if fleet is not None:
            fleet.stop()
        delete_prefixed(redis_url, prefix)

    long_form = pa.table(
        {
            "query_id": [row["query_id"] for row in corpus.to_pylist() for _ in row["candidates"]],
            "doc_id": [c["doc_id"] for row in corpus.to_pylist() for c in row["candidates"]],
            "query": [row["query"] for row in corpus.to_pylist() for _ in row["candidates"]],
            "text": [c["text"] for row in corpus.to_pylist() for c in row["candidates"]],
        }
    )
    assert_output_matches(long_form, pq.read_table(out), reference_scores(tiny_model, long_form))
    ledger = Ledger(postgres_url)
    progress = ledger.progress(run_id)
    assert (progress.status, progress.pairs_done, progress.shards_done) == ("completed", 720, 8)
    assert ledger.usage_totals(run_id).pairs == 720


def test_flag_reranker_through_the_pipeline_matches_compute_score(
    redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    from FlagEmbedding import FlagReranker

    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix)
    model = f"flag:{tiny_model}"
    corpus = corpora.long_corpus(n_queries=30, docs_per_query=10, seed=6, integer_ids=False)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        out = tmp_path / "scores.parquet"
        result = run_script(
            "submit.py",
            str(corpus_path),
            "--model",
            model,
            "--wait",
            "--out",
            str(out),
            "--shard-pairs",
            "100",
            "--timeout",
            "120",
            env=env,
        )
        assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)
    reference = FlagReranker(str(tiny_model), use_fp16=False, devices=["cpu"])
    pairs = list(zip(corpus.column("query").to_pylist(), corpus.column("text").to_pylist(), strict=True))
    expected = np.asarray(reference.compute_score(pairs, normalize=False), dtype=np.float32)
    assert_output_matches(corpus, pq.read_table(out), expected)


def test_worker_refuses_pickle_and_unknown_tasks(sqlite_setup: dict, redis_url: str, tmp_path: Path) -> None:
    from core.broker.celery_app import create_app
    from core.messages import TASK_NAME
    from core.settings import Settings

    env = sqlite_setup["env"]
    settings = Settings(broker_url=redis_url, redis_key_prefix=env["RERANK_REDIS_KEY_PREFIX"])
    sender = create_app(settings, redis_url)
    sender.conf.accept_content = ["json", "pickle"]
    queue = ModelSpec.parse(sqlite_setup["model"]).queue
    hostile = {
        "run_id": "x",
        "shard_id": 0,
        "input_path": "../../etc/passwd",
        "output_path": "o",
        "model": "m",
        "pairs": 1,
    }
    sender.send_task(TASK_NAME, args=[hostile], queue=queue, serializer="pickle")
    sender.send_task("os.system", args=["touch /tmp/pwned"], queue=queue)
    fleet: Fleet = sqlite_setup["fleet"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = fleet.log()
        if "untrusted content" in log and "unregistered task" in log:
            break
        time.sleep(0.2)
    log = fleet.log()
    assert "Refusing to deserialize untrusted content of type pickle" in log
    assert "Received unregistered task of type 'os.system'" in log
    assert connect(redis_url).llen(f"{env['RERANK_REDIS_KEY_PREFIX']}{queue}") == 0
    # the fleet still works afterwards
    corpus_path = corpora.write(corpora.long_corpus(5, 4, seed=8), tmp_path / "after.parquet")
    result = run_script(
        "submit.py", str(corpus_path), "--model", sqlite_setup["model"], "--wait", "--timeout", "60", env=env
    )
    assert result.returncode == 0, result.stderr


def test_incremental_run_reuses_unchanged_pairs_and_matches_a_full_rescore(
    sqlite_setup: dict, tmp_path: Path
) -> None:
    env, model = sqlite_setup["env"], sqlite_setup["model"]
    corpus = corpora.long_corpus(n_queries=100, docs_per_query=10, seed=21, integer_ids=False)
    night1 = corpora.write(corpus, tmp_path / "night1.parquet")
    first = run_script("submit.py", str(night1), "--model", model, "--wait", "--timeout", "120", env=env)
    assert first.returncode == 0, first.stderr
    texts = corpus.column("text").to_pylist()
    for index in range(0, len(texts), 20):  # 5% of the documents change
        texts[index] += " revised"
    night2 = corpora.write(corpus.set_column(3, "text", [texts]), tmp_path / "night2.parquet")

    inc_out, full_out = tmp_path / "incremental.parquet", tmp_path / "full.parquet"
    incremental = run_script(
        "submit.py",
        str(night2),
        "--model",
        model,
        "--reuse",
        "latest",
        "--wait",
        "--out",
        str(inc_out),
        "--timeout",
        "120",
        env=env,
    )
    assert incremental.returncode == 0, incremental.stderr
    assert f"reusing 950 scores from run {first.stdout.strip()}; 50 pairs to score" in incremental.stderr
    full = run_script("submit.py", str(night2), "--model", model, "--wait", "--out", str(full_out), env=env)
    assert full.returncode == 0, full.stderr
    # The model has been measured by the earlier runs: no shard size set, its shards are sized in time.
    assert re.search(r"shard\(s\) of up to [\d,]+ pairs \(30 device-seconds at [\d,]+ pairs/s", full.stderr)

    order = [("query_id", "ascending"), ("doc_id", "ascending")]
    left, right = pq.read_table(inc_out).sort_by(order), pq.read_table(full_out).sort_by(order)
    assert left.num_rows == right.num_rows == 1000
    # Carried-over pairs keep the provenance the first night recorded, so it equals a full re-score's.
    for column in ("query_id", "doc_id", "rank", "content_hash", "tokens", "truncated", "model"):
        assert left.column(column).equals(right.column(column)), column
    np.testing.assert_allclose(left.column("score").to_numpy(), right.column("score").to_numpy(), atol=1e-5)
    ledger = Ledger(sqlite_setup["ledger_url"])
    assert ledger.usage_totals(incremental.stdout.strip()).pairs == 50
    assert ledger.usage_totals(full.stdout.strip()).pairs == 1000


def test_reuse_latest_on_the_first_night_scores_everything(sqlite_setup: dict, tmp_path: Path) -> None:
    corpus_path = corpora.write(corpora.long_corpus(3, 2), tmp_path / "c.parquet")
    env = sqlite_setup["env"]
    unknown = run_script(
        "submit.py", str(corpus_path), "--model", sqlite_setup["model"], "--reuse", "no-such-run", env=env
    )
    assert unknown.returncode == 2 and "--reuse no-such-run: no completed run" in unknown.stderr
    first_night = run_script(
        "submit.py", str(corpus_path), "--model", "cross-encoder:never/used", "--reuse", "latest", env=env
    )
    assert first_night.returncode == 0, first_night.stderr
    assert "no earlier completed run of cross-encoder:never/used; scoring every pair" in first_night.stderr
