"""Cross-encoders compiled by TorchInductor (RERANK_COMPILE) against the same model run eagerly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from testkit.fleet import REPO, clean_env
from testkit.model_factory import build_tiny_cross_encoder
from testkit.model_factory import load_cross_encoder_on_cpu as load
from worker.backends.local import calibration
from worker.backends.local.calibration import Mode
from worker.backends.local.compiled import generated_gemm_share
from worker.backends.local.device import cpu_has_amx, cpu_has_avx512

PAIRS = [
    ("what is a cat", "A cat is a small domesticated carnivorous mammal."),
    ("what is a cat", "The stock market fell sharply on Monday."),
    ("how tall is mount everest", " ".join(f"paragraph{index} about mountains" for index in range(300))),
    ("python", "a programming language"),
    ("python", "a large snake"),
    ("über straße", "naïve café in 東京"),
    ("", "an empty query"),
]
QUERIES = [query for query, _ in PAIRS]
TEXTS = [text for _, text in PAIRS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("compiled") / "tiny-cross-encoder")


def test_compiled_scores_match_eager_with_one_graph_for_every_batch_shape(model_dir: Path) -> None:
    eager = load(model_dir, compile="off")
    graphs_before = counters["stats"]["unique_graphs"]

    compiled = load(model_dir, compile="on")  # compiles while loading, on its warm-up batch

    assert compiled.compiled and compiled.describe()["compiled"] == "TorchInductor"
    assert not eager.compiled and eager.describe()["compiled"] == "no"
    # In float32 attention stays on SDPA, compiled or not (batched matmuls pay only in bf16).
    assert compiled.describe()["attention"] == eager.describe()["attention"] == "sdpa"
    expected = eager.score(QUERIES, TEXTS).scores
    # A budget of 600 tokens cuts batches of several widths and lengths, down to one row for the
    # 512-token pair; one pair alone is a batch of one row too.
    result = compiled.score(QUERIES, TEXTS)
    single = compiled.score(QUERIES[:1], TEXTS[:1])
    np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(single.scores, expected[:1], atol=1e-5, rtol=0)
    assert result.tokens == eager.score(QUERIES, TEXTS).tokens
    assert counters["stats"]["unique_graphs"] - graphs_before == 1


def test_single_rows_compile_one_more_graph_and_score_as_the_batched_one(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eager = load(model_dir, compile="off")
    # Batch-invariant shapes at float32: the 512-token pair and a call of one pair are batches of one.
    compiled = load(model_dir, compile="on", batch_invariant="on")
    expected = eager.score(QUERIES, TEXTS).scores
    graphs_before = counters["stats"]["unique_graphs"]

    assert compiled.use_single_rows(True)  # compiles the one-row graph now, on a warm-up pair

    assert counters["stats"]["unique_graphs"] - graphs_before == 1
    assert compiled.describe()["batch_shapes"].endswith(", a single pair as one row")
    rows_run: list[int] = []
    logits = compiled.model.path.logits

    def counted_logits(features: dict[str, Any]) -> Any:
        rows_run.append(len(features["input_ids"]))
        return logits(features)

    monkeypatch.setattr(compiled.model.path, "logits", counted_logits)
    result = compiled.score(QUERIES, TEXTS)
    singles = [compiled.score([query], [text]).scores[0] for query, text in PAIRS]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(singles, expected, atol=1e-5, rtol=0)
    assert rows_run.count(1) >= len(PAIRS) + 1  # each pair alone, and the 512-token pair in the whole call
    assert counters["stats"]["unique_graphs"] - graphs_before == 1  # no graph per length

    assert not compiled.use_single_rows(False)
    rows_run.clear()
    compiled.score(QUERIES[:1], TEXTS[:1])
    assert rows_run != [1]


def test_compiled_bfloat16_attentions_are_measured_and_stay_close_to_float32(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "SECONDS_PER_TRIAL", 0.02)
    monkeypatch.setattr(calibration, "MAX_PAIRS", 64)
    reference = load(model_dir, compile="off").score(QUERIES, TEXTS).scores

    # Compiled on CPU in bf16, the calibration times SDPA's kernel against batched-matmul attention, and
    # oneDNN's GEMMs against generated ones.
    compiled = load(model_dir, compile="on", dtype="bfloat16", calibrate=True, state_dir=tmp_path)

    assert compiled.describe()["dtype"] == "bfloat16"
    # ... and tries a single pair as one row (a graph of its own) in the mode it chose.
    assert compiled.tuning.single_rows_drift is not None
    assert compiled.tuning.single_rows is (
        compiled.tuning.single_rows_drift <= calibration.INVARIANCE_TOLERANCE
    )
    # Each mode is timed, or left out by name: too slow at a first timing (which mode, depends on the CPU),
    # or generated GEMM kernels too slow on one layer to compile.
    tuning = compiled.tuning
    timed = {name.removesuffix(" 600") for name in tuning.trials}
    not_compiled = {"compiled cpp-gemm"} if calibration.gemm_templates_left_out(tuning.gemm_share) else set()
    assert timed | set(tuning.screened_out) | not_compiled == {
        "compiled matmul",
        "compiled",
        "compiled cpp-gemm",
    }
    assert timed  # the fastest at the first timing, at least
    attention = {None: "sdpa", "matmul": "bulk-rerank-cpu"}
    assert compiled.describe()["attention"] == attention[compiled.tuning.attention]
    kernels = {False: "TorchInductor", True: "TorchInductor, generated GEMM kernels"}
    for mode in (Mode(True, "matmul"), Mode(True), Mode(True, gemm_templates=True)):
        assert compiled.use_mode(mode, required=True)
        assert compiled.describe()["attention"] == attention[mode.attention]
        assert compiled.describe()["compiled"] == kernels[mode.gemm_templates]
        np.testing.assert_allclose(compiled.score(QUERIES, TEXTS).scores, reference, atol=0.05, rtol=0)


@pytest.mark.skipif(not cpu_has_avx512(), reason="bf16 scoring, where the mode is offered, needs AVX-512")
def test_one_layer_is_timed_on_generated_gemm_kernels_against_onednn() -> None:
    # The block compiles twice, the second time with the generated kernels in place of oneDNN's linears.
    templated_before = counters["inductor"]["cpp_templated_kernel_counter"]
    random_state = torch.random.get_rng_state()

    share = generated_gemm_share(64, 128, 32, torch.bfloat16)

    assert counters["inductor"]["cpp_templated_kernel_counter"] - templated_before == 2
    assert 0.0 < share < float("inf")
    assert torch.equal(torch.random.get_rng_state(), random_state)


@pytest.mark.skipif(not cpu_has_amx(), reason="a property of the AMX tile kernels: this CPU has no AMX")
def test_generated_gemm_kernels_score_a_pair_alike_in_batches_of_any_rows_on_amx(tmp_path: Path) -> None:
    # oneDNN's AMX kernels block a multiply's reduction by its row count; the generated kernels alone
    # (cpp-gemm mode) do not, so neither row steps nor a single pair as one row move a bf16 score. The
    # layers are as wide as MiniLM-L6's, where oneDNN's kernels moved scores by ~1e-2.
    wide = build_tiny_cross_encoder(tmp_path / "wide", hidden_size=384, layers=1)
    compiled = load(wide, compile="on", dtype="bfloat16", batch_invariant="on")
    assert compiled.use_mode(Mode(True, gemm_templates=True), required=True)
    assert compiled.shapes is not None
    compiled.use_shapes(replace(compiled.shapes, full_rows=False))
    assert compiled.use_single_rows(True)

    whole = compiled.score(QUERIES, TEXTS).scores
    singles = [compiled.score([query], [text]).scores[0] for query, text in PAIRS]
    np.testing.assert_allclose(singles, whole, atol=calibration.INVARIANCE_TOLERANCE, rtol=0)
    assert calibration.composition_drift(compiled, QUERIES * 5, TEXTS * 5) <= calibration.INVARIANCE_TOLERANCE


class Child:
    """A fresh interpreter that loads and scores with a setting under which compiling really fails: its
    C++ compiler does not exist and its TorchInductor cache is empty. Its output goes to files, so it
    runs unattended until a test asks for its outcome."""

    def __init__(self, model_dir: Path, scratch: Path, setting: str) -> None:
        script = textwrap.dedent(
            f"""
            import logging
            import torch
            # auto compiles only on AVX-512 CPUs: stand in for one, whatever this machine is.
            torch.backends.cpu.get_cpu_capability = lambda: "AVX512"
            logging.basicConfig(level=logging.WARNING)
            from core.model_spec import ModelSpec
            from worker.backends import load_reranker
            from core.settings import Settings
            reranker = load_reranker(ModelSpec.parse("cross-encoder:{model_dir}"), Settings())
            print("compiled:", reranker.describe()["compiled"])
            print("attention:", reranker.describe()["attention"])
            print("scores:", len(reranker.score(["a query", "b"], ["a text", "c"]).scores))
            """
        )
        # bf16, so that the attention switched for compiling must be switched back when compiling fails.
        env = clean_env(compile=setting, device="cpu", dtype="bfloat16")
        env.update(
            {"CXX": str(scratch / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "cache")}
        )
        self.stdout, self.stderr = scratch / "stdout", scratch / "stderr"
        with open(self.stdout, "wb") as stdout, open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script], cwd=REPO, env=env, stdout=stdout, stderr=stderr
            )

    def outcome(self, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        returncode = self.process.wait(timeout_s)
        return subprocess.CompletedProcess(
            self.process.args, returncode, self.stdout.read_text(), self.stderr.read_text()
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module", autouse=True)
def uncompilable(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Child]]:
    """The children for RERANK_COMPILE=auto and =on, started with the module: each spends seconds on its
    imports and model load before it finds no compiler, so they do that while the in-process compiles
    run rather than one after another."""
    children = {
        setting: Child(model_dir, tmp_path_factory.mktemp(f"no-compiler-{setting}"), setting)
        for setting in ("auto", "on")
    }
    yield children
    for child in children.values():
        child.stop()


def test_auto_falls_back_to_eager_with_a_warning_when_it_cannot_compile(
    uncompilable: dict[str, Child],
) -> None:
    child = uncompilable["auto"].outcome()

    assert child.returncode == 0, child.stderr[-3000:]
    assert "compiled: no" in child.stdout and "scores: 2" in child.stdout
    assert "attention: sdpa" in child.stdout  # the batched-matmul attention goes with the compiled graph
    assert "cannot compile cross-encoder" in child.stderr and "RERANK_COMPILE=off" in child.stderr


def test_on_fails_the_load_when_it_cannot_compile(uncompilable: dict[str, Child]) -> None:
    child = uncompilable["on"].outcome()

    assert child.returncode != 0
    assert "ModelLoadError" in child.stderr and "RERANK_COMPILE=on" in child.stderr
    assert "scores:" not in child.stdout
