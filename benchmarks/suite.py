"""Local scoring speed: our cross-encoder scorer against sentence-transformers and FlagEmbedding.

For each model (built locally with the shape of ms-marco-MiniLM-L-6-v2 and of bge-reranker-v2-m3), every
contender scores the same pairs in its own process with the same CPU pinning and thread count: ours
(``load_reranker``, the workers' own code path) at RERANK_DTYPE=auto and at the other dtype (bf16 only
where the device multiplies it natively), ``CrossEncoder.predict`` and ``FlagReranker.compute_score`` with
their defaults. The contenders take turns
in interleaved rounds and each one's best round counts, so that other work on a shared machine slows
them alike. Printed per contender: pairs/s, tokens/s, how many times faster ours is, load time, peak RSS
(and GPU memory on CUDA) and agreement with the float32 reference (``CrossEncoder.predict``). Then the
device's measured matmul peak, our model FLOP utilization and every contender's share of the peak, the
same kind of corpus through submit.py and one worker against the in-process scorer, and on CUDA the
out-of-memory adaptation of the token budget. Built models are cached under data/bench-models.

Examples:
  python scripts/bench.py --smoke        # seconds: a tiny random model, 60 pairs; checks the script runs
  python scripts/bench.py --quick        # about a minute: the MiniLM shape, 60 pairs, a smoke run
  python scripts/bench.py                # the numbers: both shapes, more pairs, three rounds of MiniLM
  python scripts/bench.py --models minilm-l6 --pairs 6000 --rounds 3 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.agreement import agreement
from benchmarks.contender import (
    INVARIANCE_PAIRS,
    PEER_KINDS,
    REPO,
    Contender,
    ContenderRun,
    ContenderStopped,
    child_env,
)
from benchmarks.corpus import BenchCorpus, synthetic_corpus, whole_words
from benchmarks.flops import forward_flops
from benchmarks.gpu_busy import GpuBusy, GpuBusySampler
from benchmarks.host_ceiling import tokenizer_pairs_per_s
from benchmarks.machine import cpu_model
from benchmarks.models import SHAPES, BuiltModel, bert_tokenizer, build_model
from benchmarks.oom_demo import OomDemo
from benchmarks.peak import measure_peaks

if TYPE_CHECKING:  # the worker's model libraries load when a run needs them, not on import
    from worker.backends.local.pair_tokens import PairTokenizer
from benchmarks.peers import installed_python, peers_python
from benchmarks.pipeline import PipelineFleet, PipelineRun
from benchmarks.report import ContenderRow, contender_table, oom_lines, verdict
from core.settings import Compile
from worker.backends.local.device import cpu_has_native_bf16

DOCS_PER_QUERY = 30
# Pairs the score head is fitted to: the trained MiniLM body is cheap to run; the random bge-m3-shaped
# body only needs its logits spread, and each of its forward passes is 30 times the work.
HEAD_PAIRS = {"minilm-l6": 256, "bge-m3": 32, "tiny": 32}
TIMEOUT_S = 3600.0
# Agreement with the float32 reference that ours must keep: mean per-query Spearman, top-10 sets unchanged.
SPEARMAN_TARGET = 0.998
TOP_K_TARGET = 0.97
REFERENCE = "sentence-transformers"
LABELS = {
    "ours": "ours: load_reranker(...).score",
    "ours-flag": "ours, flag: backend",
    "sentence-transformers": "sentence-transformers CrossEncoder.predict",
    "flagembedding": "FlagEmbedding FlagReranker.compute_score",
    "st-onnx": "CrossEncoder(backend=onnx).predict",
    "st-onnx-o3": "CrossEncoder(backend=onnx) O3-optimized",
    "st-onnx-int8": "CrossEncoder(backend=onnx) int8 dyn-quant",
    "st-openvino": "CrossEncoder(backend=openvino).predict",
}


SHORT = {
    "ours": "ours",
    "ours-flag": "ours flag:",
    "sentence-transformers": "CrossEncoder.predict",
    "flagembedding": "FlagReranker.compute_score",
    "st-onnx": "ONNX",
    "st-onnx-o3": "ONNX O3",
    "st-onnx-int8": "ONNX int8",
    "st-openvino": "OpenVINO",
}


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A progress line with the seconds since the benchmark started."""
    print(f"   [{time.perf_counter() - _STARTED:4.0f}s] {message}", flush=True)


@dataclass(frozen=True)
class ModelPlan:
    pairs: int
    rounds: int  # interleaved rounds per contender; the best round is reported
    other_dtype: bool  # also run ours at the dtype auto did not pick
    # Measure ours' batch invariance (calls of a few pairs each: slow for a large model on a GPU).
    invariance: bool = True


