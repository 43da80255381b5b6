"""Graded classifiers: the local ``classifier`` kind against a direct transformers reference, and against
``vllm-classify`` through a loopback server that answers /classify as vLLM does, on the same tiny weights."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from core.errors import ModelLoadError, ModelSpecError
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.classify_server import ClassifyServer
from testkit.model_factory import build_tiny_classifier, build_tiny_cross_encoder
from tests.api_fixtures import pairs
from worker.backends import load_reranker
from worker.backends.api.reranker import ApiReranker
from worker.backends.base import Reranker

TOLERANCE = 1e-4
LABELS = 4
LONG_TEXT = " ".join(f"paragraph{index} about rivers" for index in range(300))  # past 512 word pieces


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"), seed=3, num_labels=LABELS)


@pytest.fixture(scope="module")
def server(classifier_dir: Path) -> Iterator[ClassifyServer]:
    with ClassifyServer(classifier_dir, served_model="tiny") as running:
        yield running


def local_settings(**overrides: Any) -> Settings:
    # A small budget so a call runs several batches of different widths.
    values: dict[str, Any] = {"device": "cpu", "dtype": "float32", "token_budget": 160, "max_length": None}
    return Settings(**(values | overrides))


def classify_settings(server: ClassifyServer, redis_url: str, prefix: str) -> Settings:
    return Settings(
        broker_url=redis_url,
        redis_key_prefix=prefix,
        vllm_classify_base_url=server.url,
        api_max_documents=5,  # several requests a query
        api_concurrency=2,
        api_timeout_s=30.0,
        api_backoff_max_s=0.05,
    )


def scores_of(reranker: Reranker, queries: list[str], texts: list[str]) -> np.ndarray:
    try:
        return reranker.score(queries, texts).scores
    finally:
        if isinstance(reranker, ApiReranker):
            reranker.close()


def reference(
    model_dir: Path, pair_list: list[tuple[str, str]], label: int | None, max_length: int = 512
) -> np.ndarray:
    """The score computed directly with transformers: the pairs tokenized as pairs, softmax of logits."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    encoded = tokenizer(
        [query for query, _ in pair_list],
        [text for _, text in pair_list],
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        probabilities = torch.softmax(model(**encoded).logits.double(), dim=-1).numpy()
    if label is not None:
        return probabilities[:, label]
    return probabilities @ np.arange(LABELS) / (LABELS - 1)


@pytest.mark.parametrize("label", [None, 2])
def test_local_template_scores_equal_vllm_classify_through_the_server(
    label: int | None, classifier_dir: Path, server: ClassifyServer, redis_url: str, redis_prefix: str
) -> None:
    queries, texts = pairs(n_queries=4, docs_per_query=9, seed=5)
    option = "" if label is None else f"&label={label}"
    local = load_reranker(
        ModelSpec.parse(f"classifier:{classifier_dir}?template=plain{option}"), local_settings()
    )
    api = load_reranker(
        ModelSpec.parse(f"vllm-classify:tiny?template=plain{option}"),
        classify_settings(server, redis_url, redis_prefix),
    )
    requests_before = server.requests
    local_scores = scores_of(local, queries, texts)
    api_scores = scores_of(api, queries, texts)
    assert server.requests - requests_before == 4 * 2  # 9 documents a query: 5 + 4
    assert local.batcher.max_budget == 160  # type: ignore[attr-defined]
    np.testing.assert_allclose(local_scores, api_scores, rtol=0, atol=TOLERANCE)
    assert np.ptp(local_scores) > 10 * TOLERANCE  # the pairs' scores differ: parity means something
    assert ((local_scores >= 0) & (local_scores <= 1)).all()


