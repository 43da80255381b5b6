"""The pipeline against a real, independent rerank server: Infinity (michaelfeil/infinity) serving a tiny
cross-encoder on its OpenAI-compatible ``/v1/rerank``, checked against sentence-transformers.

Infinity is not a dependency of this project (its pins clash with ours), so this test runs only when
``RERANK_TEST_INFINITY`` names an ``infinity_emb`` executable from an environment of its own, e.g.:

    python -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install "infinity-emb[server,torch]"
    RERANK_TEST_INFINITY=/tmp/infvenv/bin/infinity_emb \
        .venv/bin/python -m pytest tests/integration/test_api_infinity.py
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from core.model_spec import ModelSpec
from testkit import corpora
from testkit.fleet import clean_env, run_script, start_workers
from testkit.services import delete_prefixed, free_port, new_prefix

INFINITY = os.environ.get("RERANK_TEST_INFINITY")
KEY = "infinity-test-key-5c1d"
pytestmark = pytest.mark.skipif(not INFINITY, reason="set RERANK_TEST_INFINITY to an infinity_emb executable")


@pytest.fixture(scope="module")
def infinity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from testkit.model_factory import build_tiny_cross_encoder

    model = build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce", seed=3)
    port = free_port()
    log = tmp_path_factory.mktemp("infinity") / "infinity.log"
    argv = [str(INFINITY), "v2", "--model-id", str(model), "--served-model-name", "tiny-ce"]
    argv += ["--engine", "torch", "--device", "cpu", "--port", str(port), "--url-prefix", "/v1"]
    argv += ["--api-key", KEY, "--host", "127.0.0.1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if (
                    httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"infinity did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, model
    finally:
        server.terminate()
        server.wait(30)


def test_a_real_rerank_server_scores_a_corpus_through_the_pipeline(
    infinity: tuple[str, Path], redis_url: str, tmp_path: Path
) -> None:
    from sentence_transformers import CrossEncoder

    url, model_path = infinity
    prefix = new_prefix()
    shared = {"data_dir": str(tmp_path / "data"), "broker_url": redis_url, "redis_key_prefix": prefix}
    worker_env = clean_env(
        **shared,
        openai_rerank_base_url=url,
        openai_rerank_api_key=KEY,
        api_max_documents="8",
        heartbeat_s="1",
    )
    corpus = corpora.long_corpus(n_queries=30, docs_per_query=12, seed=8)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    spec = ModelSpec.parse("openai-rerank:tiny-ce")
    fleet = start_workers(
        ["--model", str(spec), "--concurrency", "4"],
        spec,
        1,
        worker_env,
        redis_url,
        prefix,
        tmp_path / "w.log",
    )
    try:
        result = run_script(
            "submit.py", str(corpus_path), "--model", str(spec), "--wait", "--out", str(out),
            "--shard-pairs", "120", "--timeout", "240", env=clean_env(**shared),
        )  # fmt: skip
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)
    assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
    scores = pq.read_table(out)
    by_pair = dict(
        zip(
            zip(scores["query_id"].to_pylist(), scores["doc_id"].to_pylist(), strict=True),
            scores["score"].to_pylist(),
            strict=True,
        )
    )
    rows = corpus.to_pylist()
    assert scores.num_rows == len(by_pair) == len(rows)
    reference = CrossEncoder(str(model_path), device="cpu").predict(
        [(row["query"], row["text"]) for row in rows]
    )
    got = np.array([by_pair[(row["query_id"], row["doc_id"])] for row in rows], dtype=np.float32)
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0)
    assert KEY not in fleet.log()