@dataclass(frozen=True)
class Plan:
    models: dict[str, ModelPlan]
    pipeline_pairs: int
    shard_pairs: int
    # Quick runs start every process at once to finish in time; their load times then overlap.
    concurrent_start: bool
    # RERANK_COMPILE for ours and the pipeline worker: quick runs have no time for a ~30 s compile.
    compile_mode: Compile = "auto"
    # When set, the pipeline corpus is cut (whole queries, at most pipeline_pairs) to about this many
    # seconds of scoring at ours' in-process rate from the rounds, so a slower machine is not kept waiting.
    pipeline_seconds: float | None = None
    # Also run ours through the flag: backend (FlagEmbedding's loading and pair format), at each dtype.
    flag_backend: bool = False
    oom_seconds: float = 60.0  # how long the out-of-memory demo scores (CUDA only)


# Smoke runs: a tiny random model through every step (two pipeline shards), in seconds. Ours runs at
# float32 too: bf16 rounding scrambles the ranking of a tiny random model, float32 must match the reference.
SMOKE_PLAN = Plan({"tiny": ModelPlan(60, 1, True)}, 60, 30, concurrent_start=True, compile_mode="off")

PLANS = {
    ("smoke", "cpu"): SMOKE_PLAN,
    ("smoke", "cuda"): SMOKE_PLAN,
    ("quick", "cpu"): Plan(
        {"minilm-l6": ModelPlan(60, 1, False)}, 60, 2000, concurrent_start=True, compile_mode="off"
    ),
    # A nightly corpus is large: the pipeline's fixed costs (submit.py's start-up, validation, sharding,
    # the final merge) are measured over a minute of scoring, in shards of 2000 pairs. Three
    # rounds of MiniLM: with two, ours' first round ran 15-17% below its second in two of three runs
    # (its first pass over the corpus's batch shapes), so one slow moment decided its figure.
    ("full", "cpu"): Plan(
        {"minilm-l6": ModelPlan(1200, 3, True), "bge-m3": ModelPlan(30, 1, False)},
        pipeline_pairs=15000,
        shard_pairs=2000,
        concurrent_start=False,
        pipeline_seconds=60.0,
    ),
    ("quick", "cuda"): Plan(
        {"minilm-l6": ModelPlan(4000, 1, False), "bge-m3": ModelPlan(800, 1, False)},
        4000,
        2000,
        concurrent_start=True,
    ),
    ("full", "cuda"): Plan(
        {"minilm-l6": ModelPlan(30000, 3, True), "bge-m3": ModelPlan(6000, 2, True)},
        pipeline_pairs=60000,
        shard_pairs=2000,
        concurrent_start=False,
    ),
}
# scripts/gpu_check.sh: what a GPU machine borrowed for a few minutes must show, both dtypes of ours
# through both local backends, the pipeline in shards long enough to keep a GPU busy, a short OOM demo.
GPU_CHECK_PLAN = Plan(
    {"minilm-l6": ModelPlan(10000, 2, True), "bge-m3": ModelPlan(1500, 1, True, invariance=False)},
    pipeline_pairs=100000,
    shard_pairs=10000,
    concurrent_start=True,
    flag_backend=True,
    oom_seconds=20.0,
)
PLANS[("gpu-check", "cuda")] = GPU_CHECK_PLAN
PLANS[("gpu-check", "cpu")] = GPU_CHECK_PLAN  # to try the script out on a CPU with --pairs


@dataclass(frozen=True)
class Setup:
    """What every part of the run shares."""

    device: str
    cpus: list[int]
    auto_dtype: str
    cache_dir: Path
    work: Path
    compile_mode: Compile
    peers_python: Path | None = None  # the ONNX/OpenVINO peers' interpreter; None: peers not run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="a smoke run that finishes in about a minute")
    modes.add_argument(
        "--smoke",
        action="store_true",
        help="every step on a tiny random-weight model and 60 pairs, in seconds: checks that the benchmark "
        "runs; its figures and verdicts say nothing about real models",
    )
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(SHAPES)} (default: per mode)")
    parser.add_argument("--pairs", type=int, help="pairs per model and for the pipeline (default: per mode)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per contender (default: per mode)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--cpus", help="CPUs to pin every contender to, e.g. 0-3 or 0,1 (default: all allowed)"
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the submit.py + worker run")
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument(
        "--peers",
        action="store_true",
        help="run the ONNX Runtime / OpenVINO peers, installing their environment if needed (full runs "
        "install it by default; quick and smoke runs use it only when it is installed)",
    )
    peers.add_argument("--no-peers", action="store_true", help="leave the ONNX Runtime / OpenVINO peers out")
    modes.add_argument(
        "--gpu-check",
        action="store_true",
        help="the figures scripts/gpu_check.sh prints: both shapes, ours through the cross-encoder: and "
        "flag: backends at both dtypes, the pipeline in 10,000-pair shards with the GPU's busy share, a 20 s "
        "out-of-memory demo",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=REPO / "data" / "bench-models", help="where built models are kept"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--no-oom-demo", action="store_true", help="on CUDA, leave out the out-of-memory back-off demo"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = (
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    cpus = parse_cpus(args.cpus) if args.cpus else sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus)  # the pipeline's children inherit it
    mode = "smoke" if args.smoke else "quick" if args.quick else "gpu-check" if args.gpu_check else "full"
    plan = PLANS[(mode, device)]
    keys = args.models.split(",") if args.models else list(plan.models)
    started = time.perf_counter()
    print(f"$ {' '.join(['python', *sys.argv])}")
    figures: dict[str, object] = {"mode": mode, "device": device, "cpus": cpus}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as scratch:
        setup = Setup(
            device,
            cpus,
            resolved_auto_dtype(device),
            args.cache_dir,
            Path(scratch),
            plan.compile_mode,
            peer_interpreter(args, mode, device),
        )
        print(machine_line(setup))
        peaks: dict[str, float] = {}
        for index, key in enumerate(keys):
            model_plan = plan.models.get(key, ModelPlan(240, 1, False))
            model_plan = ModelPlan(
                args.pairs or model_plan.pairs,
                args.rounds or model_plan.rounds,
                model_plan.other_dtype,
                model_plan.invariance,
            )
            with_pipeline = index == 0 and not args.no_pipeline
            pipeline_pairs = args.pairs or plan.pipeline_pairs
            figures[key], pipeline = bench_model(
                setup,
                build_model(SHAPES[key], args.cache_dir, HEAD_PAIRS[key], log=progress),
                model_plan,
                peaks,
                plan,
                pipeline_pairs if with_pipeline else None,
                quick=mode not in ("full", "gpu-check"),
            )
            if pipeline is not None:
                figures["pipeline"] = pipeline
        figures["matmul_peak_gflops"] = peaks
        if not args.no_oom_demo:
            figures["oom_demo"] = asdict(bench_oom(setup, plan.oom_seconds))
    for index, key in enumerate(keys):
        print_targets(figures, key, with_pipeline=index == 0)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))
    return 0


