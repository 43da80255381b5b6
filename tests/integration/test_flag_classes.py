"""The four FlagEmbedding reranker classes through the worker's loader against FlagEmbedding's own
``compute_score``, on tiny models built from the model code FlagEmbedding ships."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import ModelLoadError, ModelSpecError
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.model_factory import (
    build_tiny_cross_encoder,
    build_tiny_decoder_reranker,
    build_tiny_layerwise_reranker,
    build_tiny_lightweight_reranker,
)
from worker.backends import load_reranker
from worker.backends.local.flag import DECODER_ONLY, ENCODER_ONLY, LAYERWISE, LIGHTWEIGHT

TOLERANCE = 1e-4
# FlagEmbedding 1.4.2's lightweight model (CostWiseGemma) calls transformers 4's Gemma2 layers, which
# transformers 5 changed: neither FlagEmbedding nor the worker can run it there.
LIGHTWEIGHT_RUNS = int(version("transformers").split(".")[0]) < 5

WORDS = [
    "mountain",
    "river",
    "cat",
    "snake",
    "python",
    "market",
    "tall",
    "small",
    "answer",
    "query",
    "passage",
]
# Varied lengths: empty and one-word sides, unicode, and passages past FlagEmbedding's 512-token limit.
PAIRS = [
    (
        " ".join(WORDS[(i * 3) % len(WORDS) : (i * 3) % len(WORDS) + 1 + i % 4]),
        " ".join(WORDS[: 1 + (i * 7) % 11] * (1 + i)),
    )
    for i in range(30)
] + [
    ("", "an empty query"),
    ("an empty passage", ""),
    ("über straße", "naïve café in 東京 🚀 — ünïcödé"),
    ("how tall is mount everest", "Mount Everest is 8,849 metres tall. " * 40),
    ("mountain " * 200, "a query longer than the query limit"),
]


def settings() -> Settings:
    # A budget of a few long pairs, so one call runs many batches of different widths.
    return Settings(
        device="cpu", dtype="float32", token_budget=1500, max_length=None, trust_remote_code=False
    )


@dataclass(frozen=True)
class FlagCase:
    kind: str
    model_class: str
    build: Callable[[Path], Path]
    spec_options: str = ""
    reference_options: dict[str, Any] = field(default_factory=dict)


CASES = {
    "encoder-only": FlagCase("flag", ENCODER_ONLY, build_tiny_cross_encoder),
    "decoder-only": FlagCase("flag-llm", DECODER_ONLY, build_tiny_decoder_reranker),
    "layerwise-last-layer": FlagCase("flag-layerwise", LAYERWISE, build_tiny_layerwise_reranker),
    "layerwise-cutoff-2": FlagCase(
        "flag-layerwise", LAYERWISE, build_tiny_layerwise_reranker, "?cutoff_layers=2", {"cutoff_layers": [2]}
    ),
    "lightweight-compressed": FlagCase(
        "flag-lightweight",
        LIGHTWEIGHT,
        build_tiny_lightweight_reranker,
        "?cutoff_layers=2&compress_ratio=2&compress_layers=1",
        {"cutoff_layers": [2], "compress_ratio": 2, "compress_layers": [1]},
    ),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Callable[[Path], Path], Path]:
    builders = {case.build for case in CASES.values()}
    return {build: build(tmp_path_factory.mktemp(build.__name__)) for build in builders}


def flag_reference(path: Path, model_class: str, pairs: list[tuple[str, str]], **options: Any) -> np.ndarray:
    """FlagEmbedding's ``compute_score`` for ``pairs``, the model loaded by ``FlagAutoReranker``."""
    from FlagEmbedding import FlagAutoReranker

    reranker = FlagAutoReranker.from_finetuned(
        str(path), model_class=model_class, use_fp16=False, devices=["cpu"], trust_remote_code=False
    )
    if model_class == LAYERWISE:
        # transformers 5 loads FlagEmbedding's MiniCPM model without running the code that fills its
        # non-persistent rotary tables (the worker recomputes them); the reference gets the loaded weights
        # in a model built from its config, whose __init__ fills them.
        loaded = reranker.model
        reranker.model = type(loaded)(loaded.config).eval()
        reranker.model.load_state_dict(loaded.state_dict())
    return np.asarray(reranker.compute_score(pairs, **options), dtype=np.float64)


