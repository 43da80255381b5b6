"""Tuning measured on the machine at hand: the token budget, eager vs compiled and the attention kernel,
chosen at model load.

The best padded-token budget, whether TorchInductor beats eager PyTorch, which attention runs fastest
(PyTorch's fused SDPA kernel, or two batched matmuls around a compiled softmax) and whether the linear
layers run faster on oneDNN or on the C++ GEMM kernels TorchInductor generates and autotunes differ between
CPU kinds (AMX, AVX512-BF16, AVX2 only), thread counts, GPUs and models, so no constant carries from
one machine to another. At load, ``tune`` times the candidates the settings leave open on the same
synthetic pairs (short queries, passages from 16 to 512 words, words from the model's own vocabulary),
in interleaved rounds across every mode (each mode is compiled once, before any timing), and keeps the
fastest; a mode at less than half the fastest one's speed at a first timing is left out of the
rounds, and generated GEMM kernels that run one layer's matrix multiplies at less than half oneDNN's
speed are not compiled for the whole model at all (where the CPU lacks the AMX tiles they are written
for, they ran whole models at a quarter of oneDNN's speed). The choice is cached as JSON per model,
device kind, dtype, thread count and library versions under ``<state dir>/calibration/``, so later
loads on such a machine read it back in milliseconds (and skip a compile that did not pay).
``RERANK_TOKEN_BUDGET`` and ``RERANK_COMPILE=on|off`` fix their part; ``RERANK_CALIBRATE=false`` turns
the measuring off.

With fixed batch shapes (``batch_shapes``: bf16 and fp16), how many rows a batch is padded to is measured
too. Rows padded only to a step of two cost far less than every batch at its bucket's full row count,
but keep a score independent of its batch only where the kernels reduce the same way at every row
count. So the candidates are timed with row steps, and the fastest is then checked: the trial pairs are
scored whole and again shuffled, in calls of random sizes. Where a score moves by more than
``INVARIANCE_TOLERANCE``, the batches go back to full rows and the candidates are timed again (a model
too slow to time every budget then times the budgets below the fastest one too, in its mode, and the
smallest budget is halved while that wins: full rows pad each bucket's last batch in a call to the
budget's row count, which a smaller budget shrinks); and where full
rows leave scores moving too (cuBLAS picks a GEMM kernel by the whole shape), the faster row
steps are kept. Last, a batch of one pair is tried as one row instead of padded like the others (a
compiled model compiles a graph for it): kept where the same check finds scores still in tolerance. It
is not timed: one row is at most the work of the two or more it replaces, and saves most where a shard's
long passages spread thinly over many lengths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from worker.backends.base import ScoreResult
from worker.backends.local.batch_shapes import FixedShapes
from worker.backends.local.device import cpu_flags, describe_dtype

log = logging.getLogger(__name__)

# 10: single rows tried; 11: generated GEMM kernels alone in cpp-gemm mode; 12: modes screened
CACHE_VERSION = 12
# Budgets tried, as padded tokens per CPU thread (at least two threads counted), or per GPU.
CPU_TOKENS_PER_THREAD = (256, 512, 1024, 2048)
CUDA_BUDGETS = (16384, 32768, 65536, 131072)
# Each candidate scores pairs for about this long per round; the pairs are sized from a first timing.
SECONDS_PER_TRIAL = 0.4
ROUNDS = 2
# Candidates within this share of the best after ``ROUNDS`` get ``DECIDING_ROUNDS`` more: round-to-round
# noise on a shared machine is ~10%, larger than the gaps between the best budgets.
CLOSE_SHARE = 0.9
DECIDING_ROUNDS = 3
# ... unless they would take longer than this (a large model's trials take seconds each).
DECIDING_SECONDS = 10.0
MIN_PAIRS, MAX_PAIRS = 32, 1024
# With full rows, how many times the smallest budget may be halved while a smaller one keeps winning.
HALVINGS = 2
PROBE_PAIRS = 8  # a first timing of each mode, which sizes the trials
# A mode this far behind the fastest at the first timing is not timed further: no budget makes up a gap of
# 2x, and timing it at every budget would take the time that lets the others be timed at every budget.
SCREEN_SHARE = 0.5
# Timing every candidate must fit in about this long. A large model on a slow device (a 24-layer model on
# 2 CPU cores: tens of seconds per trial) times its modes at one budget instead: such models ran as fast
# at every budget from 512 to 4k tokens per batch.
CALIBRATION_SECONDS = 90.0
QUERY_WORDS = (3, 12)
# Passage lengths spread log-uniformly over this range, so that the trials meet what shards bring: many
# short passages and some long enough to fill a 512-token model (a budget that fits one such pair per
# batch, or a compiled graph that runs single rows as two, shows up in the timing only with them).
PASSAGE_WORDS = (16, 512)
SEED = 20261203
# A compiled mode's word for generated GEMM kernels, in ``describe()`` and the calibration's trials.
GEMM_TEMPLATES = "cpp-gemm"
# The largest change of a score between two batch compositions that still counts as batch-invariant:
# float32 rounding in the parts that run in float32, far below a bf16 rounding step carried to the score.
INVARIANCE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Mode:
    """How the forward pass runs: eager or compiled, and for a compiled one the attention it is
    compiled with (``None``: the one the model comes with) and whether its matrix multiplies run on
    TorchInductor's generated C++ GEMM kernels (``gemm_templates``, oneDNN only where those cannot)
    instead of oneDNN's."""

    compiled: bool
    attention: str | None = None
    gemm_templates: bool = False

    @property
    def name(self) -> str:
        if not self.compiled:
            return "eager"
        words = ["compiled"]
        if self.attention is not None:
            words.append(self.attention)
        if self.gemm_templates:
            words.append(GEMM_TEMPLATES)
        return " ".join(words)


