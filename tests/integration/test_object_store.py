"""The pipeline on object storage: data dir, corpus and merged output on an S3 endpoint on loopback (moto's
server, which speaks the S3 wire protocol), real Celery workers reading and writing it; and the errors a
user gets for bad URIs, missing buckets and refused credentials, with nothing written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.ledger import Ledger
from storage.location import S3Options, parse_location
from testkit import corpora
from testkit.checks import assert_output_matches, assert_usage_counted_once, reference_scores
from testkit.fleet import clean_env, local_worker_env, run_script, start_fleet, wait_finished
from testkit.model_factory import build_tiny_cross_encoder
from testkit.object_store import FAKE_CREDENTIALS, S3Endpoint, refusing_s3_server, s3_server
from testkit.services import delete_prefixed, new_prefix

BUCKET = "nightly"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[S3Endpoint]:
    with s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce", seed=5)


@pytest.fixture(scope="module")
def s3_fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model: Path, endpoint: S3Endpoint
) -> Iterator[dict]:
    """Two CPU workers whose data dir is s3://nightly/data; the ledger is SQLite on this machine."""
    root = tmp_path_factory.mktemp("s3-pipeline")
    prefix = new_prefix()
    # A worker killed between taking a shard's message and leasing it (it holds RERANK_SHARDS_IN_FLIGHT
    # messages) leaves that shard queued with no lease to expire: it is sent again after stranded_s.
    env = local_worker_env(
        root, redis_url, prefix, state_dir=str(root / "state"), lease_s="3", stranded_s="5"
    )
    env.update(endpoint.env(data_dir=f"s3://{BUCKET}/data"))
    model = f"cross-encoder:{tiny_model}"
    fleet = start_fleet(model, 2, env, redis_url, prefix, root / "workers.log")
    yield {"env": env, "root": root, "model": model, "fleet": fleet}
    fleet.stop()
    delete_prefixed(redis_url, prefix)


def upload(endpoint: S3Endpoint, table: pa.Table, key: str) -> None:
    pq.write_table(table, key, filesystem=endpoint.filesystem())


def test_a_run_on_s3_scores_every_pair_once_and_leaves_a_readable_dataset(
    s3_fleet: dict, tiny_model: Path, endpoint: S3Endpoint, tmp_path: Path
) -> None:
    corpus = corpora.long_corpus(n_queries=60, docs_per_query=10, seed=11)
    upload(endpoint, corpus, f"{BUCKET}/corpora/night-1.parquet")
    out = f"s3://{BUCKET}/out/night-1-scores.parquet"

    result = run_script(
        "submit.py",
        str(corpora.write(corpus, tmp_path / "night-1.parquet")),
        "--model",
        s3_fleet["model"],
        "--wait",
        "--out",
        out,
        "--shard-pairs",
        "100",
        "--timeout",
        "240",
        env=s3_fleet["env"],
    )
    assert result.returncode == 0, result.stderr + s3_fleet["fleet"].log()[-3000:]
    run_id = result.stdout.strip().splitlines()[-1]

    scores = endpoint.read_table(f"{BUCKET}/out/night-1-scores.parquet")
    assert_output_matches(corpus, scores, reference_scores(tiny_model, corpus))

    # The run dir holds the inputs, one settled score file per shard and nothing else: no attempt
    # files, no temporaries; read as a dataset it is the whole output again.
    keys = endpoint.keys(f"{BUCKET}/data/runs/{run_id}")
    run_dir = f"{BUCKET}/data/runs/{run_id}"
    shard_files = [key for key in keys if not key.startswith(f"{run_dir}/_inputs/")]
    assert shard_files == [f"{run_dir}/shard-{i:05d}.parquet" for i in range(6)], keys
    dataset = pq.read_table(run_dir, filesystem=endpoint.filesystem())
    assert dataset.num_rows == corpus.num_rows

    ledger = Ledger(f"sqlite:///{s3_fleet['root'] / 'state' / 'ledger.db'}")
    shards = ledger.shards(run_id)
    assert [shard.scores_path for shard in shards] == [shard.output_path for shard in shards]
    assert ledger.usage_totals(run_id).pairs == corpus.num_rows
    assert FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.stderr + s3_fleet["fleet"].log()