@pytest.mark.parametrize("name", CASES)
def test_scores_match_flagembedding_compute_score(
    name: str, model_dirs: dict[Callable[[Path], Path], Path]
) -> None:
    case = CASES[name]
    path = model_dirs[case.build]
    spec = ModelSpec.parse(f"{case.kind}:{path}{case.spec_options}")
    if case.model_class == LIGHTWEIGHT and not LIGHTWEIGHT_RUNS:
        # FlagEmbedding itself cannot score it, and the worker says so when it loads, not on a shard.
        with pytest.raises(TypeError):
            flag_reference(path, case.model_class, PAIRS, **case.reference_options)
        with pytest.raises(ModelLoadError, match=r"decoder-only-lightweight.*transformers 5"):
            load_reranker(spec, settings())
        return
    expected = flag_reference(path, case.model_class, PAIRS, **case.reference_options)
    reranker: Any = load_reranker(spec, settings())
    batches = 0
    run = reranker.batcher.run

    def counting(lengths: np.ndarray, forward: Any) -> np.ndarray:
        def counted(rows: np.ndarray) -> np.ndarray:
            nonlocal batches
            batches += 1
            return forward(rows)

        return run(lengths, counted)

    reranker.batcher.run = counting

    result = reranker.score([query for query, _ in PAIRS], [text for _, text in PAIRS])

    assert reranker.describe()["flag_model_class"] == case.model_class
    assert expected.shape == (len(PAIRS),)
    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert np.ptp(result.scores) > 0.05  # random but not degenerate: pairs score apart
    assert batches > 3  # the small budget cuts the call into several batches


def test_the_cutoff_layer_decides_the_score(model_dirs: dict[Callable[[Path], Path], Path]) -> None:
    path = model_dirs[build_tiny_layerwise_reranker]
    queries, texts = [query for query, _ in PAIRS[:8]], [text for _, text in PAIRS[:8]]
    scores = {
        layer: load_reranker(ModelSpec.parse(f"flag-layerwise:{path}?cutoff_layers={layer}"), settings())
        .score(queries, texts)
        .scores
        for layer in (1, 3)
    }
    default = load_reranker(ModelSpec.parse(f"flag-layerwise:{path}"), settings())

    assert np.abs(scores[1] - scores[3]).max() > 0.05
    # By default, the last layer.
    np.testing.assert_array_equal(default.score(queries, texts).scores, scores[3])
    assert default.describe()["cutoff_layer"] == "3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("cutoff_layers=abc", r"cutoff_layers='abc' must be an integer >= 1"),
        ("cutoff_layers=0", r"cutoff_layers='0' must be an integer >= 1"),
        ("cutoff_layers=2+3", r"cutoff_layers='2\+3' names several layers"),
        ("cutoff_layers=9", r"cutoff_layers=9 is not a scoring layer .* layers 1 to 3"),
    ],
)
def test_a_bad_layerwise_option_names_the_option(
    options: str, message: str, model_dirs: dict[Callable[[Path], Path], Path]
) -> None:
    spec = ModelSpec.parse(f"flag-layerwise:{model_dirs[build_tiny_layerwise_reranker]}?{options}")
    with pytest.raises(ModelSpecError, match=message):
        load_reranker(spec, settings())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("compress_ratio=3", r"compress_ratio='3' must be one of 1, 2, 4, 8"),
        ("compress_layers=1+x", r"compress_layers='1\+x' must be layer numbers >= 1 joined by '\+'"),
        ("compress_layers=1+3", r"compress_layers names layer\(s\) \[3\].* layers 1 to 2"),
        ("cutoff_layers=4", r"cutoff_layers=4 is not a scoring layer .* layers 1 to 3"),
    ],
)
def test_a_bad_lightweight_option_names_the_option(
    options: str, message: str, model_dirs: dict[Callable[[Path], Path], Path]
) -> None:
    spec = ModelSpec.parse(f"flag-lightweight:{model_dirs[build_tiny_lightweight_reranker]}?{options}")
    with pytest.raises(ModelSpecError, match=message):
        load_reranker(spec, settings())


def test_an_option_of_another_kind_is_refused_by_the_spec() -> None:
    with pytest.raises(ModelSpecError, match="no option 'compress_ratio'"):
        ModelSpec.parse("flag-layerwise:/models/bge-reranker-v2-minicpm-layerwise?compress_ratio=2")


def test_kind_flag_points_a_layerwise_model_to_its_kind() -> None:
    spec = ModelSpec(kind="flag", name="BAAI/bge-reranker-v2-minicpm-layerwise")
    with pytest.raises(ModelLoadError, match="load it as kind 'flag-layerwise'"):
        load_reranker(spec, settings())