EAGER = Mode(False)


@dataclass(frozen=True)
class Tuning:
    """What the scorer runs with, and how it was decided."""

    token_budget: int
    compiled: bool
    source: str  # "measured", "cached" or "settings"
    # pairs/s per candidate ("eager 1024", "compiled sdpa 2048", ...), when measured (also when cached)
    trials: dict[str, float] = field(default_factory=dict)
    measured_at: str = ""
    attention: str | None = None  # of a compiled forward pass, when chosen among several
    gemm_templates: bool = False  # of a compiled forward pass: its GEMMs may run on generated kernels
    # With fixed batch shapes: whether batches are padded to their bucket's full row count, and the
    # largest change of a score between two batch compositions measured with row steps.
    full_rows: bool | None = None
    composition_drift: float | None = None
    # ... and with full rows, where those were tried: when they leave scores as dependent on the batch
    # (GPU GEMM kernels are chosen by shape, not only by row count), row steps are kept, being faster.
    full_rows_drift: float | None = None
    # ... and whether a batch of one pair runs as one row, with the largest change measured that way.
    single_rows: bool | None = None
    single_rows_drift: float | None = None
    # Modes left out after the first timing, with their pairs/s there.
    screened_out: dict[str, float] = field(default_factory=dict)
    # Generated GEMM kernels' speed as a share of oneDNN's on one layer, where a mode would use them.
    gemm_share: float | None = None

    @property
    def mode(self) -> Mode:
        if not self.compiled:
            return EAGER
        return Mode(True, self.attention, self.gemm_templates)

    def choice(self) -> str:
        """The choice in a few words, for ``describe()`` and the ledger's device column."""
        return f"budget {self.token_budget}, {self.mode.name} ({self.source})"

    def summary(self) -> str:
        """The choice and the measured pairs/s of every candidate, for logs and ``describe()``."""
        if not self.trials:
            return self.choice()
        when = f" on {self.measured_at[:10]}" if self.measured_at else ""
        details = ""
        if self.composition_drift is not None:
            rows = "full rows" if self.full_rows else "row steps kept"
            if self.full_rows_drift is not None and not self.full_rows:
                rows = f"full rows moved it {self.full_rows_drift:.1e} too: row steps kept"
            moved = f"{self.composition_drift:.1e}"
            details = f"; with row steps a score moved {moved} between batch compositions ({rows})"
        if self.single_rows_drift is not None:
            kept = "kept" if self.single_rows else "padded as before"
            details += f"; single pairs as one row moved it {self.single_rows_drift:.1e} ({kept})"
        if self.screened_out:
            details += f"; left out as too slow at a first timing (pairs/s): {listed(self.screened_out)}"
        if self.gemm_share is not None:
            left_out = f" ({GEMM_TEMPLATES} not compiled)" if gemm_templates_left_out(self.gemm_share) else ""
            share = f"{self.gemm_share:.2f}x oneDNN's speed"
            details += f"; generated GEMM kernels ran one layer at {share}{left_out}"
        rates = listed(self.trials)
        return f"{self.choice()}; measured{when}, pairs/s of the calibration pairs: {rates}{details}"