def bench_model(
    setup: Setup,
    built: BuiltModel,
    model_plan: ModelPlan,
    peaks: dict[str, float],
    plan: Plan,
    pipeline_pairs: int | None,
    quick: bool,
) -> tuple[dict[str, object], dict[str, object] | None]:
    """Every contender on ``built``; with ``pipeline_pairs``, also the pipeline run on this model.

    The matmul peak is measured after each of the contenders' rounds (after the last one only in a quick
    run), with the same pinning, and ``peaks`` keeps the best seen so far: on a machine shared with other
    work, the best is the closest to what the hardware can do, so the utilization is not flattered by a
    peak measured in a busy moment (README: the peak swings between measurements on some machines)."""
    corpus = bench_corpus(model_plan.pairs)
    corpus_file = corpus.write_parquet(setup.work / f"{built.shape.key}-corpus.parquet")
    tokenize = pair_tokenizer(built)
    lengths = tokenize(corpus.pairs).lengths
    flops = forward_flops(built.shape, lengths)
    print(f"\n== {built.description}")
    if built.tokenizer_note:
        print(f"   tokenizer: {built.tokenizer_note}")
    print(
        f"   {len(corpus)} pairs ({len(corpus.query_slices())} queries x {DOCS_PER_QUERY} documents), "
        f"{lengths.mean():.1f} tokens/pair (median {np.median(lengths):.0f}, max {lengths.max()}), "
        f"{np.mean(lengths >= 512):.1%} truncated at 512; {flops / len(corpus) / 1e9:.2f} GFLOP/pair; "
        f"best of {model_plan.rounds} interleaved round(s) per contender"
    )
    variants = [("ours", setup.auto_dtype, f"{LABELS['ours']} (auto: {setup.auto_dtype})")]
    if model_plan.other_dtype:
        other = "float32" if setup.auto_dtype != "float32" else "bfloat16"
        if other == "bfloat16" and bf16_is_emulated(setup.device):
            print(
                "   ours at RERANK_DTYPE=bfloat16 not run: this CPU has no native bf16 matmuls (AMX or "
                "AVX512-BF16), so torch emulates them far below float32 (see the bf16 matmul peak below)"
            )
        else:
            variants.append(("ours", other, f"{LABELS['ours']} (RERANK_DTYPE={other})"))
    if plan.flag_backend:
        variants += [
            ("ours-flag", dtype, f"{LABELS['ours-flag']} (RERANK_DTYPE={dtype})")
            for kind, dtype, _ in list(variants)
            if kind == "ours"
        ]
    variants += [(REFERENCE, "auto", LABELS[REFERENCE]), ("flagembedding", "auto", LABELS["flagembedding"])]
    if setup.peers_python is not None:
        variants += [(kind, "auto", LABELS[kind]) for kind in PEER_KINDS]
    work = setup.work / built.shape.key
    left_out: dict[str, str] = {}
    with ExitStack() as stack:
        contenders: dict[str, Contender] = {}
        progress(f"starting {len(variants)} contender processes{' at once' if plan.concurrent_start else ''}")
        for kind, dtype, label in variants:
            contenders[label] = stack.enter_context(
                Contender(
                    kind,
                    built.path,
                    corpus_file,
                    work,
                    setup.device,
                    dtype,
                    setup.cpus,
                    TIMEOUT_S,
                    setup.compile_mode,
                    python=setup.peers_python if kind in PEER_KINDS else None,
                )
            )
            if not plan.concurrent_start:
                ready_or_left_out(contenders, label, left_out)
        pipeline = None
        if pipeline_pairs is not None:
            # Equal sizes mean the same pairs (one seed), so the in-process side can be ours from above.
            ours = contenders[variants[0][2]]
            pipeline = stack.enter_context(
                PipelineSection(
                    setup, built, pipeline_pairs, plan.shard_pairs, ours, pipeline_pairs == model_plan.pairs
                )
            )
        for label in list(contenders):
            ready_or_left_out(contenders, label, left_out)
        if pipeline is not None:
            pipeline.wait_ready()
        labels = list(contenders)
        for round_index in range(model_plan.rounds):
            # Rotate the order so that no contender always runs first (or right after another).
            for label in labels[round_index % len(labels) :] + labels[: round_index % len(labels)]:
                seconds = contenders[label].score_once()
                progress(f"round {round_index + 1}: {label}: {len(corpus) / seconds:.1f} pairs/s")
            if not quick or round_index == model_plan.rounds - 1:
                progress("measuring the matmul peak")
                for dtype, gflops in measure_peaks(setup.device, setup.cpus, quick=quick).items():
                    peaks[dtype] = max(peaks.get(dtype, 0.0), gflops)
        tokenizer_rate = tokenizer_pairs_per_s(tokenize, corpus)
        helpers_rate = helped_tokenizer_pairs_per_s(built, corpus)
        pipeline_figures = None
        if pipeline is not None:
            best = len(corpus) / contenders[variants[0][2]].best_seconds()
            pipeline_figures = pipeline.measure(pipeline_size(plan, pipeline.max_pairs, best))
        invariance = {}
        if model_plan.invariance:
            progress("ours: the same pairs in two batch compositions")
            invariance = {
                ours_key(kind, dtype): contenders[label].batch_composition_change()
                for kind, dtype, label in variants
                if kind in OURS_KINDS and label in contenders
            }
        kernels = {
            dtype: contenders[label].onednn_kernels() if setup.device == "cpu" else {}
            for kind, dtype, label in variants
            if kind == "ours"
        }
        # The flag: backend has no calibration of its own: only the cross-encoder's tuning is shown.
        tunings = {dtype: str(contenders[label].tuning) for kind, dtype, label in variants if kind == "ours"}
        runs = {label: contender.finish() for label, contender in contenders.items()}
    figures = report_model(built, corpus, lengths, flops, runs, peaks, tokenizer_rate, helpers_rate)
    figures["tuning"] = tunings
    figures["left_out"] = left_out
    figures["onednn_kernels"] = kernels
    for dtype, counts in kernels.items():
        if setup.device == "cpu":
            listed = ", ".join(f"{name} x{count}" for name, count in counts.items()) or "none (MKL or ATen)"
            print(f"   oneDNN kernels, ours at {dtype} (ONEDNN_VERBOSE over 64 pairs): {listed}")
    for dtype, tuning in tunings.items():
        print(f"   ours at {dtype}: {tuning}")
    padding = {
        run.dtype: run.padded_ratio for run, _ in runs.values() if run.kind == "ours" and run.padded_ratio
    }
    print(
        "   padding, ours: padded tokens per real token "
        + ", ".join(f"{ratio:.3f} at {dtype}" for dtype, ratio in padding.items())
        + " (length-sorted batches under the token budget)"
    )
    figures["batch_composition_change"] = invariance
    if invariance:
        print(
            "   batch invariance, the largest change of a pair's score between two batch compositions (up to "
            f"{INVARIANCE_PAIRS} pairs in one call; shuffled, in calls of 1-150 pairs): "
            + ", ".join(f"ours {key} {change:.1e}" for key, change in invariance.items())
        )
    if pipeline is not None and pipeline_figures is not None:
        pipeline.report(pipeline_figures)
    return figures, None if pipeline_figures is None else asdict(pipeline_figures)


