"""Local reranker backends against their reference libraries, on tiny models built once per module."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import ConfigError, ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.model_factory import (
    build_tiny_cross_encoder,
    build_tiny_decoder_reranker,
    build_tiny_embedding_model,
)
from worker.backends import load_reranker
from worker.backends.base import Reranker
from worker.backends.local.first_position import FirstPositionOnly
from worker.backends.local.flag import DECODER_ONLY, ENCODER_ONLY, flag_model_class
from worker.backends.local.mixed_precision import Float32Block
from worker.backends.progress_sink import listening

TOLERANCE = 1e-4
CAT = "A cat is a small domesticated carnivorous mammal."
# Several hundred word pieces: past the 512-token limit, so the text side is truncated.
LONG_TEXT = " ".join(f"paragraph{index} about mountains" for index in range(300))
PAIRS = [
    ("what is a cat", CAT),
    ("what is a cat", "The stock market fell sharply on Monday."),
    ("how tall is mount everest", "Mount Everest is 8,849 metres tall."),
    ("how tall is mount everest", LONG_TEXT),
    ("mountain " * 450, "a query longer than the model's limit"),
    ("über straße", "naïve café in 東京 🚀 — ünïcödé"),
    ("what is a cat", CAT),  # a duplicate of the first pair
    ("", "an empty query"),
    ("python", "a programming language"),
    ("python", "a large snake"),
]
QUERIES = [query for query, _ in PAIRS]
TEXTS = [text for _, text in PAIRS]
UNIQUE_PAIRS = len(set(PAIRS))


def cpu_settings(**overrides: Any) -> Settings:
    # A small budget so every score() call runs several batches of different widths.
    values: dict[str, Any] = {
        "device": "cpu",
        "dtype": "float32",
        "token_budget": 600,
        "max_length": None,
        "trust_remote_code": False,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder_reranker(tmp_path_factory.mktemp("tiny-decoder"))


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedding_model(tmp_path_factory.mktemp("tiny-embedding"))


@pytest.fixture(scope="module")
def model_dirs(cross_encoder_dir: Path, decoder_dir: Path, embedding_dir: Path) -> dict[str, Path]:
    return {
        "cross-encoder": cross_encoder_dir,
        "flag": cross_encoder_dir,
        "flag-llm": decoder_dir,
        "embedding": embedding_dir,
    }


@pytest.fixture(scope="module")
def rerankers(model_dirs: dict[str, Path]) -> dict[str, Reranker]:
    return {
        kind: load_reranker(ModelSpec.parse(f"{kind}:{path}"), cpu_settings())
        for kind, path in model_dirs.items()
    }


class CountingSink:
    """Adds up the items a reranker reports as computed."""

    def __init__(self) -> None:
        self.items = 0

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.items += pairs


def reference_cross_encoder(
    path: Path, pairs: list[tuple[str, str]], max_length: int | None = None
) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu", max_length=max_length)
    return model.predict(pairs, show_progress_bar=False)


def reference_flag(path: Path, pairs: list[tuple[str, str]], **options: Any) -> np.ndarray:
    from FlagEmbedding import FlagReranker

    return np.asarray(FlagReranker(str(path), use_fp16=False).compute_score(pairs, **options))


def reference_flag_llm(path: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    from FlagEmbedding import FlagLLMReranker

    return np.asarray(FlagLLMReranker(str(path), use_fp16=False, devices=["cpu"]).compute_score(pairs))


def reference_embedding(path: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    queries = model.encode([query for query, _ in pairs])
    texts = model.encode([text for _, text in pairs])
    cosine = (queries * texts).sum(axis=1) / np.linalg.norm(queries, axis=1) / np.linalg.norm(texts, axis=1)
    return cosine.astype(np.float32)


REFERENCES: dict[str, Callable[[Path, list[tuple[str, str]]], np.ndarray]] = {
    "cross-encoder": reference_cross_encoder,
    "flag": reference_flag,
    "flag-llm": reference_flag_llm,
    "embedding": reference_embedding,
}
KINDS = list(REFERENCES)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_match_the_reference_library(
    kind: str, rerankers: dict[str, Reranker], model_dirs: dict[str, Path]
) -> None:
    expected = REFERENCES[kind](model_dirs[kind], PAIRS)

    result = rerankers[kind].score(QUERIES, TEXTS)

    assert result.scores.dtype == np.float32
    assert result.scores.shape == (len(PAIRS),)
    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    # The tiny models are random but not degenerate: the scores differ between pairs.
    assert np.ptp(result.scores) > 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_order_is_preserved_and_duplicates_share_one_score(kind: str, rerankers: dict[str, Reranker]) -> None:
    reranker = rerankers[kind]
    computed = CountingSink()
    with listening(computed):
        forward = reranker.score(QUERIES, TEXTS)

    backward = reranker.score(QUERIES[::-1], TEXTS[::-1])

    np.testing.assert_allclose(backward.scores, forward.scores[::-1], atol=1e-6, rtol=0)
    assert forward.scores[0] == forward.scores[6]
    assert forward.device_seconds > 0
    assert forward.tokens > 0
    if kind != "embedding":
        assert computed.items == UNIQUE_PAIRS
    else:  # each distinct query and each distinct text is embedded once
        assert computed.items == len(set(QUERIES)) + len(set(TEXTS))


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_are_tokenized_ahead_in_a_thread_with_identical_scores(
    kind: str, model_dirs: dict[str, Path], rerankers: dict[str, Reranker], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ModelSpec.parse(f"{kind}:{model_dirs[kind]}")
    overlapped: Any = load_reranker(spec, cpu_settings())
    serial: Any = load_reranker(spec, cpu_settings())
    serial.overlap = False
    threads: dict[bool, list[str]] = {True: [], False: []}
    for reranker in (overlapped, serial):
        reranker.first_chunk = 2  # chunks of 2, 4, then the rest of each part
        tokenize = reranker.model.tokenize

        def recording(items: list[Any], tokenize: Any = tokenize, overlap: bool = reranker.overlap) -> Any:
            threads[overlap].append(threading.current_thread().name)
            return tokenize(items)

        monkeypatch.setattr(reranker.model, "tokenize", recording)

    ahead = overlapped.score(QUERIES, TEXTS)
    inline = serial.score(QUERIES, TEXTS)

    assert np.array_equal(ahead.scores, inline.scores)
    assert ahead.tokens == inline.tokens == rerankers[kind].score(QUERIES, TEXTS).tokens
    # Other chunks make other batches, whose padding changes the rounding only.
    np.testing.assert_allclose(ahead.scores, rerankers[kind].score(QUERIES, TEXTS).scores, atol=1e-5, rtol=0)
    # A call's first chunk on the caller's thread, while it waits for its turn; the rest ahead.
    assert len(threads[True]) >= 2 and threads[True][0] == threading.current_thread().name
    assert all(name.startswith("rerank-ahead") for name in threads[True][1:])
    assert len(threads[False]) == len(threads[True])
    assert all(name.startswith("rerank-compute") for name in threads[False])


@pytest.mark.parametrize("kind", KINDS)
def test_empty_and_mismatched_input(kind: str, rerankers: dict[str, Reranker]) -> None:
    empty = rerankers[kind].score([], [])
    assert empty.scores.shape == (0,)
    assert empty.scores.dtype == np.float32
    assert empty.tokens == 0

    with pytest.raises(ValueError, match="pair up"):
        rerankers[kind].score(["q", "r"], ["t"])


@pytest.mark.parametrize("kind", KINDS)
def test_describe_names_the_model_and_settings(
    kind: str, rerankers: dict[str, Reranker], model_dirs: dict[str, Path]
) -> None:
    description = rerankers[kind].describe()

    assert description["kind"] == kind
    assert description["name"] == str(model_dirs[kind])
    assert description["device"] == "cpu"
    assert description["dtype"] == "float32"
    assert description["token_budget"] == "600"
    assert {"max_length", "activation"} <= description.keys()
    assert all(isinstance(value, str) for value in description.values())


def test_cross_encoder_counts_the_tokens_it_feeds_after_truncation(rerankers: dict[str, Reranker]) -> None:
    reranker: Any = rerankers["cross-encoder"]
    features = reranker.model.cross_encoder.preprocess(list(dict.fromkeys(PAIRS)))

    result = reranker.score(QUERIES, TEXTS)

    assert result.tokens == int(features["attention_mask"].sum())
    assert reranker.describe()["max_length"] == "512"
    assert reranker.describe()["activation"] == "torch.nn.modules.activation.Sigmoid"


@pytest.mark.parametrize("max_length", [None, 32])
def test_cross_encoder_reports_each_pairs_tokens_and_truncation(
    cross_encoder_dir: Path, max_length: int | None
) -> None:
    from transformers import AutoTokenizer

    reranker = load_reranker(
        ModelSpec.parse(f"cross-encoder:{cross_encoder_dir}"), cpu_settings(max_length=max_length)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    limit = max_length or 512
    truncated_ids = tokenizer(QUERIES, TEXTS, truncation="longest_first", max_length=limit)["input_ids"]
    whole_ids = tokenizer(QUERIES, TEXTS, truncation=False)["input_ids"]

    result = reranker.score(QUERIES, TEXTS)

    assert result.pair_tokens is not None and result.truncated is not None
    assert result.pair_tokens.tolist() == [len(ids) for ids in truncated_ids]
    assert result.truncated.tolist() == [len(ids) > limit for ids in whole_ids]
    assert result.truncated.any() and not result.truncated.all()


def test_embedding_reports_a_pairs_tokens_as_its_query_and_text_together(embedding_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reranker = load_reranker(ModelSpec.parse(f"embedding:{embedding_dir}"), cpu_settings())
    model = SentenceTransformer(str(embedding_dir), device="cpu")
    tokenizer, limit = model.tokenizer, model.max_seq_length

    def tokens(strings: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(strings, truncation=True, max_length=limit)["input_ids"]]

    def cut(strings: list[str]) -> list[bool]:
        return [len(ids) > limit for ids in tokenizer(strings, truncation=False)["input_ids"]]

    result = reranker.score(QUERIES, TEXTS)

    assert result.pair_tokens is not None and result.truncated is not None
    expected = [q + t for q, t in zip(tokens(QUERIES), tokens(TEXTS), strict=True)]
    assert result.pair_tokens.tolist() == expected
    assert result.truncated.tolist() == [q or t for q, t in zip(cut(QUERIES), cut(TEXTS), strict=True)]


def test_cross_encoder_honours_max_length(cross_encoder_dir: Path) -> None:
    reranker = load_reranker(
        ModelSpec.parse(f"cross-encoder:{cross_encoder_dir}"), cpu_settings(max_length=32)
    )

    result = reranker.score(QUERIES, TEXTS)

    expected = reference_cross_encoder(cross_encoder_dir, PAIRS, max_length=32)
    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert result.tokens <= 32 * UNIQUE_PAIRS


def test_flag_honours_max_length(cross_encoder_dir: Path) -> None:
    reranker = load_reranker(ModelSpec.parse(f"flag:{cross_encoder_dir}"), cpu_settings(max_length=32))

    result = reranker.score(QUERIES, TEXTS)

    expected = reference_flag(cross_encoder_dir, PAIRS, max_length=32)
    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert result.tokens <= 32 * UNIQUE_PAIRS
    assert reranker.describe()["max_length"] == "32"


def test_max_length_beyond_the_model_positions_is_a_config_error(cross_encoder_dir: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds the 512 positions"):
        load_reranker(ModelSpec.parse(f"cross-encoder:{cross_encoder_dir}"), cpu_settings(max_length=1024))


def test_bfloat16_on_cpu_runs_matmuls_in_bfloat16_and_stays_close(
    cross_encoder_dir: Path, rerankers: dict[str, Reranker]
) -> None:
    reranker: Any = load_reranker(
        ModelSpec.parse(f"cross-encoder:{cross_encoder_dir}"), cpu_settings(dtype="bfloat16")
    )

    result = reranker.score(QUERIES, TEXTS)

    hf_model = reranker.path.model
    assert hf_model.bert.encoder.layer[0].intermediate.dense.weight.dtype == torch.bfloat16
    # Mixed precision: embeddings, norms and the score head stay float32.
    assert hf_model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert hf_model.classifier.inner.weight.dtype == torch.float32
    assert reranker.describe()["dtype"] == "bfloat16"
    assert result.scores.dtype == np.float32
    np.testing.assert_allclose(
        result.scores, rerankers["cross-encoder"].score(QUERIES, TEXTS).scores, atol=0.05
    )


def test_flag_in_bfloat16_keeps_a_float32_residual_stream_and_score_head(
    cross_encoder_dir: Path, rerankers: dict[str, Reranker]
) -> None:
    reranker: Any = load_reranker(
        ModelSpec.parse(f"flag:{cross_encoder_dir}"), cpu_settings(dtype="bfloat16")
    )

    result = reranker.score(QUERIES, TEXTS)

    hf_model = reranker.model.flag_model.model
    assert hf_model.bert.encoder.layer[0].intermediate.dense.weight.dtype == torch.bfloat16
    assert hf_model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert hf_model.classifier.inner.weight.dtype == torch.float32
    # As the cross-encoder's: the last layer at position 0 only, that tail and the pooler in float32.
    last = hf_model.bert.encoder.layer[-1]
    assert isinstance(last.attention.output, FirstPositionOnly)
    assert isinstance(last.attention.output.inner, Float32Block)
    assert last.output.inner.dense.weight.dtype == torch.float32
    assert hf_model.bert.pooler.inner.dense.weight.dtype == torch.float32
    assert reranker.describe()["precision"].startswith("mixed")
    # Raw logits with float32's digits: no two distinct pairs tie, and they stay close to float32's.
    assert len(set(result.scores.tolist())) == len(set(zip(QUERIES, TEXTS, strict=True)))
    float32 = rerankers["flag"].score(QUERIES, TEXTS).scores
    np.testing.assert_allclose(sigmoid(result.scores), sigmoid(float32), atol=0.05)  # as the cross-encoder's


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def fail_on_batches_wider_than(
    module: torch.nn.Module, rows: int, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Make ``module`` raise CUDA out-of-memory on batches of more than ``rows`` rows; record batch sizes."""
    original = module.forward
    seen: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        features = args[0] if args else kwargs
        batch_rows = int(features["input_ids"].shape[0])
        seen.append(batch_rows)
        if batch_rows > rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)
    return seen


