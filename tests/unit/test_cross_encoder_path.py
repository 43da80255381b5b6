"""The cross-encoder's own scoring path: bulk tokenization and numpy padding, chunks tokenized ahead in
a thread, mixed precision, and the library fallback, each checked against sentence-transformers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.agreement import agreement
from benchmarks.corpus import synthetic_corpus, whole_words
from core.errors import ConfigError
from core.model_spec import ModelSpec
from testkit.model_factory import bert_tokenizer, build_tiny_cross_encoder, build_tiny_xlmr_cross_encoder
from testkit.model_factory import load_cross_encoder_on_cpu as load
from worker.backends.local.calibration import Mode
from worker.backends.local.cross_encoder import CrossEncoderModel, CrossEncoderReranker
from worker.backends.local.cross_encoder_paths import DirectPath, LibraryPath, direct_model
from worker.backends.local.device import ComputeTarget
from worker.backends.local.first_position import FirstPositionOnly, score_from_first_position_only
from worker.backends.local.pair_tokens import PairTokenizer, pad_rows

LONG_TEXT = " ".join(f"paragraph{index} about mountains" for index in range(300))
PAIRS = [
    ("what is a cat", "A cat is a small domesticated carnivorous mammal."),
    ("how tall is mount everest", LONG_TEXT),
    ("mountain " * 450, "a query longer than the model's limit"),
    ("über straße", "naïve café in 東京 🚀 — ünïcödé"),
    ("", "an empty query"),
    ("python", "a large snake"),
    ("what is a cat", "The stock market fell sharply on Monday."),
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cross-encoders")
    return {
        "bert": build_tiny_cross_encoder(root / "bert"),
        "xlmr": build_tiny_xlmr_cross_encoder(root / "xlmr"),
    }


@pytest.fixture(scope="module")
def corpus() -> Any:
    return synthetic_corpus(whole_words(bert_tokenizer()), n_queries=6, docs_per_query=15, seed=5)


def cross_encoder(path: Path, **options: Any) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", **options)


@pytest.mark.parametrize("family", ["bert", "xlmr"])
@pytest.mark.parametrize("max_length", [None, 32])
def test_bulk_tokens_padded_with_numpy_equal_the_library_preprocessing(
    family: str, max_length: int | None, model_dirs: dict[str, Path]
) -> None:
    model = cross_encoder(model_dirs[family], max_length=max_length)
    tokenizer = PairTokenizer(model.tokenizer, model.max_seq_length)
    rows = np.array([3, 0, 6, 1, 5])

    padded = pad_rows(tokenizer(PAIRS), rows, tokenizer.padding)

    expected = model.preprocess([PAIRS[row] for row in rows])
    names = {"input_ids", "attention_mask"} | ({"token_type_ids"} if family == "bert" else set())
    assert set(padded) == names
    for name in names:
        assert np.array_equal(padded[name], expected[name].numpy()), name


def test_left_padding_follows_the_tokenizer(model_dirs: dict[str, Path]) -> None:
    tokenizer = cross_encoder(model_dirs["bert"]).tokenizer
    tokenizer.padding_side = "left"
    pairs = PAIRS[:2] + PAIRS[3:6]
    pair_tokenizer = PairTokenizer(tokenizer, 64)

    padded = pad_rows(pair_tokenizer(pairs), np.arange(len(pairs)), pair_tokenizer.padding)

    expected = tokenizer(
        [query for query, _ in pairs],
        [text for _, text in pairs],
        truncation="longest_first",
        max_length=64,
        padding=True,
        return_tensors="np",
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(padded[name], expected[name]), name


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_direct_path_matches_cross_encoder_predict(
    family: str, model_dirs: dict[str, Path], corpus: Any
) -> None:
    reranker = load(model_dirs[family])

    scores = reranker.score(corpus.queries, corpus.texts).scores

    assert isinstance(reranker.path, DirectPath)
    expected = cross_encoder(model_dirs[family]).predict(corpus.pairs, show_progress_bar=False)
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


def test_chunks_tokenized_ahead_in_a_thread_give_identical_scores(
    model_dirs: dict[str, Path], corpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlapped, serial = load(model_dirs["bert"]), load(model_dirs["bert"])
    serial.overlap = False
    for reranker in (overlapped, serial):
        reranker.first_chunk = 7  # chunks of 7, 14, 28, then the rest: 4 chunks for 90 pairs
    threads: list[str] = []
    for reranker in (overlapped, serial):
        tokenize = reranker.path.tokenize

        def recording(pairs: list[tuple[str, str]], tokenize: Any = tokenize) -> Any:
            threads.append(threading.current_thread().name)
            return tokenize(pairs)

        monkeypatch.setattr(reranker.path, "tokenize", recording)

    ahead = overlapped.score(corpus.queries, corpus.texts)
    overlapped_threads, threads[:] = list(threads), []
    inline = serial.score(corpus.queries, corpus.texts)

    assert np.array_equal(ahead.scores, inline.scores)
    assert ahead.tokens == inline.tokens
    # The first chunk on the caller's thread, before the call's turn on the compute thread.
    assert overlapped_threads[0] == threading.current_thread().name
    assert len(overlapped_threads) == 4 and all(
        name.startswith("rerank-ahead") for name in overlapped_threads[1:]
    )
    # Without overlap each chunk is tokenized where the model runs: the process's compute thread.
    assert len(threads) == 4 and all(name.startswith("rerank-compute") for name in threads)
    one_chunk = load(model_dirs["bert"]).score(corpus.queries, corpus.texts)
    # Other chunks make other float32 batches: within float32's batch-composition noise (~1e-6).
    np.testing.assert_allclose(ahead.scores, one_chunk.scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_bfloat16_mixed_precision_agrees_with_float32(
    family: str, model_dirs: dict[str, Path], corpus: Any
) -> None:
    reference = load(model_dirs[family]).score(corpus.queries, corpus.texts).scores
    reranker = load(model_dirs[family], dtype="bfloat16")

    scores = reranker.score(corpus.queries, corpus.texts).scores

    linear_dtypes = {
        module.weight.dtype for module in reranker.path.model.modules() if isinstance(module, torch.nn.Linear)
    }
    assert linear_dtypes == {torch.bfloat16, torch.float32}  # the score head alone stays float32
    found = agreement(reference, scores, corpus.query_slices())
    # The tiny models are deliberately chaotic (wide initializer), so bf16 noise is larger than in a
    # trained model; scripts/bench.py measures agreement on a trained MiniLM body.
    assert found.spearman_mean >= 0.99
    assert found.max_abs_diff <= 0.05


def test_cross_encoders_with_a_prompt_take_the_library_path(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = cross_encoder(
        model_dirs["bert"], prompts={"rerank": "rerank this: "}, default_prompt_name="rerank"
    )
    target = ComputeTarget(torch.device("cpu"), torch.float32, token_budget=600)

    spec = ModelSpec.parse(f"cross-encoder:{model_dirs['bert']}")
    reranker = CrossEncoderReranker(spec, CrossEncoderModel(model, target), target)
    reranker.first_chunk = 2  # chunks of 2 and 5 pairs: the second is tokenized while the first runs
    threads: list[str] = []
    tokenize = reranker.path.tokenize

    def recording(pairs: list[tuple[str, str]]) -> Any:
        threads.append(threading.current_thread().name)
        return tokenize(pairs)

    monkeypatch.setattr(reranker.path, "tokenize", recording)
    scores = reranker.score([query for query, _ in PAIRS], [text for _, text in PAIRS]).scores

    assert direct_model(model) is None
    assert isinstance(reranker.path, LibraryPath)
    np.testing.assert_allclose(scores, model.predict(PAIRS, show_progress_bar=False), atol=1e-4, rtol=0)
    without_prompt = cross_encoder(model_dirs["bert"]).predict(PAIRS, show_progress_bar=False)
    assert np.abs(scores - without_prompt).max() > 1e-3
    # Its chunks are tokenized off the compute thread too (the first on the caller's), while the
    # library's preprocessing runs on the compute thread.
    assert threads == [threading.current_thread().name, "rerank-ahead_0"]
    # The library's own pipeline is not compiled: auto leaves it be, on refuses.
    assert not reranker.use_mode(Mode(True), required=False)
    assert not reranker.compiled
    with pytest.raises(ConfigError, match=r"RERANK_COMPILE=on.*own pipeline"):
        reranker.use_mode(Mode(True), required=True)


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_the_last_layer_computes_only_the_position_the_head_reads(
    family: str, model_dirs: dict[str, Path]
) -> None:
    from transformers import AutoModelForSequenceClassification

    full = AutoModelForSequenceClassification.from_pretrained(str(model_dirs[family])).eval()
    cut = AutoModelForSequenceClassification.from_pretrained(str(model_dirs[family])).eval()
    features = cross_encoder(model_dirs[family]).preprocess(PAIRS)
    inputs = {
        name: features[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in features
    }

    assert score_from_first_position_only(cut)
    assert not score_from_first_position_only(cut)  # once is enough
    with torch.inference_mode():
        expected, got = full(**inputs).logits, cut(**inputs).logits
        last_hidden = cut.base_model(**inputs).last_hidden_state

    assert last_hidden.shape[1] == 1
    # Only rounding may differ: the cut layer multiplies matrices of another shape.
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert isinstance(
        load(model_dirs[family]).path.model.base_model.encoder.layer[-1].attention.output, FirstPositionOnly
    )


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_in_bfloat16_the_tail_after_the_cut_runs_in_float32(family: str, model_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForSequenceClassification

    mixed = load(model_dirs[family], dtype="bfloat16").path.model
    reference = AutoModelForSequenceClassification.from_pretrained(str(model_dirs[family])).eval()
    last, reference_last = mixed.base_model.encoder.layer[-1], reference.base_model.encoder.layer[-1]
    width = reference.config.hidden_size
    context, residual = torch.randn(3, 1, width), torch.randn(3, 1, width)

    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            attended = last.attention.output(context.bfloat16(), residual)
            got = last.output(last.intermediate(attended), attended)
            head = mixed.classifier(got) if family == "xlmr" else mixed.base_model.pooler(got)
        expected_attended = reference_last.attention.output(context.bfloat16().float(), residual)
        expected = reference_last.output(reference_last.intermediate(expected_attended), expected_attended)
        if family == "xlmr":
            expected_head = reference.classifier(expected)
        else:
            expected_head = reference.base_model.pooler(expected)

    # Inside the autocast region of the bf16 forward pass the tail computes exactly what float32 does.
    assert got.dtype == head.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    torch.testing.assert_close(head, expected_head, atol=0, rtol=0)


def test_heads_that_read_more_than_the_first_position_are_left_alone(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from testkit.model_factory import build_tiny_decoder_reranker

    decoder = AutoModelForCausalLM.from_pretrained(str(build_tiny_decoder_reranker(tmp_path / "llama")))

    assert not score_from_first_position_only(decoder)