OURS_KINDS = ("ours", "ours-flag")


def ours_key(kind: str, dtype: str) -> str:
    """How the figures name one of ours' variants: its dtype, after ``flag:`` for the flag backend."""
    return dtype if kind == "ours" else f"flag: {dtype}"


def peer_interpreter(args: argparse.Namespace, mode: str, device: str) -> Path | None:
    """The peers' interpreter, or None (with the reason printed) when they are not run."""
    if args.no_peers:
        return None
    if device != "cpu":
        print("   ONNX Runtime / OpenVINO peers not run: they are CPU contenders here (no onnxruntime-gpu)")
        return None
    if args.peers or mode == "full":
        try:
            return peers_python(progress)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            print(f"   ONNX Runtime / OpenVINO peers not run: {error}")
            return None
    found = installed_python()
    if found is None:
        print(
            "   ONNX Runtime / OpenVINO peers not run: their environment is not installed (a full run "
            "installs it, as does --peers)"
        )
    return found


def ready_or_left_out(contenders: dict[str, Contender], label: str, left_out: dict[str, str]) -> None:
    """Wait until the contender ``label`` is ready. A peer that fails to load (an export its library
    cannot do for this model, say) or ours through the flag: backend (a second view of ours, not the
    figure the targets are read from) is left out of the run with its reason; any other failure is raised."""
    contender = contenders[label]
    try:
        contender.wait_ready()
    except ContenderStopped as error:
        if contender.kind not in (*PEER_KINDS, "ours-flag"):
            raise
        contender.close()
        del contenders[label]
        reason = error.reason
        left_out[label] = reason
        print(f"   {label}: left out, it failed to load: {reason} (log: {contender.log_file})")


