"""scripts/metrics.py serves each run as Prometheus metrics: scraped while a run waits for its workers
and again once they have scored it; the Grafana dashboard asks only for metrics it serves."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit import corpora
from testkit.fleet import REPO, local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, free_port, new_prefix

pytestmark = pytest.mark.timeout(300)
Samples = dict[str, dict[str, float]]  # metric -> run_id -> value


def _scrape(port: int) -> tuple[Samples, set[str], str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("bulk_rerank_run_"):
                key = sample.labels["run_id"] + (
                    f":{sample.labels['status']}" if "status" in sample.labels else ""
                )
                samples.setdefault(sample.name, {})[key] = sample.value
    return samples, set(samples), text


@pytest.fixture
def exporter(tmp_path: Path, redis_url: str) -> Iterator[dict]:
    prefix = new_prefix()
    port = free_port()
    env = local_worker_env(tmp_path, redis_url, prefix, metrics_port=str(port))
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "metrics.py")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert "serving run metrics at" in process.stdout.readline()
        yield {"env": env, "port": port, "prefix": prefix, "process": process}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        delete_prefixed(redis_url, prefix)


def test_a_run_is_scraped_while_it_waits_and_once_it_is_done(
    exporter: dict, tmp_path: Path, redis_url: str
) -> None:
    env, port = exporter["env"], exporter["port"]
    model_dir = build_tiny_cross_encoder(tmp_path / "tiny-ce", seed=4)
    model = f"cross-encoder:{model_dir}"
    corpus = corpora.write(
        corpora.long_corpus(n_queries=20, docs_per_query=10, seed=6), tmp_path / "corpus.parquet"
    )
    submitted = run_script("submit.py", str(corpus), "--model", model, "--shard-pairs", "50", env=env)
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]

    waiting, _, _ = _scrape(port)  # no worker yet: the run is queued
    assert waiting["bulk_rerank_run_pairs_total"][run_id] == 200
    assert waiting["bulk_rerank_run_pairs_done"][run_id] == 0
    assert waiting["bulk_rerank_run_shards_total"][run_id] == 4
    assert waiting["bulk_rerank_run_finished"][run_id] == 0
    assert math.isnan(waiting["bulk_rerank_run_eta_seconds"][run_id])
    assert waiting["bulk_rerank_run_status"][f"{run_id}:queued"] == 1

    fleet = start_fleet(model, 1, env, redis_url, exporter["prefix"], tmp_path / "workers.log")
    try:
        deadline = time.monotonic() + 120
        while (done := _scrape(port)[0])["bulk_rerank_run_finished"][run_id] != 1:
            assert time.monotonic() < deadline, fleet.log()[-3000:]
            time.sleep(0.5)
    finally:
        fleet.stop()
    assert done["bulk_rerank_run_pairs_done"][run_id] == 200
    assert (
        done["bulk_rerank_run_shards_done"][run_id] == 4
        and done["bulk_rerank_run_shards_failed"][run_id] == 0
    )
    assert done["bulk_rerank_run_pairs_per_second"][run_id] > 0
    assert done["bulk_rerank_run_eta_seconds"][run_id] == 0
    assert done["bulk_rerank_run_cost_usd"][run_id] == 0  # local CPU scoring has no price
    assert done["bulk_rerank_run_drift"][run_id] == 0
    assert 0 <= done["bulk_rerank_run_truncated_share"][run_id] <= 1
    assert done["bulk_rerank_run_status"][f"{run_id}:completed"] == 1

    _, served, text = _scrape(port)
    assert f'run_id="{run_id}"' in text and 'role="production"' in text and f'model="{model}"' in text
    dashboard = json.loads((REPO / "examples" / "grafana-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"bulk_rerank_run_\w+", target["expr"])
    }
    assert asked and asked <= served, asked - served


def test_a_taken_port_exits_3(exporter: dict) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**exporter["env"], "RERANK_METRICS_PORT": str(taken.getsockname()[1])}
        result = run_script("metrics.py", env=env, timeout=60)
    assert result.returncode == 3 and "cannot listen on 127.0.0.1:" in result.stderr