def test_a_worker_killed_mid_shard_on_s3_loses_and_duplicates_nothing(
    s3_fleet: dict, endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """SIGKILL while a shard is being scored: its lease expires, the reaper sends it again, another
    attempt publishes it; the killed attempt leaves no object behind and its shard is counted once."""
    corpus = corpora.long_corpus(n_queries=120, docs_per_query=25, seed=13)
    submitted = run_script(
        "submit.py",
        str(corpora.write(corpus, tmp_path / "night-2.parquet")),
        "--model",
        s3_fleet["model"],
        "--shard-pairs",
        "250",
        env=s3_fleet["env"],
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]
    ledger = Ledger(f"sqlite:///{s3_fleet['root'] / 'state' / 'ledger.db'}")
    fleet = s3_fleet["fleet"]

    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "never saw a shard running"
        running = [shard for shard in ledger.shards(run_id, statuses=["running"]) if shard.worker]
        if not running:
            time.sleep(0.02)
            continue
        victim = fleet.worker_process(running[0].worker)
        victim.suspend()
        [still] = [shard for shard in ledger.shards(run_id) if shard.shard_id == running[0].shard_id]
        if still.status == "running" and still.worker == running[0].worker:
            break
        victim.resume()
    # A worker holds up to RERANK_SHARDS_IN_FLIGHT shards: every attempt it is running dies with it.
    held = [
        shard for shard in ledger.shards(run_id, statuses=["running"]) if shard.worker == running[0].worker
    ]
    victim.kill()

    wait_finished(ledger, run_id, timeout_s=180)
    assert ledger.progress(run_id).status == "completed", fleet.log()[-3000:]
    [killed] = [shard for shard in ledger.shards(run_id) if shard.shard_id == running[0].shard_id]
    assert killed.attempts >= 2
    run_dir = f"{BUCKET}/data/runs/{run_id}"
    settled = {f"{run_dir}/{PurePosixPath(shard.output_path).name}" for shard in ledger.shards(run_id)}

    def others() -> list[str]:
        return [key for key in endpoint.keys(run_dir) if key not in settled and "/_inputs/" not in key]

    # The attempt that finished the run settles it right after: what the killed worker left goes then.
    deadline = time.monotonic() + 20
    while others() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert others() == [], others()  # no attempt file, no temporary
    scores = pq.read_table(run_dir, filesystem=endpoint.filesystem())
    keys = set(zip(scores.column("query_id").to_pylist(), scores.column("doc_id").to_pylist(), strict=True))
    assert scores.num_rows == len(keys) == corpus.num_rows
    assert_usage_counted_once(ledger, run_id)
    # Every attempt has its usage row but the killed ones, which died before they could write them.
    attempts = sum(shard.attempts for shard in ledger.shards(run_id))
    assert 1 <= len(held) <= 2 and ledger.usage_totals(run_id).attempts == attempts - len(held)
    assert ledger.usage_totals(run_id).pairs == corpus.num_rows


def _submit(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = run_script("submit.py", *args, "--model", "cross-encoder:some-model", env=env, timeout=120)
    return result.returncode, result.stderr


@pytest.fixture
def submit_env(tmp_path: Path, endpoint: S3Endpoint, redis_url: str, redis_prefix: str) -> dict[str, str]:
    env = clean_env(broker_url=redis_url, redis_key_prefix=redis_prefix, state_dir=str(tmp_path / "state"))
    env.update(endpoint.env(data_dir=f"s3://{BUCKET}/errors-data"))
    return env


def test_bad_locations_get_clear_errors_and_nothing_is_written(
    submit_env: dict[str, str], endpoint: S3Endpoint, tmp_path: Path
) -> None:
    corpus = corpora.write(corpora.long_corpus(3, 2), tmp_path / "corpus.parquet")

    code, stderr = _submit(submit_env, "s3:///corpus.parquet")
    assert code == 2 and "names no bucket" in stderr, stderr

    code, stderr = _submit(submit_env, "s3://no-such-bucket/corpus.parquet")
    assert code == 2 and "s3://no-such-bucket/corpus.parquet" in stderr, stderr

    missing_data = {**submit_env, "RERANK_DATA_DIR": "s3://no-such-bucket/data"}
    code, stderr = _submit(missing_data, str(corpus))
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in stderr, stderr

    code, stderr = _submit(submit_env, str(corpus), "--wait", "--out", "s3://no-such-bucket/out.parquet")
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in stderr, stderr

    code, stderr = _submit(submit_env, str(corpus), "--wait", "--out", "ftp2://somewhere/out.parquet")
    assert code == 2 and "ftp2" in stderr, stderr

    assert endpoint.keys(f"{BUCKET}/errors-data") == []
    assert (
        not (tmp_path / "state" / "ledger.db").exists()
        or not Ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}").latest_run_id()
    )


def test_refused_credentials_are_named_without_the_secret(tmp_path: Path, redis_url: str) -> None:
    corpus = corpora.write(corpora.long_corpus(3, 2), tmp_path / "corpus.parquet")
    with refusing_s3_server() as refusing:
        env = clean_env(broker_url=redis_url, state_dir=str(tmp_path / "state"))
        env.update(refusing.env(data_dir="s3://guarded/data"))
        code, stderr = _submit(env, str(corpus))
    assert code == 2 and "s3://guarded/data: access denied" in stderr, stderr
    assert FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in stderr


def test_objects_written_whole_are_read_back_in_ranges_and_replaced(
    endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the producer and workers rely on from the store (and the test endpoint serves): an object
    written through one lazily opened stream appears whole at its close, a ranged read returns that
    range, and a rewrite replaces what later reads see."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    location = parse_location(f"s3://{BUCKET}/ranges/object.bin", S3Options(endpoint.url, "us-east-1"))
    first, second = bytes(range(256)) * 4096, b"replaced" * 1000

    location.write_bytes(first)
    with location.open_input() as handle:
        assert handle.size() == len(first)
        assert handle.read_at(1000, 123_456) == first[123_456:124_456]
    location.write_bytes(second)

    assert location.read_bytes() == second
    with location.open_input() as handle:
        assert handle.read_at(8, 16) == second[16:24]