def meets_agreement_bar(found: dict[str, float] | None) -> bool:
    """Whether a contender's agreement with the float32 reference (None: it is the reference) meets the
    targets ours is held to."""
    return found is None or (
        found["spearman_mean"] >= SPEARMAN_TARGET and found["top_k_same"] >= TOP_K_TARGET
    )


def bf16_is_emulated(device: str) -> bool:
    """True on a CPU without native bf16 matmuls, where torch emulates them far below float32."""
    return device == "cpu" and not cpu_has_native_bf16()


def pipeline_size(plan: Plan, max_pairs: int, pairs_per_s: float) -> int:
    """Pairs for the pipeline run: whole queries, about ``plan.pipeline_seconds`` of scoring at
    ``pairs_per_s`` (at least two shards' worth, at most ``max_pairs``), or all of them."""
    if plan.pipeline_seconds is None:
        return max_pairs
    wanted = max(2 * plan.shard_pairs, pairs_per_s * plan.pipeline_seconds)
    return min(max_pairs, DOCS_PER_QUERY * round(wanted / DOCS_PER_QUERY))


def utilization_line(rows: list[ContenderRow], flops: float, peaks: dict[str, float], dtype: str) -> str:
    """Each contender's model FLOP/s as a share of ``dtype``'s peak, and the speedup over the reference
    that ours would reach at 100% of it."""
    peak = peaks[dtype] * 1e9
    shares = [(f"{SHORT[row.run.kind]} {row.run.dtype}", flops / row.run.seconds / peak) for row in rows]
    reference = next(flops / row.run.seconds / peak for row in rows if row.label == LABELS[REFERENCE])
    return (
        f"model FLOP/s of each contender over the {dtype} peak: "
        + ", ".join(f"{name} {share:.0%}" for name, share in shares)
        + f"; at 100% of it ours would be {1 / reference:.1f}x {SHORT[REFERENCE]}"
    )


def report_model(
    built: BuiltModel,
    corpus: BenchCorpus,
    lengths: np.ndarray,
    flops: float,
    runs: dict[str, tuple[ContenderRun, np.ndarray]],
    peaks: dict[str, float],
    tokenizer_rate: float,
    helpers_rate: tuple[int, float] | None,
) -> dict[str, object]:
    reference = runs[LABELS[REFERENCE]][1]
    queries = corpus.query_slices()
    rows = []
    for label, (run, scores) in runs.items():
        comparable = 1.0 / (1.0 + np.exp(-scores.astype(np.float64))) if run.output == "logit" else scores
        rows.append(
            ContenderRow(
                label=label,
                run=run,
                tokens=int(lengths.sum()),
                agreement=None if label == LABELS[REFERENCE] else agreement(reference, comparable, queries),
            )
        )
    ours = rows[0]
    print(contender_table(rows, ours.pairs_per_s))
    print(
        "   agreement is with CrossEncoder.predict's float32 scores, compared as the cross-encoder's "
        "sigmoid: FlagReranker's raw logits are passed through it, and FlagReranker cuts long pairs its own "
        "way (the query to 3/4 of 512 tokens, then the passage)"
    )
    print(
        "   matmul peak, GFLOP/s (best square matmul, same pinning, best measured so far): "
        + ", ".join(f"{dtype} {gflops:.0f}" for dtype, gflops in peaks.items())
    )
    model_flops_per_s = flops / ours.run.seconds
    utilization = {dtype: model_flops_per_s / (peak * 1e9) for dtype, peak in peaks.items()}
    print(
        f"   MFU, ours at {ours.run.dtype}: {model_flops_per_s / 1e9:.1f} GFLOP/s of model matmuls = "
        + ", ".join(f"{share:.0%} of the {dtype} peak" for dtype, share in utilization.items())
        + " (the full forward pass's matmuls, padding not counted; ours skips most of the last layer's)"
    )
    if ours.run.dtype in peaks:
        print("   " + utilization_line(rows, flops, peaks, ours.run.dtype))
    print(
        f"   ours' tokenizer alone (the same pairs, this machine's CPUs): {tokenizer_rate:.0f} pairs/s, the "
        f"most the host can feed ours; ours at {ours.run.dtype} reached "
        f"{ours.pairs_per_s / tokenizer_rate:.0%} of it"
    )
    if helpers_rate is not None:
        processes, rate = helpers_rate
        print(
            f"   ours' tokenizer with {processes} helper processes (RERANK_TOKENIZER_PROCESSES, a GPU "
            f"worker's default is its CPU threads but one): {rate:.0f} pairs/s, {rate / tokenizer_rate:.2f}x"
        )
    return {
        "description": built.description,
        "pairs": len(corpus),
        "tokens_per_pair": float(lengths.mean()),
        "model_gflop": flops / 1e9,
        "mfu": utilization,
        "tokenizer_pairs_per_s": tokenizer_rate,
        "tokenizer_helpers": None
        if helpers_rate is None
        else {"processes": helpers_rate[0], "pairs_per_s": helpers_rate[1]},
        "contenders": [
            {
                "label": row.label,
                **asdict(row.run),
                "seconds": row.run.seconds,
                "pairs_per_s": row.pairs_per_s,
                "tokens_per_s": row.tokens_per_s,
                "ours_speedup": ours.pairs_per_s / row.pairs_per_s,
                "agreement": None if row.agreement is None else asdict(row.agreement),
            }
            for row in rows
        ],
    }


