"""The load-time calibration: what it measures, what it chooses, what it caches and what settings fix."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.model_factory import build_tiny_cross_encoder
from worker.backends import load_reranker
from worker.backends.base import ScoreResult
from worker.backends.local import calibration
from worker.backends.local.batch_shapes import FixedShapes
from worker.backends.local.calibration import EAGER, Candidate, Mode, Tuning, calibration_pairs, choose
from worker.shard_runner import device_label


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("calibrated"))


@pytest.fixture(autouse=True)
def short_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "SECONDS_PER_TRIAL", 0.02)
    monkeypatch.setattr(calibration, "MAX_PAIRS", 64)


def load(model_dir: Path, state_dir: Path, **settings: Any) -> Any:
    values: dict[str, Any] = {"device": "cpu", "dtype": "float32", "compile": "off", "calibrate": True}
    return load_reranker(
        ModelSpec.parse(f"cross-encoder:{model_dir}"), Settings(state_dir=state_dir, **(values | settings))
    )


def test_the_fastest_budget_is_measured_then_read_back_from_the_cache(
    model_dir: Path, tmp_path: Path
) -> None:
    first = load(model_dir, tmp_path)

    tuning: Tuning = first.tuning
    assert tuning.source == "measured"
    budgets = calibration.candidate_budgets(first.target.device, torch.get_num_threads())
    assert set(tuning.trials) == {f"eager {budget}" for budget in budgets}
    assert first.target.token_budget == tuning.token_budget == first.batcher.max_budget
    assert tuning.trials[f"eager {tuning.token_budget}"] >= 0.98 * max(tuning.trials.values())
    cached = list((tmp_path / "calibration").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["token_budget"] == tuning.token_budget

    again = load(model_dir, tmp_path)
    assert again.tuning.source == "cached"
    assert again.tuning.token_budget == tuning.token_budget and again.tuning.trials == tuning.trials
    described = again.describe()
    assert described["token_budget"] == str(tuning.token_budget)
    assert described["tuning"] == f"budget {tuning.token_budget}, eager (cached)"
    assert "pairs/s of the calibration pairs" in described["calibration"]
    assert device_label(described) == f"cpu float32 budget {tuning.token_budget}, eager (cached)"


def test_settings_fix_what_they_name_and_nothing_is_measured(model_dir: Path, tmp_path: Path) -> None:
    fixed = load(model_dir, tmp_path, token_budget=700)

    assert fixed.tuning == Tuning(700, False, "settings")
    assert fixed.batcher.max_budget == 700
    assert not (tmp_path / "calibration").exists()
    off = load(model_dir, tmp_path, calibrate=False)
    assert off.tuning.source == "settings" and not (tmp_path / "calibration").exists()


def test_a_cache_for_other_candidates_or_a_damaged_one_is_measured_again(
    model_dir: Path, tmp_path: Path
) -> None:
    first = load(model_dir, tmp_path)
    (cache_file,) = (tmp_path / "calibration").glob("*.json")
    cache_file.write_text("{not json")

    assert load(model_dir, tmp_path).tuning.source == "measured"
    assert json.loads(cache_file.read_text())["token_budget"] == load(model_dir, tmp_path).tuning.token_budget
    assert first.tuning.source == "measured"


def test_choose_prefers_the_smaller_budget_within_two_percent() -> None:
    candidates = [Candidate(512, EAGER), Candidate(1024, EAGER), Candidate(2048, EAGER)]

    assert choose(candidates, {"eager 512": 90.0, "eager 1024": 100.0, "eager 2048": 99.0}).budget == 1024
    assert choose(candidates, {"eager 512": 99.0, "eager 1024": 100.0, "eager 2048": 80.0}).budget == 512


def test_choose_prefers_eager_within_two_percent_and_compiled_only_when_it_is_faster() -> None:
    compiled = Mode(True)
    candidates = [Candidate(1024, EAGER), Candidate(512, compiled), Candidate(1024, compiled)]

    tie = choose(candidates, {"eager 1024": 99.0, "compiled 512": 98.0, "compiled 1024": 100.0})
    assert tie.mode == EAGER
    faster = choose(candidates, {"eager 1024": 97.0, "compiled 512": 98.0, "compiled 1024": 100.0})
    assert faster == Candidate(512, compiled)


def test_calibration_pairs_are_deterministic_and_spread_in_length(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    queries, texts = calibration_pairs(tokenizer, 50)

    assert (queries, texts) == calibration_pairs(tokenizer, 50)
    lengths = sorted(len(text.split()) for text in texts)
    assert lengths[0] < 60 and lengths[-1] > 100
    assert all(1 <= len(query.split()) <= 12 for query in queries)


def test_bf16_batches_reach_the_model_in_fixed_shapes(model_dir: Path, tmp_path: Path) -> None:
    reranker = load(model_dir, tmp_path, dtype="bfloat16", calibrate=False, token_budget=256)
    shapes: list[tuple[int, ...]] = []
    model = reranker.model.path.model
    hook = model.register_forward_pre_hook(
        lambda _module, _args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    queries, texts = calibration_pairs(reranker.model.cross_encoder.tokenizer, 45)
    try:
        result = reranker.score(queries, texts)
    finally:
        hook.remove()

    assert len(result.scores) == 45
    # Every batch of a length bucket has the bucket's full row count under the budget.
    assert shapes and all(width % 16 == 0 and rows == max(2, 256 // width // 2 * 2) for rows, width in shapes)
    assert reranker.describe()["batch_shapes"] == "fixed: lengths in steps of 16, full rows per length"


class ClockedTunable:
    """A tunable whose scoring takes a fixed time per budget (times a factor per mode) on a fake clock,
    counting its calls; modes not in ``mode_factors`` cannot run."""

    def __init__(self, seconds_per_budget: dict[int, float], mode_factors: dict[Mode, float] | None = None):
        self.seconds_per_budget = seconds_per_budget
        self.mode_factors = mode_factors or {EAGER: 1.0}
        self.now = 0.0
        self.budget = 0
        self.mode = EAGER
        self.calls: dict[int, int] = {}
        self.switches: list[str] = []

    shapes: FixedShapes | None = None
    gemm_share: float | None = None  # of generated GEMM kernels against oneDNN's, on one layer

    def use_shapes(self, shapes: FixedShapes) -> None:
        self.shapes = shapes

    def generated_gemm_share(self, tokens: int) -> float | None:
        return self.gemm_share

    def use_budget(self, budget: int) -> None:
        self.budget = budget

    def use_single_rows(self, enabled: bool) -> bool:
        if self.shapes is None:
            return False
        self.shapes = replace(self.shapes, single_rows=enabled)
        return enabled

    def use_mode(self, mode: Mode, *, required: bool) -> bool:
        if mode not in self.mode_factors:
            return False
        if mode != self.mode:
            self.switches.append(mode.name)
        self.mode = mode
        return True

    def score(self, queries: Any, texts: Any) -> ScoreResult:
        self.now += self.seconds_per_budget.get(self.budget, 1.0) * self.mode_factors[self.mode]
        self.calls[self.budget] = self.calls.get(self.budget, 0) + 1
        scores = np.array([len(query) + len(text) for query, text in zip(queries, texts, strict=True)])
        return ScoreResult(scores=scores, tokens=0, device_seconds=0.0)


def as_cached(tuning: Tuning) -> Tuning:
    """``tuning`` after a trip through the cache's JSON, as a later load reads it back."""
    return Tuning(**{**json.loads(json.dumps(tuning.__dict__)), "source": "cached"})