def gemm_templates_left_out(share: float | None) -> bool:
    """Whether generated GEMM kernels timed on one layer at ``share`` of oneDNN's speed (None: not timed)
    are too slow to be worth compiling for the whole model."""
    return share is not None and share < SCREEN_SHARE


def listed(rates: dict[str, float]) -> str:
    """``rates`` (pairs/s by name) as one line, by name, with a decimal below 10."""
    return ", ".join(f"{name} {rate:.{1 if rate < 10 else 0}f}" for name, rate in sorted(rates.items()))


@dataclass(frozen=True)
class Candidate:
    """A way of running the scorer that the calibration can switch to and time."""

    budget: int
    mode: Mode

    @property
    def name(self) -> str:
        return f"{self.mode.name} {self.budget}"


class Tunable(Protocol):
    """A scorer the calibration can reconfigure: ``CrossEncoderReranker``."""

    @property
    def shapes(self) -> FixedShapes | None:
        """The batch shapes it pads to; None: batches padded to their longest item."""
        ...

    def use_shapes(self, shapes: FixedShapes) -> None: ...

    def use_budget(self, budget: int) -> None: ...

    def use_single_rows(self, enabled: bool) -> bool:
        """Run a batch of one pair as one row (compiling for it), or padded like the others; returns
        whether it runs as one row now."""
        ...

    def use_mode(self, mode: Mode, *, required: bool) -> bool:
        """Switch to ``mode`` (compiling it, and scoring a warm-up batch, the first time); returns
        whether it runs in ``mode`` now."""
        ...

    def generated_gemm_share(self, tokens: int) -> float | None:
        """The speed of generated GEMM kernels as a share of oneDNN's on one layer's matrix multiplies of
        ``tokens`` rows, timed without compiling the whole model; None where it cannot be timed."""
        ...

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult: ...


def calibration_pairs(tokenizer: Any, count: int, seed: int = SEED) -> tuple[list[str], list[str]]:
    """``count`` synthetic pairs: queries of a few words, passages of 16-512 words spread log-uniformly,
    drawn from the whole words of ``tokenizer``'s vocabulary (so their token counts follow the words)."""
    vocabulary = [
        token
        for token in tokenizer.get_vocab()
        if token.isascii() and token.isalpha() and token.islower() and len(token) > 2
    ] or ["calibration", "pair", "token", "passage", "query"]
    words = np.array(sorted(vocabulary))
    random = np.random.default_rng(seed)
    queries, passages = [], []
    for _ in range(count):
        query_words = random.integers(*QUERY_WORDS, endpoint=True)
        passage_words = int(np.exp(random.uniform(np.log(PASSAGE_WORDS[0]), np.log(PASSAGE_WORDS[1]))))
        queries.append(" ".join(random.choice(words, query_words)))
        passages.append(" ".join(random.choice(words, passage_words)))
    return queries, passages