@pytest.mark.parametrize("label", [None, 0, 3])
def test_local_pair_scores_equal_a_direct_transformers_reference(
    label: int | None, classifier_dir: Path
) -> None:
    queries, texts = pairs(n_queries=3, docs_per_query=8, seed=6)
    queries, texts = [*queries, "what is a river", "what is a river"], [*texts, LONG_TEXT, "a river flows"]
    spec = f"classifier:{classifier_dir}" + ("" if label is None else f"?label={label}")
    result = load_reranker(ModelSpec.parse(spec), local_settings()).score(queries, texts)
    expected = reference(classifier_dir, list(zip(queries, texts, strict=True)), label)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=TOLERANCE)
    assert result.truncated is not None and result.truncated.tolist() == [False] * 24 + [True, False]
    assert np.ptp(result.scores) > 10 * TOLERANCE


def test_pair_and_template_inputs_are_different_inputs(classifier_dir: Path) -> None:
    queries, texts = ["what is a river"] * 3, ["a river flows to the sea", "bread and coffee", "blue sky"]
    pair_scores = load_reranker(ModelSpec.parse(f"classifier:{classifier_dir}"), local_settings()).score(
        queries, texts
    )
    template = "{query} [SEP] {document}"  # the pair's own text, but encoded as one sequence (no types)
    joined = load_reranker(
        ModelSpec.parse(f"classifier:{classifier_dir}?template={template}"), local_settings()
    ).score(queries, texts)
    assert not np.allclose(pair_scores.scores, joined.scores, atol=TOLERANCE)


def test_a_one_label_model_or_a_label_out_of_range_is_refused(
    classifier_dir: Path, tmp_path: Path, server: ClassifyServer, redis_url: str, redis_prefix: str
) -> None:
    one_label = build_tiny_cross_encoder(tmp_path / "one-label")
    with pytest.raises(ModelLoadError, match=r"1 output label.*use 'cross-encoder:"):
        load_reranker(ModelSpec.parse(f"classifier:{one_label}"), local_settings())
    with pytest.raises(ModelSpecError, match=r"option label=4 is out of range: .* has 4 labels \(0\.\.3\)"):
        load_reranker(ModelSpec.parse(f"classifier:{classifier_dir}?label=4"), local_settings())
    with pytest.raises(ModelSpecError, match=r"option label='-1' must be an integer >= 0"):
        load_reranker(ModelSpec.parse(f"classifier:{classifier_dir}?label=-1"), local_settings())
    with pytest.raises(ModelSpecError, match=r"template '\{query\} only' must hold exactly the fields"):
        load_reranker(
            ModelSpec.parse(f"classifier:{classifier_dir}?template={{query}} only"), local_settings()
        )
    settings = classify_settings(server, redis_url, redis_prefix)
    with pytest.raises(
        ModelSpecError, match=r"template 'fancy' must hold exactly the fields .* preset: plain"
    ):
        load_reranker(ModelSpec.parse("vllm-classify:tiny?template=fancy"), settings)


def test_a_spec_with_options_travels_through_the_pipeline(
    classifier_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """``classifier:PATH?label=1`` from submit.py to a worker process and back: the options name the
    queue, reach the worker in the message and decide its scores."""
    import pyarrow.parquet as pq

    from testkit import corpora
    from testkit.checks import assert_output_matches
    from testkit.fleet import local_worker_env, run_script, start_fleet
    from testkit.services import delete_prefixed, new_prefix

    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix)
    model = f"classifier:{classifier_dir}?label=1"
    corpus = corpora.long_corpus(n_queries=8, docs_per_query=6, seed=4)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        result = run_script(
            "submit.py",
            str(corpus_path),
            "--model",
            model,
            "--wait",
            "--out",
            str(out),
            "--shard-pairs",
            "12",
            "--timeout",
            "120",
            env=env,
        )
        assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)
    reranker = load_reranker(ModelSpec.parse(model), local_settings())
    expected = reranker.score(corpus.column("query").to_pylist(), corpus.column("text").to_pylist()).scores
    assert_output_matches(corpus, pq.read_table(out), np.asarray(expected, dtype=np.float32))