@dataclass(frozen=True)
class PipelineFigures:
    run: PipelineRun
    before_seconds: float  # the in-process scorer on the same pairs, right before the pipeline run
    after_seconds: float  # and right after it
    in_process_pairs_per_s: float
    wall_ratio: float
    ledger_ratio: float
    gpu_busy: GpuBusy | None = None  # on CUDA, sampled over the pipeline run


class PipelineSection:
    """The pipeline run next to an in-process scorer on the same corpus, started in the background.

    The in-process rate is measured right before and right after the pipeline run, on the same pairs,
    so a change in the machine's background load affects both sides alike. ``tuned`` is ours from the
    rounds, loaded: the worker and the in-process scorer load its calibration (as a fleet's workers share
    their machine's) rather than each measure their own while the other loads, so both run the same tuning
    and the comparison is of the machinery alone. It is also the in-process scorer when it scores these
    same pairs (``shares_pairs``).
    """

    def __init__(
        self,
        setup: Setup,
        built: BuiltModel,
        n_pairs: int,
        shard_pairs: int,
        tuned: Contender,
        shares_pairs: bool,
    ) -> None:
        self.setup = setup
        self.built = built
        self.shard_pairs = shard_pairs
        self.corpus = bench_corpus(n_pairs)
        self.max_pairs = len(self.corpus)
        self.work = setup.work / "pipeline"
        self.work.mkdir(parents=True, exist_ok=True)
        corpus_file = self.corpus.write_parquet(self.work / f"corpus-{self.max_pairs}.parquet")
        tuned.wait_ready()
        calibration = tuned.calibration_dir if tuned.calibration_dir.is_dir() else None
        self.fleet = PipelineFleet(
            f"cross-encoder:{built.path}",
            self.work,
            setup.device,
            setup.auto_dtype,
            setup.cpus,
            TIMEOUT_S,
            setup.compile_mode,
            calibration=calibration,
        )
        self.owns_in_process = not shares_pairs
        self.in_process = tuned
        if not shares_pairs:
            self.in_process = Contender(
                "ours",
                built.path,
                corpus_file,
                self.work,
                setup.device,
                setup.auto_dtype,
                setup.cpus,
                TIMEOUT_S,
                setup.compile_mode,
                calibration=calibration,
            )

    def wait_ready(self) -> None:
        self.in_process.wait_ready()
        self.fleet.wait_ready()

    def measure(self, n_pairs: int) -> PipelineFigures:
        """Time the first ``n_pairs`` (whole queries) in-process, through the pipeline, in-process again."""
        self.wait_ready()
        self.corpus = self.corpus.head(n_pairs // DOCS_PER_QUERY)
        corpus_file = self.corpus.write_parquet(self.work / f"corpus-{len(self.corpus)}.parquet")
        progress(
            f"pipeline: {len(self.corpus)} pairs in-process, then through submit.py, then in-process again"
        )
        before = self.in_process.score_once(record=False, pairs=len(self.corpus))
        with GpuBusySampler() if self.setup.device == "cuda" else nullcontext() as sampler:
            run = self.fleet.submit(corpus_file, self.shard_pairs)
        after = self.in_process.score_once(record=False, pairs=len(self.corpus))
        progress("pipeline done")
        in_process = len(self.corpus) / ((before + after) / 2)
        return PipelineFigures(
            run=run,
            before_seconds=before,
            after_seconds=after,
            in_process_pairs_per_s=in_process,
            wall_ratio=run.wall_pairs_per_s / in_process,
            ledger_ratio=run.ledger_pairs_per_s / in_process,
            gpu_busy=sampler.result if sampler is not None else None,
        )

    def report(self, figures: PipelineFigures) -> None:
        run, pairs = figures.run, len(self.corpus)
        print(
            f"\n== pipeline: {pairs} pairs through scripts/submit.py and one scripts/workers.py worker "
            f"({self.built.shape.label}, RERANK_DTYPE={self.setup.auto_dtype}), against ours in-process on "
            "the same pairs right before and after"
        )
        print(
            f"   {run.shards} shard(s) of up to {self.shard_pairs} pairs; in-process: "
            f"{figures.in_process_pairs_per_s:.1f} pairs/s ({pairs / figures.before_seconds:.1f} before, "
            f"{pairs / figures.after_seconds:.1f} after)"
        )
        print(
            f"   wall clock, submit.py --wait launch to exit: {run.wall_seconds:.1f}s = "
            f"{run.wall_pairs_per_s:.1f} pairs/s = {figures.wall_ratio:.0%} of in-process"
        )
        print(
            f"   ledger, summed shard-attempt wall seconds: {run.ledger_wall_seconds:.1f}s = "
            f"{run.ledger_pairs_per_s:.1f} pairs/s = {figures.ledger_ratio:.0%} of in-process "
            f"(of which forward passes {run.ledger_device_seconds:.1f}s)"
        )
        print(
            f"   the worker ran as {', '.join(run.devices) or '(not recorded)'}; it and the in-process "
            f"scorer load the calibration ours measured before the rounds ({self.in_process.tuning})"
        )
        if self.setup.device == "cuda":
            busy = figures.gpu_busy
            print(
                f"   submit.py --wait launch to exit: {busy.line()}"
                if busy is not None
                else "   GPU busy share not sampled: nvidia-smi not found"
            )
            if run.worker_span_seconds > 0:
                print(
                    f"   the worker's forward passes (CUDA events) cover {run.ledger_device_seconds:.1f}s of "
                    f"its {run.worker_span_seconds:.1f}s span from the first shard's start to the last one's "
                    f"finish = {run.ledger_device_seconds / run.worker_span_seconds:.0%}"
                )

    def __enter__(self) -> PipelineSection:
        return self

    def __exit__(self, *_: object) -> None:
        if self.owns_in_process:
            self.in_process.close()
        self.fleet.stop()


def bench_oom(setup: Setup, seconds: float) -> OomDemo:
    print()
    if setup.device != "cuda":
        demo = OomDemo(skipped="no CUDA device")
    else:
        built = build_model(SHAPES["minilm-l6"], setup.cache_dir, HEAD_PAIRS["minilm-l6"])
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.oom_demo", f"--model={built.path}", f"--seconds={seconds}"],
            cwd=REPO,
            env=child_env(len(setup.cpus), setup.device),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the out-of-memory demo failed:\n{completed.stderr[-4000:]}")
        demo = oom_demo_from_json(completed.stdout.splitlines()[-1])
    for line in oom_lines(demo):
        print(line)
    return demo


def oom_demo_from_json(text: str) -> OomDemo:
    from benchmarks.oom_demo import BudgetPoint

    values = json.loads(text)
    values["history"] = tuple(BudgetPoint(**point) for point in values["history"])
    return OomDemo(**values)


def bench_corpus(n_pairs: int) -> BenchCorpus:
    """The benchmark's pairs: the same seed everywhere, so equal sizes mean equal corpora."""
    return synthetic_corpus(
        whole_words(bert_tokenizer()), max(1, n_pairs // DOCS_PER_QUERY), DOCS_PER_QUERY, seed=11
    )


def print_targets(figures: dict[str, object], key: str | None, with_pipeline: bool = True) -> None:
    model = figures.get(key) if key else None
    if not isinstance(model, dict):
        return
    rows = model["contenders"]
    ours = rows[0]
    smoke = " (a smoke run on a tiny random model: not a verdict on anything)" if key == "tiny" else ""
    print(f"\ntargets ({key}, ours at RERANK_DTYPE=auto = {ours['dtype']}){smoke}:")
    for kind, name in (
        ("sentence-transformers", "CrossEncoder.predict"),
        ("flagembedding", "FlagReranker.compute_score"),
    ):
        speedup = next(row["ours_speedup"] for row in rows if row["kind"] == kind)
        print(verdict(f">= 4x the pairs/s of {name}", f"{speedup:.2f}x", speedup >= 4.0))
    peers = [row for row in rows if row["kind"] in PEER_KINDS]
    if peers:
        fastest = max(peers, key=lambda row: row["pairs_per_s"])
        ours_top, peer_top = ours["agreement"]["top_k_same"], fastest["agreement"]["top_k_same"]
        print(
            verdict(
                f">= 1.5x the fastest ONNX/OpenVINO peer ({SHORT[fastest['kind']]})",
                f"{fastest['ours_speedup']:.2f}x",
                fastest["ours_speedup"] >= 1.5,
            )
        )
        print(
            f"  (top-10 same: ours {ours_top:.1%}, {SHORT[fastest['kind']]} {peer_top:.1%}; "
            f"Spearman: ours {ours['agreement']['spearman_mean']:.5f}, "
            f"{SHORT[fastest['kind']]} {fastest['agreement']['spearman_mean']:.5f})"
        )
    for label, reason in model.get("left_out", {}).items():
        print(f"  ({label} left out of this verdict: it failed to load: {reason})")
    others = [row for row in rows if row["kind"] != "ours"]
    quickest = max(others, key=lambda row: row["pairs_per_s"])
    print(
        verdict(
            f"ours the fastest contender (next: {SHORT[quickest['kind']]})",
            f"{quickest['ours_speedup']:.2f}x",
            quickest["ours_speedup"] > 1.0,
        )
    )
    agreeing = [row for row in others if meets_agreement_bar(row["agreement"])]
    if agreeing and len(agreeing) < len(others):
        # A quantized peer can be faster by giving up the ranking; the same verdict among those that keep it.
        quickest = max(agreeing, key=lambda row: row["pairs_per_s"])
        print(
            verdict(
                f"ours fastest of those meeting agreement (next: {SHORT[quickest['kind']]})",
                f"{quickest['ours_speedup']:.2f}x",
                quickest["ours_speedup"] > 1.0,
            )
        )
    mfu = model["mfu"]["bfloat16"]
    if bf16_is_emulated(str(figures.get("device"))):
        # An emulated bf16 peak is no yardstick: judge against the peak of the dtype ours ran at.
        mfu = model["mfu"][ours["dtype"]]
        name = f">= 40% of the {ours['dtype']} matmul peak (MFU; no native bf16)"
    else:
        name = ">= 40% of the measured bf16 matmul peak (MFU)"
    print(verdict(name, f"{mfu:.0%}", mfu >= 0.4))
    for row in rows:
        if row["kind"] == "ours":
            found = row["agreement"]
            spearman, top = found["spearman_mean"], found["top_k_same"]
            print(
                verdict(
                    f"mean Spearman >= {SPEARMAN_TARGET} vs fp32 ({row['dtype']})",
                    f"{spearman:.5f}",
                    spearman >= SPEARMAN_TARGET,
                )
            )
            print(
                verdict(
                    f"top-10 unchanged in >= {TOP_K_TARGET:.0%} of queries ({row['dtype']})",
                    f"{top:.1%}",
                    top >= TOP_K_TARGET,
                )
            )
    for dtype, change in model.get("batch_composition_change", {}).items():
        print(
            verdict(f"a pair's score batch-invariant at {dtype} (<= 1e-5)", f"{change:.1e}", change <= 1e-5)
        )
    pipeline = figures.get("pipeline") if with_pipeline else None
    if isinstance(pipeline, dict) and figures.get("mode") in ("quick", "smoke"):
        print(
            f"  pipeline vs in-process: not judged in a {figures['mode']} run, whose few pairs leave "
            "start-up dominant"
        )
    elif isinstance(pipeline, dict):
        for basis in ("wall", "ledger"):
            ratio = pipeline[f"{basis}_ratio"]
            print(verdict(f"pipeline >= 95% of in-process ({basis})", f"{ratio:.0%}", ratio >= 0.95))


def pair_tokenizer(built: BuiltModel, processes: int = 0) -> PairTokenizer:
    """Ours' tokenizer for ``built``, cutting pairs where the model does (with ``processes`` helpers)."""
    from transformers import AutoTokenizer

    from worker.backends.local.pair_tokens import PairTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built.path))
    return PairTokenizer(tokenizer, min(tokenizer.model_max_length, built.shape.positions), processes)