def device_kind(device: torch.device) -> str:
    """The device as calibration keys it: the GPU's name, or the CPU's model and matrix features."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    features = sorted(cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "avx512_vnni"})
    return f"cpu {model} [{' '.join(features)}] {torch.backends.cpu.get_cpu_capability()}"


def cache_key(model_path: str, device: torch.device, dtype: torch.dtype, threads: int, extra: str) -> str:
    """A file name for the tuning of this model on this kind of device, dtype and thread count."""
    path = Path(model_path)
    identity = str(path.resolve()) if path.exists() else model_path
    stamps = [
        f"{name}:{(path / name).stat().st_size}:{(path / name).stat().st_mtime_ns}"
        for name in ("config.json", "model.safetensors", "pytorch_model.bin")
        if (path / name).is_file()
    ]
    text = json.dumps(
        [
            CACHE_VERSION,
            identity,
            stamps,
            device_kind(device),
            describe_dtype(dtype),
            threads,
            extra,
            torch.__version__,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_cached(cache_file: Path) -> Tuning | None:
    try:
        values = json.loads(cache_file.read_text())
        return Tuning(**{**values, "source": "cached"})
    except (OSError, ValueError, TypeError):
        return None


def write_cached(cache_file: Path, tuning: Tuning) -> None:
    """Atomically, so that two workers starting at once never read half a file."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(tuning), indent=2))
        temporary.replace(cache_file)
    except OSError as error:  # a read-only state dir costs the next load a calibration, nothing more
        log.warning("cannot cache the calibration in %s: %s", cache_file, error)


def candidate_budgets(device: torch.device, threads: int) -> list[int]:
    if device.type == "cuda":
        return list(CUDA_BUDGETS)
    return [per_thread * max(2, threads) for per_thread in CPU_TOKENS_PER_THREAD]


def measure(
    tunable: Tunable, candidates: list[Candidate], queries: list[str], texts: list[str], rounds: int = ROUNDS
) -> dict[str, float]:
    """Pairs/s of each candidate, best of ``rounds`` rounds in alternating order."""
    rates: dict[str, float] = {}
    for round_index in range(rounds):
        order = candidates if round_index % 2 == 0 else list(reversed(candidates))
        for candidate in order:
            tunable.use_mode(candidate.mode, required=False)
            tunable.use_budget(candidate.budget)
            started = time.perf_counter()
            tunable.score(queries, texts)
            rate = len(queries) / max(time.perf_counter() - started, 1e-9)
            rates[candidate.name] = max(rates.get(candidate.name, 0.0), rate)
    return rates


def probe_rates(tunable: Tunable, tokenizer: Any, modes: list[Mode]) -> dict[Mode, float]:
    """Pairs/s of each mode on a few pairs, at the budget in use: a first timing."""
    queries, texts = calibration_pairs(tokenizer, PROBE_PAIRS)
    rates: dict[Mode, float] = {}
    for mode in modes:
        tunable.use_mode(mode, required=False)
        tunable.score(queries[:2], texts[:2])  # first-call costs stay out of the timing
        started = time.perf_counter()
        tunable.score(queries, texts)
        rates[mode] = PROBE_PAIRS / max(time.perf_counter() - started, 1e-9)
    return rates


def trial_pairs(tokenizer: Any, fastest_rate: float) -> tuple[list[str], list[str]]:
    """The pairs every candidate scores: about ``SECONDS_PER_TRIAL`` of work for the fastest mode at its
    first timing's rate, at least ``MIN_PAIRS``."""
    count = int(min(MAX_PAIRS, max(MIN_PAIRS, fastest_rate * SECONDS_PER_TRIAL)))
    return calibration_pairs(tokenizer, count, SEED + 1)