def tune(
    tunable: calibration.Tunable,
    tokenizer: Any,
    budgets: list[int],
    modes: list[Mode] | None = None,
    cache_file: Path | None = None,
) -> Tuning:
    """``calibration.tune`` on a fake tunable, which compiles nothing (eager only unless ``modes``)."""
    return calibration.tune(
        tunable,
        tokenizer,
        budgets=budgets,
        modes=modes or [EAGER],
        compile_required=False,
        cache_file=cache_file,
    )


def test_candidates_close_to_the_best_get_deciding_rounds(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 512 and 1024 are within 10% of each other; 2048 is far behind and is not timed again.
    tunable = ClockedTunable({512: 1.05, 1024: 1.0, 2048: 2.0})
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-fake").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, [512, 1024, 2048])

    assert tuning.token_budget == 1024
    rounds, deciding = calibration.ROUNDS, calibration.DECIDING_ROUNDS
    assert tunable.calls[2048] == rounds
    assert tunable.calls[1024] == rounds + deciding
    assert tunable.calls[512] == 2 + rounds + deciding  # the first timing scored twice at the first budget


def test_deciding_rounds_are_skipped_when_trials_are_slow(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunable = ClockedTunable({512: 5.2, 1024: 5.0})  # a large model: three more rounds would take 30 s
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-slow").model.cross_encoder.tokenizer

    tune(tunable, tokenizer, [512, 1024])

    assert tunable.calls[1024] == calibration.ROUNDS


def test_a_model_too_slow_to_time_every_candidate_times_its_modes_at_the_middle_budget(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large model on a slow CPU: 20 s per call, so six candidates in two rounds would take minutes.
    compiled = Mode(True)
    tunable = ClockedTunable({512: 20.0, 1024: 20.0, 2048: 20.0}, {EAGER: 1.0, compiled: 0.8})
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-large").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, [512, 1024, 2048], [EAGER, compiled])

    assert set(tuning.trials) == {"eager 1024", "compiled 1024"}
    assert tuning.choice() == "budget 1024, compiled (measured)"
    assert tunable.calls[512] == 4  # the first timing of each mode only
    assert tunable.calls.get(2048, 0) == 0


def test_every_mode_is_set_up_before_timing_and_the_fastest_mode_wins(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compiled with generated GEMM kernels is fastest here, then SDPA, then matmul attention; a fourth
    # mode cannot compile.
    matmul, sdpa, broken = Mode(True, "matmul"), Mode(True), Mode(True, "broken")
    templates = Mode(True, gemm_templates=True)
    factors = {EAGER: 1.0, matmul: 0.8, sdpa: 0.6, templates: 0.5}
    tunable = ClockedTunable({512: 1.0, 1024: 1.0}, factors)
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-modes").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, [512, 1024], [EAGER, matmul, broken, sdpa, templates])

    assert tuning.mode == templates and tunable.mode == templates
    assert tuning.choice() == "budget 512, compiled cpp-gemm (measured)"
    assert set(tuning.trials) == {
        f"{mode.name} {budget}" for mode in (EAGER, matmul, sdpa, templates) for budget in (512, 1024)
    }
    # Set up in order first (each compiles off the clock), then the timed rounds switch between them.
    assert tunable.switches[:3] == ["compiled matmul", "compiled", "compiled cpp-gemm"]
    assert as_cached(tuning).mode == templates


def test_a_mode_far_behind_at_the_first_timing_is_left_out_and_the_others_are_timed_at_every_budget(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Generated GEMM kernels on a CPU without the matrix units they are written for: 4x slower than oneDNN's
    # at the first timing. Timing it at every budget too would leave time for the middle budget only.
    compiled, templates = Mode(True), Mode(True, gemm_templates=True)
    budgets = [512, 1024, 2048]
    tunable = ClockedTunable(dict.fromkeys(budgets, 1.0), {EAGER: 1.2, compiled: 1.0, templates: 4.0})
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-screen").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, budgets, [EAGER, compiled, templates])

    assert tuning.screened_out == {"compiled cpp-gemm": calibration.PROBE_PAIRS / 4.0}
    assert set(tuning.trials) == {f"{mode.name} {budget}" for mode in (EAGER, compiled) for budget in budgets}
    assert tuning.mode == compiled
    assert "left out as too slow at a first timing (pairs/s): compiled cpp-gemm 2.0" in tuning.summary()
    cached = as_cached(tuning)
    assert cached.screened_out == tuning.screened_out


def test_generated_gemm_kernels_slow_on_one_layer_are_not_compiled_for_the_model(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compiling a whole model with generated GEMM kernels takes minutes for a large one; where one layer
    # already runs at a quarter of oneDNN's speed, the mode is neither compiled nor timed.
    compiled, templates = Mode(True), Mode(True, gemm_templates=True)
    budgets = [512, 1024]
    tokenizer = load(model_dir, model_dir.parent / "state-gemm-share").model.cross_encoder.tokenizer
    tunings = {}
    for share in (0.25, 1.1):
        tunable = ClockedTunable(dict.fromkeys(budgets, 1.0), {EAGER: 1.2, compiled: 1.0, templates: 0.9})
        tunable.gemm_share = share
        monkeypatch.setattr(calibration.time, "perf_counter", lambda tunable=tunable: tunable.now)
        tunings[share] = tune(tunable, tokenizer, budgets, [EAGER, compiled, templates])
        assert ("compiled cpp-gemm" in tunable.switches) == (share == 1.1)

    slow, fast = tunings[0.25], tunings[1.1]
    assert slow.mode == compiled and fast.mode == templates
    assert not any("cpp-gemm" in name for name in [*slow.trials, *slow.screened_out])
    assert slow.gemm_share == 0.25
    left_out = "generated GEMM kernels ran one layer at 0.25x oneDNN's speed (cpp-gemm not compiled)"
    assert left_out in slow.summary()
    assert fast.summary().endswith("generated GEMM kernels ran one layer at 1.10x oneDNN's speed")
    assert as_cached(slow).gemm_share == 0.25


class ShapeSensitive(ClockedTunable):
    """Fixed batch shapes: full rows cost twice the time of row steps, and with row steps a score depends
    on how many pairs its call holds (``drifts``), as where kernels reduce differently by row count; so
    does it with single rows where ``single_rows_drift``, as where a one-row graph reduces otherwise."""

    def __init__(self, drifts: bool, full_rows_drift: bool = False, single_rows_drift: bool = False) -> None:
        super().__init__({256: 1.5, 512: 1.0, 1024: 1.2})
        self.shapes = FixedShapes()
        self.drifts = drifts
        self.full_rows_drift = full_rows_drift
        self.single_rows_drift = single_rows_drift
        self.call_sizes: list[int] = []
        self.timed_with: list[bool] = []

    def score(self, queries: Any, texts: Any) -> ScoreResult:
        assert self.shapes is not None
        self.timed_with.append(self.shapes.full_rows)
        self.call_sizes.append(len(queries))
        result = super().score(queries, texts)
        if self.shapes.single_rows and self.single_rows_drift:
            return replace(result, scores=result.scores + 1e-3 * len(queries))
        if self.shapes.full_rows:
            self.now += self.seconds_per_budget[self.budget]
            if self.full_rows_drift:
                return replace(result, scores=result.scores + 1e-3 * len(queries))
        elif self.drifts:
            return replace(result, scores=result.scores + 1e-3 * len(queries))
        return result


@pytest.mark.parametrize("drifts", [False, True])
def test_batches_keep_row_steps_only_where_scores_stay_the_same_in_any_composition(
    drifts: bool, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunable = ShapeSensitive(drifts)
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-shapes").model.cross_encoder.tokenizer
    cache_file = tmp_path / "tuning.json"

    tuning = tune(tunable, tokenizer, [512, 1024], cache_file=cache_file)

    assert tuning.full_rows is drifts and tunable.shapes == FixedShapes(full_rows=drifts, single_rows=True)
    assert tuning.composition_drift is not None
    assert (tuning.composition_drift > calibration.INVARIANCE_TOLERANCE) is drifts
    assert tuning.token_budget == 512
    # Timed with row steps first; only where scores drifted timed again with full rows.
    assert tunable.timed_with[0] is False and (True in tunable.timed_with) is drifts
    assert ("full rows" if drifts else "row steps kept") in tuning.summary()

    tunable.shapes = FixedShapes(full_rows=not drifts)
    again = tune(tunable, tokenizer, [512, 1024], cache_file=cache_file)
    assert again.source == "cached" and tunable.shapes == FixedShapes(full_rows=drifts, single_rows=True)


def test_row_steps_are_kept_where_full_rows_leave_scores_as_dependent_on_the_batch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a GPU, where cuBLAS chooses kernels by the whole shape: full rows cost padding and buy nothing.
    tunable = ShapeSensitive(drifts=True, full_rows_drift=True)
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-shapes").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, [512, 1024])

    assert True in tunable.timed_with  # full rows were tried ...
    assert tuning.full_rows is False and tunable.shapes.full_rows is False  # ... and dropped
    assert tuning.full_rows_drift is not None and tuning.full_rows_drift > calibration.INVARIANCE_TOLERANCE
    assert (
        tuning.composition_drift is not None and tuning.composition_drift > calibration.INVARIANCE_TOLERANCE
    )
    # The trials reported are those of the row steps kept: one second per call of the trial pairs at
    # budget 512 (full rows took two).
    assert tuning.trials["eager 512"] == pytest.approx(max(tunable.call_sizes) / 1.0)
    assert "full rows moved it" in tuning.summary() and "row steps kept" in tuning.summary()


@pytest.mark.parametrize("drifts", [False, True])
def test_a_single_pair_runs_as_one_row_only_where_that_leaves_scores_the_same(
    drifts: bool, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunable = ShapeSensitive(drifts=False, single_rows_drift=drifts)
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-shapes").model.cross_encoder.tokenizer
    cache_file = tmp_path / "tuning.json"

    tuning = tune(tunable, tokenizer, [512, 1024], cache_file=cache_file)

    assert tuning.full_rows is False and tuning.single_rows is not drifts
    assert tunable.shapes == FixedShapes(full_rows=False, single_rows=not drifts)
    assert tuning.single_rows_drift is not None
    assert (tuning.single_rows_drift > calibration.INVARIANCE_TOLERANCE) is drifts
    assert ("padded as before" if drifts else "(kept)") in tuning.summary()

    tunable.shapes = FixedShapes()
    again = tune(tunable, tokenizer, [512, 1024], cache_file=cache_file)
    assert again.source == "cached" and tunable.shapes == FixedShapes(full_rows=False, single_rows=not drifts)


class PaddedToFullRows(ShapeSensitive):
    """A large model, too slow to time every budget, whose calls with full rows waste more padding the
    larger the budget (a call's last batch in each length bucket is padded to the budget's row count);
    below 256 tokens its batches are too small to run at speed."""

    def score(self, queries: Any, texts: Any) -> ScoreResult:
        result = super().score(queries, texts)
        assert self.shapes is not None
        if self.shapes.full_rows:
            self.now += self.budget / 100 if self.budget >= 256 else 100.0
        return result


def test_with_full_rows_a_slow_model_times_the_smaller_budgets_in_its_fastest_mode(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = Mode(True)
    tunable = PaddedToFullRows(drifts=True)
    tunable.seconds_per_budget = dict.fromkeys([128, 256, 512, 1024, 2048], 20.0)
    tunable.mode_factors = {EAGER: 1.0, compiled: 0.8}
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: tunable.now)
    tokenizer = load(model_dir, model_dir.parent / "state-padded").model.cross_encoder.tokenizer

    tuning = tune(tunable, tokenizer, [512, 1024, 2048], [EAGER, compiled])

    assert tuning.full_rows is True
    # Row steps: both modes at the middle budget only; full rows: the fastest mode below it too, and the
    # smallest budget halved while that wins (256), then once more (128, slower).
    assert set(tuning.trials) == {
        "eager 1024",
        "compiled 1024",
        "compiled 512",
        "compiled 256",
        "compiled 128",
    }
    assert tuning.choice() == "budget 256, compiled (measured)"
    assert (tunable.budget, tunable.mode) == (256, compiled)
    assert tunable.calls.get(2048, 0) == 0

    # A halved budget is one a later load reads back from the cache.
    cache_file = tmp_path / "tuning.json"
    calibration.write_cached(cache_file, tuning)
    again = tune(tunable, tokenizer, [512, 1024, 2048], [EAGER, compiled], cache_file)
    assert again.source == "cached" and again.token_budget == 256 and tunable.budget == 256


def test_bf16_calibration_measures_the_rows_batches_are_padded_to(model_dir: Path, tmp_path: Path) -> None:
    reranker = load(model_dir, tmp_path, dtype="bfloat16")

    tuning: Tuning = reranker.tuning
    assert tuning.source == "measured" and tuning.composition_drift is not None
    assert tuning.full_rows is (tuning.composition_drift > calibration.INVARIANCE_TOLERANCE)
    rows = "full rows per length" if tuning.full_rows else "rows in steps of 2"
    single = ", a single pair as one row" if tuning.single_rows else ""
    assert reranker.describe()["batch_shapes"] == f"fixed: lengths in steps of 16, {rows}{single}"
    shapes = FixedShapes(full_rows=bool(tuning.full_rows), single_rows=bool(tuning.single_rows))
    assert reranker.batcher.shapes == reranker.target.shapes == shapes
    assert tuning.single_rows_drift is not None
    assert tuning.single_rows is (tuning.single_rows_drift <= calibration.INVARIANCE_TOLERANCE)