def helped_tokenizer_pairs_per_s(built: BuiltModel, corpus: BenchCorpus) -> tuple[int, float] | None:
    """Ours' tokenizer with helper processes (as many as the CPUs but one, at least 2) over ``corpus``, or
    None where the corpus is too small to be split among them."""
    from worker.backends.local.tokenizer_processes import MIN_PAIRS_PER_PROCESS

    processes = max(2, (os.cpu_count() or 1) - 1)
    if len(corpus) < processes * MIN_PAIRS_PER_PROCESS:
        return None
    helped = pair_tokenizer(built, processes)
    try:
        return processes, tokenizer_pairs_per_s(helped, corpus)
    finally:
        helped.close()


def resolved_auto_dtype(device: str) -> str:
    import torch

    from core.settings import Settings
    from worker.backends.local.device import describe_dtype, resolve_dtype

    return describe_dtype(resolve_dtype(Settings(dtype="auto"), torch.device(device)))


def machine_line(setup: Setup) -> str:
    import torch

    from core.settings import Settings
    from worker.backends.local.compiled import wants_compile
    from worker.backends.local.device import cpu_flags, cpu_has_amx, resolve_compute

    flags = cpu_flags()
    where = f"GPU {torch.cuda.get_device_name(0)}" if setup.device == "cuda" else f"CPU {cpu_model()}"
    torch.set_num_threads(len(setup.cpus))
    budget = resolve_compute(Settings(device=setup.device)).token_budget
    compiled = wants_compile(setup.compile_mode, torch.device(setup.device))
    return (
        f"{where}; pinned to CPUs {setup.cpus}; torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}); AMX {'yes' if cpu_has_amx() else 'no'}, "
        f"avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}; RERANK_DTYPE=auto resolves to "
        f"{setup.auto_dtype} on {setup.device}, default token budget {budget}; ours and the pipeline worker "
        f"at RERANK_COMPILE={setup.compile_mode} ({'' if compiled else 'not '}compiled with TorchInductor); "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return sorted(set(cpus))