def affordable_candidates(
    modes: list[Mode], budgets: list[int], trial_seconds: dict[Mode, float]
) -> list[Candidate]:
    """Every budget in every mode, unless timing them all (a trial of each mode taking ``trial_seconds``)
    would take longer than ``CALIBRATION_SECONDS``: then every mode at the middle budget."""
    candidates = [Candidate(budget, mode) for mode in modes for budget in budgets]
    if sum(ROUNDS * trial_seconds[candidate.mode] for candidate in candidates) <= CALIBRATION_SECONDS:
        return candidates
    middle = budgets[(len(budgets) - 1) // 2]
    return [Candidate(middle, mode) for mode in modes]


def tune(
    tunable: Tunable,
    tokenizer: Any,
    *,
    budgets: list[int],
    modes: list[Mode],
    compile_required: bool,
    cache_file: Path | None,
) -> Tuning:
    """Measure the candidates (every budget in every mode that can run, and with fixed batch shapes the
    rows they pad to), switch ``tunable`` to the fastest and return it; with ``cache_file``, reuse a
    cached choice and cache a new one."""
    if len(budgets) == 1 and len(modes) == 1:
        mode = modes[0] if tunable.use_mode(modes[0], required=compile_required) else EAGER
        tunable.use_budget(budgets[0])
        attention, templates = mode.attention, mode.gemm_templates
        return Tuning(budgets[0], mode.compiled, "settings", attention=attention, gemm_templates=templates)
    shapes = tunable.shapes
    cached = read_cached(cache_file) if cache_file is not None else None
    if (
        cached is not None
        and cached.token_budget in {*budgets, *halvings(budgets)}
        and cached.mode in modes
        and (shapes is None) == (cached.full_rows is None)
        and tunable.use_mode(cached.mode, required=compile_required)
    ):
        if shapes is not None and cached.full_rows is not None:
            tunable.use_shapes(replace(shapes, full_rows=cached.full_rows))
        if cached.single_rows:
            tunable.use_single_rows(True)
        tunable.use_budget(cached.token_budget)
        return cached
    started = time.perf_counter()
    gemm_share: float | None = None
    if any(mode.gemm_templates for mode in modes):
        gemm_share = tunable.generated_gemm_share(budgets[0])
        if gemm_templates_left_out(gemm_share):
            modes = [mode for mode in modes if not mode.gemm_templates]
    # Every mode is set up (compiled, warmed up) before any timing; one that cannot run drops out.
    runnable = [mode for mode in modes if tunable.use_mode(mode, required=compile_required)]
    if not runnable:
        runnable = [EAGER]
        tunable.use_mode(EAGER, required=False)
    if shapes is not None:
        tunable.use_shapes(replace(shapes, full_rows=False))
    tunable.use_budget(budgets[0])
    probed = probe_rates(tunable, tokenizer, runnable)
    fastest_rate = max(probed.values())
    timed = [mode for mode in runnable if probed[mode] >= SCREEN_SHARE * fastest_rate]
    screened_out = {mode.name: rate for mode, rate in probed.items() if mode not in timed}
    queries, texts = trial_pairs(tokenizer, fastest_rate)
    trial_seconds = {mode: len(queries) / probed[mode] for mode in timed}
    candidates = affordable_candidates(timed, budgets, trial_seconds)
    rates = measure_closely(tunable, candidates, queries, texts)
    best = choose(candidates, rates)
    full_rows: bool | None = None
    drift: float | None = None
    full_rows_drift: float | None = None
    if shapes is not None:
        switch_to(tunable, best, compile_required)
        drift = composition_drift(tunable, queries, texts)
        full_rows = drift > INVARIANCE_TOLERANCE
        if full_rows:
            row_steps = rates, best
            tunable.use_shapes(replace(shapes, full_rows=True))
            rates = measure_closely(tunable, candidates, queries, texts)
            best = choose(candidates, rates)
            best = smallest_paying_budget(tunable, best, candidates, budgets, rates, queries, texts)
            switch_to(tunable, best, compile_required)
            full_rows_drift = composition_drift(tunable, queries, texts)
            if full_rows_drift > INVARIANCE_TOLERANCE:
                full_rows = False
                tunable.use_shapes(replace(shapes, full_rows=False))
                rates, best = row_steps
    switch_to(tunable, best, compile_required)
    single_rows: bool | None = None
    single_rows_drift: float | None = None
    if shapes is not None:
        single_rows = tunable.use_single_rows(True)
        if single_rows:
            single_rows_drift = composition_drift(tunable, queries, texts)
            single_rows = single_rows_drift <= INVARIANCE_TOLERANCE
            if not single_rows:
                tunable.use_single_rows(False)
    tuning = Tuning(
        best.budget,
        best.mode.compiled,
        "measured",
        rates,
        now(),
        best.mode.attention,
        best.mode.gemm_templates,
        full_rows,
        drift,
        full_rows_drift,
        single_rows,
        single_rows_drift,
        screened_out,
        gemm_share,
    )
    log.info(
        "calibrated in %.1fs on %d pairs: %s", time.perf_counter() - started, len(queries), tuning.summary()
    )
    if cache_file is not None:
        write_cached(cache_file, tuning)
    return tuning


def measure_closely(
    tunable: Tunable, candidates: list[Candidate], queries: list[str], texts: list[str]
) -> dict[str, float]:
    """Pairs/s of each candidate, with deciding rounds for those close to the best when they are quick."""
    rates = measure(tunable, candidates, queries, texts, ROUNDS if len(candidates) > 1 else 1)
    close = [
        candidate for candidate in candidates if rates[candidate.name] >= CLOSE_SHARE * max(rates.values())
    ]
    deciding_seconds = DECIDING_ROUNDS * sum(len(queries) / rates[candidate.name] for candidate in close)
    if len(close) > 1 and deciding_seconds <= DECIDING_SECONDS:
        more = measure(tunable, close, queries, texts, DECIDING_ROUNDS)
        rates.update({name: max(rate, rates[name]) for name, rate in more.items()})
    return rates


def halvings(budgets: list[int]) -> list[int]:
    """The budgets below the smallest candidate that full rows may choose."""
    return [min(budgets) >> times for times in range(1, HALVINGS + 1)]


def smallest_paying_budget(
    tunable: Tunable,
    best: Candidate,
    candidates: list[Candidate],
    budgets: list[int],
    rates: dict[str, float],
    queries: list[str],
    texts: list[str],
) -> Candidate:
    """With full rows, the fastest candidate once smaller budgets are timed in its mode too (adding their
    rates to ``rates`` and them to ``candidates``): the budgets below ``best``'s that were not timed (a
    model too slow to time every budget), then halvings of the smallest while it wins, ``HALVINGS`` at
    most. Full rows pad each length bucket's last batch in a call to the budget's row count, so a
    smaller budget can win on the calls a shard brings where a larger one won with row steps."""
    timed = {candidate.budget for candidate in candidates if candidate.mode == best.mode}
    smaller = [
        Candidate(budget, best.mode) for budget in budgets if budget < best.budget and budget not in timed
    ]
    if smaller:
        rates.update(measure(tunable, [*smaller, best], queries, texts))
        candidates.extend(smaller)
        best = choose(candidates, rates)
    floor = min(halvings(budgets))
    while best.budget == min(candidate.budget for candidate in candidates) and best.budget // 2 >= floor:
        half = Candidate(best.budget // 2, best.mode)
        rates.update(measure(tunable, [half, best], queries, texts))
        candidates.append(half)
        best = choose(candidates, rates)
        if best != half:
            break
    return best


def switch_to(tunable: Tunable, candidate: Candidate, compile_required: bool) -> None:
    tunable.use_mode(candidate.mode, required=compile_required)
    tunable.use_budget(candidate.budget)


def composition_drift(tunable: Tunable, queries: list[str], texts: list[str], seed: int = SEED) -> float:
    """The largest change of a pair's score between the pairs scored in one call and shuffled, in calls
    of random sizes (so each pair meets other neighbours, in batches of other row counts)."""
    whole = np.asarray(tunable.score(queries, texts).scores, dtype=np.float64)
    random = np.random.default_rng(seed)
    order = random.permutation(len(queries))
    pieces = np.zeros(len(queries), dtype=np.float64)
    start = 0
    while start < len(order):
        stop = min(len(order), start + int(random.integers(1, max(2, len(order) // 4), endpoint=True)))
        rows = order[start:stop]
        pieces[rows] = tunable.score([queries[row] for row in rows], [texts[row] for row in rows]).scores
        start = stop
    return float(np.abs(whole - pieces).max()) if len(queries) else 0.0


def choose(candidates: list[Candidate], rates: dict[str, float]) -> Candidate:
    """The fastest candidate; within 2% of it, eager before compiled (a compiled graph has costs the
    trials do not see: a recompile for a shape it has not met, single rows run as two), then the smaller
    budget (less memory, same speed)."""
    best = max(rates.values())
    close = [candidate for candidate in candidates if rates[candidate.name] >= 0.98 * best]
    return min(close, key=lambda candidate: (candidate.mode.compiled, candidate.budget))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