@pytest.mark.parametrize("kind", ["cross-encoder", "flag"])
def test_out_of_memory_in_the_model_shrinks_batches_without_losing_pairs(
    kind: str, cross_encoder_dir: Path, rerankers: dict[str, Reranker], monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker: Any = load_reranker(
        ModelSpec.parse(f"{kind}:{cross_encoder_dir}"), cpu_settings(token_budget=8192)
    )
    module = reranker.path.model if kind == "cross-encoder" else reranker.model.flag_model.model
    seen = fail_on_batches_wider_than(module, 2, monkeypatch)

    result = reranker.score(QUERIES, TEXTS)

    np.testing.assert_allclose(result.scores, rerankers[kind].score(QUERIES, TEXTS).scores, atol=1e-5, rtol=0)
    assert reranker.batcher.oom_count >= 1
    assert max(seen) > 2
    assert reranker.batcher.budget < 8192
    assert [change.reason for change in reranker.batcher.history][:2] == ["start", "oom"]


def test_real_minilm_ranks_relevant_documents_first() -> None:
    spec = ModelSpec.parse("all-MiniLM-L6-v2")
    assert spec.kind == "embedding"
    reranker = load_reranker(spec, cpu_settings(token_budget=8192))
    queries = ["how many people live in berlin"] * 2 + ["what do cats eat"] * 2
    texts = [
        "Berlin has a population of about 3.7 million inhabitants.",
        "The Great Barrier Reef is the largest coral reef system in the world.",
        "Cats are obligate carnivores and need meat such as fish or chicken in their diet.",
        "The Eiffel Tower was completed in 1889 for the World's Fair.",
    ]

    scores = reranker.score(queries, texts).scores

    assert scores[0] > scores[1] + 0.2
    assert scores[2] > scores[3] + 0.2
    assert np.all(scores <= 1.0 + 1e-6)
    assert reranker.describe()["max_length"] == "256"


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("flag", "BAAI/bge-reranker-v2-m3", ENCODER_ONLY),
        ("flag", "BAAI/bge-reranker-v2-gemma", DECODER_ONLY),
        ("flag", "/models/bge-reranker-large/checkpoint-500", ENCODER_ONLY),
        ("flag", "/models/my-own-reranker", ENCODER_ONLY),
        ("flag", "BAAI/bge-reranker-v2-minicpm-layerwise", "decoder-only-layerwise"),
        ("flag-llm", "/models/my-llm-reranker", DECODER_ONLY),
    ],
)
def test_flag_model_class_follows_flagembedding_names_then_kind(kind: str, name: str, expected: str) -> None:
    assert flag_model_class(ModelSpec(kind=kind, name=name)) == expected  # type: ignore[arg-type]


def test_unsupported_flag_class_is_refused_before_loading() -> None:
    spec = ModelSpec(kind="flag", name="BAAI/bge-reranker-v2-minicpm-layerwise")
    with pytest.raises(ModelLoadError, match="decoder-only-layerwise"):
        load_reranker(spec, cpu_settings())


@pytest.mark.parametrize("kind", ["cross-encoder", "flag", "embedding"])
def test_a_missing_model_names_the_model_and_the_reason(kind: str, tmp_path: Path) -> None:
    empty_dir = tmp_path / "not-a-model"
    empty_dir.mkdir()
    spec = ModelSpec.parse(f"{kind}:{empty_dir}")

    with pytest.raises(ModelLoadError, match="not-a-model") as caught:
        load_reranker(spec, cpu_settings())
    assert caught.value.__cause__ is not None


def test_a_cross_encoder_with_several_labels_is_refused(tmp_path: Path) -> None:
    path = build_tiny_cross_encoder(tmp_path / "two-labels", num_labels=2)
    with pytest.raises(ModelLoadError, match="2 output labels"):
        load_reranker(ModelSpec.parse(f"cross-encoder:{path}"), cpu_settings())
