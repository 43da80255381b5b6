"""A contender scores the benchmark pairs in a process of its own, so its peak memory is its own.

The parent starts ``python -m benchmarks.contender KIND ...`` per contender, all with the same CPU pinning
and thread count. The child loads its model with its library's defaults, warms up on the same few pairs
as every other contender and reports ready; then each ``score`` line on its stdin makes it score all the
pairs (``score N``: the first N) in one call and report the seconds taken. Keeping the processes alive
lets the parent interleave the contenders' rounds, so a neighbour's burst of CPU use on a shared machine
hits them all alike.
Messages go to stdout as lines starting with ``BENCH:``; anything else a library prints is ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# sentence-transformers' accelerated backends, run from their own environment (``benchmarks.peers``):
# ONNX Runtime as exported, its O3-optimized graph and its dynamically quantized int8 graph, and OpenVINO.
PEER_KINDS = ("st-onnx", "st-onnx-o3", "st-onnx-int8", "st-openvino")
# "ours-flag": ours through the ``flag:`` backend (FlagEmbedding's loading and pair format), raw logits.
KINDS = ("ours", "ours-flag", "sentence-transformers", "flagembedding", *PEER_KINDS)
# Kinds that load FlagEmbedding and score with its raw logit (the others: the cross-encoder's sigmoid).
FLAG_KINDS = ("flagembedding", "ours-flag")
WARMUP_PAIRS = 16  # untimed, the same pairs for every contender: first-call costs stay out of the rounds
MARK = "BENCH:"

Pairs = list[tuple[str, str]]
Scorer = Callable[[Pairs], np.ndarray]


# A traceback's closing line: "ValueError: ...", "optimum.exporters.ExportError: ...".
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
FAILURE_CHARS = 300
LOG_TAIL_CHARS = 4000


class ContenderStopped(RuntimeError):
    """A contender's process exited before an expected event: ``reason`` names its error in a line, the
    message adds the tail of its log."""

    def __init__(self, kind: str, event: str, log: str) -> None:
        self.reason = f"contender {kind} stopped before {event!r}: {failure_line(log)}"
        super().__init__(f"{self.reason}\n{log[-LOG_TAIL_CHARS:]}")


def failure_line(log: str) -> str:
    """The line of a contender's output that names its error (the last exception line, else the last
    non-empty line), cut to ``FAILURE_CHARS`` from its start."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    if not lines:
        return "no output"
    named = [line for line in lines if ERROR_LINE.match(line)]
    line = named[-1] if named else lines[-1]
    return line if len(line) <= FAILURE_CHARS else line[: FAILURE_CHARS - 3] + "..."


@dataclass(frozen=True)
class ContenderRun:
    kind: str
    dtype: str
    output: str  # "sigmoid" (the cross-encoder's activation) or "logit"
    pairs: int
    round_seconds: tuple[float, ...]  # one timed call over all pairs per round
    load_seconds: float
    threads: int
    baseline_rss_bytes: int  # after imports, before the model
    peak_rss_bytes: int  # the process's high-water mark, loading included
    gpu_peak_bytes: int | None
    padded_ratio: float | None = None  # ours: padded over real tokens of its last call of every pair

    @property
    def seconds(self) -> float:
        """The best (fastest) round: the one least slowed by other work on the machine."""
        return min(self.round_seconds)


class Contender:
    """One contender process: started, loaded and warmed up, then scoring once per ``score_once``."""

    def __init__(
        self,
        kind: str,
        model_dir: Path,
        corpus_file: Path,
        work_dir: Path,
        device: str,
        dtype: str,
        cpus: list[int],
        timeout_s: float,
        compile_mode: str = "auto",
        python: Path | None = None,
        calibration: Path | None = None,
    ) -> None:
        """``python``: the interpreter to run the contender with (default: this one). ``calibration``: a
        calibration cache (``calibration_dir`` of another contender) this one loads instead of measuring
        its own."""
        work_dir.mkdir(parents=True, exist_ok=True)
        self.calibration_dir = work_dir / "state" / "calibration"
        if calibration is not None:
            shutil.copytree(calibration, self.calibration_dir, dirs_exist_ok=True)
        self.kind = kind
        self.dtype = dtype
        self.timeout_s = timeout_s
        self.scores_file = work_dir / f"{kind}-{dtype}-scores.npy"
        self.log_file = work_dir / f"{kind}-{dtype}.log"
        self.round_seconds: list[float] = []
        self._ready: dict[str, Any] | None = None
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(python or sys.executable),
                    "-m",
                    "benchmarks.contender",
                    kind,
                    f"--model={model_dir}",
                    f"--corpus={corpus_file}",
                    f"--scores={self.scores_file}",
                    f"--device={device}",
                    f"--dtype={dtype}",
                    f"--cpus={','.join(map(str, cpus))}",
                    f"--work={work_dir}",
                ],
                cwd=REPO,
                # Ours calibrates afresh in every benchmark run (the state dir holds its cache).
                env={
                    **child_env(len(cpus), device, compile_mode),
                    "RERANK_STATE_DIR": str(self.calibration_dir.parent),
                },
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    @property
    def tuning(self) -> str | None:
        """Ours' tuning as it reported it when ready (None for the others)."""
        self.wait_ready()
        assert self._ready is not None
        return self._ready.get("tuning")

    def wait_ready(self) -> None:
        if self._ready is None:
            self._ready = self._receive("ready")

    def score_once(self, record: bool = True, pairs: int | None = None) -> float:
        """Score all pairs (or the first ``pairs``) once; return the seconds the call took, and with
        ``record`` keep them as one of this contender's rounds."""
        self.wait_ready()
        self._send("score" if pairs is None else f"score {pairs}")
        seconds = float(self._receive("scored")["seconds"])
        if record:
            self.round_seconds.append(seconds)
        return seconds

    def batch_composition_change(self) -> float:
        """The largest change of a pair's score when its pairs are scored in other batch compositions."""
        self.wait_ready()
        self._send("invariance")
        return float(self._receive("invariance")["max_change"])

    def onednn_kernels(self) -> dict[str, int]:
        """oneDNN primitive and implementation -> calls, while scoring a few pairs."""
        self.wait_ready()
        self._send("kernels")
        return {str(name): int(count) for name, count in self._receive("kernels")["kernels"].items()}

    def best_seconds(self) -> float:
        """The fastest recorded round."""
        return min(self.round_seconds)

    def finish(self) -> tuple[ContenderRun, np.ndarray]:
        """End the process; return its figures and the scores of its last round."""
        self.wait_ready()
        if not self.round_seconds:
            raise RuntimeError(f"contender {self.kind} never scored")
        self._send("exit")
        done = self._receive("done")
        self.process.wait(self.timeout_s)
        run = ContenderRun(round_seconds=tuple(self.round_seconds), **done["run"])
        return run, np.load(self.scores_file)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Contender:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def _receive(self, event: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(0.0, remaining))
            if not readable:
                self.close()
                raise TimeoutError(f"contender {self.kind} sent no {event!r} within {self.timeout_s:.0f}s")
            line = self.process.stdout.readline()
            if line.startswith(MARK):
                message: dict[str, Any] = json.loads(line[len(MARK) :])
                if message["event"] == event:
                    return message
            elif line == "":  # end of output: the process has exited
                raise ContenderStopped(self.kind, event, self.log_file.read_text(errors="replace"))


def child_env(threads: int, device: str, compile_mode: str = "auto") -> dict[str, str]:
    """The environment of every benchmark child: no RERANK_* settings but RERANK_COMPILE, offline, the
    same thread count, and on CUDA one GPU (else FlagEmbedding spreads over all of them)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    if device.startswith("cuda"):
        visible = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        env["CUDA_VISIBLE_DEVICES"] = visible
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "RERANK_COMPILE": compile_mode,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


# --- the child process ------------------------------------------------------------------------------


def pin(cpus: list[int]) -> int:
    """Pin this process to ``cpus`` and use one torch thread per CPU; returns the thread count."""
    import torch

    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(len(cpus))
    return torch.get_num_threads()


def current_rss_bytes() -> int:
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def load_ours(model_dir: Path, device: str, dtype: str, backend: str = "cross-encoder") -> tuple[Scorer, str]:
    from core.model_spec import ModelSpec
    from core.settings import Settings
    from worker.backends import load_reranker

    reranker = load_reranker(ModelSpec.parse(f"{backend}:{model_dir}"), Settings(device=device, dtype=dtype))

    def score(pairs: Pairs) -> np.ndarray:
        batcher = reranker.batcher
        real, padded = batcher.real_tokens, batcher.padded_tokens
        scores = reranker.score([query for query, _ in pairs], [text for _, text in pairs]).scores
        OURS_TOKENS.update(real=batcher.real_tokens - real, padded=batcher.padded_tokens - padded)
        return scores

    description = reranker.describe()
    OURS_TUNING.append(description.get("calibration", description.get("tuning", "")))
    return score, description["dtype"]


# Ours' tuning (the calibration's choice), sent with the ready message: one message per request, as a
# line read ahead into the pipe's buffer would be missed by the parent's select().
OURS_TUNING: list[str] = []


# Real and padded tokens of ours' latest call: padding waste is work the FLOP count does not see.
OURS_TOKENS: dict[str, int] = {}


def load_sentence_transformers(model_dir: Path, device: str) -> tuple[Scorer, str]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), device=device)

    def score(pairs: Pairs) -> np.ndarray:
        return np.asarray(model.predict(pairs, show_progress_bar=False), dtype=np.float32)

    return score, str(next(model.parameters()).dtype).removeprefix("torch.")


def load_peer(kind: str, model_dir: Path, work_dir: Path) -> tuple[Scorer, str]:
    """A sentence-transformers ``CrossEncoder`` on its ONNX Runtime or OpenVINO backend, exported from a
    private copy of the model (the exports are written next to the weights)."""
    import shutil

    from sentence_transformers import CrossEncoder

    copy = work_dir / f"{kind}-model"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model_dir, copy)
    if kind == "st-openvino":
        model = CrossEncoder(str(copy), backend="openvino")
        dtype = openvino_precision(model)
    else:
        model = CrossEncoder(str(copy), backend="onnx")
        dtype = "float32"
        if kind != "st-onnx":
            from sentence_transformers import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

            model.save_pretrained(str(copy))
            if kind == "st-onnx-o3":
                export_optimized_onnx_model(model, "O3", str(copy))
                file_name = "onnx/model_O3.onnx"
            else:
                isa = "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"
                export_dynamic_quantized_onnx_model(model, isa, str(copy))
                # qint8 for AVX-512 VNNI, quint8 (unsigned activations) for AVX2
                exported = sorted((copy / "onnx").glob(f"model_*int8_{isa}.onnx"))
                if not exported:
                    raise RuntimeError(f"no int8 export for {isa} in {copy / 'onnx'}")
                file_name, dtype = f"onnx/{exported[0].name}", "int8"
            model = CrossEncoder(str(copy), backend="onnx", model_kwargs={"file_name": file_name})

    def score(pairs: Pairs) -> np.ndarray:
        return np.asarray(model.predict(pairs, show_progress_bar=False), dtype=np.float32)

    return score, dtype


def openvino_precision(model: Any) -> str:
    """The inference precision OpenVINO chose for the compiled model (bf16 where the CPU has it)."""
    try:
        request = model.model.request  # optimum-intel keeps the compiled model (or a request of it)
        compiled = request if hasattr(request, "get_property") else request.get_compiled_model()
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # the attribute layout of optimum-intel's wrapper differs between versions
        return "ov-auto"
    name = str(precision.get_type_name())
    return {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}.get(name, name)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def load_flagembedding(model_dir: Path, device: str) -> tuple[Scorer, str]:
    from FlagEmbedding import FlagReranker

    model = FlagReranker(str(model_dir))  # its defaults: fp32, batch size 128, max length 512

    def score(pairs: Pairs) -> np.ndarray:
        return np.asarray(model.compute_score([list(pair) for pair in pairs]), dtype=np.float32)

    dtype = "float16" if model.use_fp16 and device != "cpu" else "float32"
    return score, dtype


def onednn_kernels(scorer: Scorer, pairs: Pairs) -> dict[str, int]:
    """How many times each oneDNN primitive and implementation ran while scoring ``pairs``
    (``matmul brg_matmul:avx512_core_amx`` on AMX, for example), from oneDNN's verbose log, which it
    writes to the process's standard output: that is sent to a file meanwhile."""
    import tempfile
    from collections import Counter

    import torch

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                scorer(pairs)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    counts: Counter[str] = Counter()
    for line in lines:
        fields = line.split(",")
        if "exec" in fields and len(fields) > fields.index("exec") + 3:
            at = fields.index("exec")
            counts[f"{fields[at + 2]} {fields[at + 3]}"] += 1
    return dict(counts.most_common())


# Calls of these sizes, in turn, score the shuffled pairs in the second composition.
RECOMPOSED_CALL_SIZES = (1, 7, 33, 2, 150, 19)


INVARIANCE_PAIRS = 3000


def batch_composition_change(scorer: Scorer, pairs: Pairs, seed: int = 5) -> float:
    """The largest change of a pair's score between two batch compositions: all pairs in one call
    (length-sorted batches of the usual budget), and the pairs shuffled and scored in calls of other
    sizes, so each pair meets other neighbours, other padding and other batch widths. At most
    ``INVARIANCE_PAIRS`` pairs: calls of a few pairs each are slow on a GPU, and that many already
    meet every batch width."""
    pairs = pairs[:INVARIANCE_PAIRS]
    whole = np.asarray(scorer(pairs), dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(pairs))
    recomposed = np.empty(len(pairs), dtype=np.float64)
    start, turn = 0, 0
    while start < len(pairs):
        rows = order[start : start + RECOMPOSED_CALL_SIZES[turn % len(RECOMPOSED_CALL_SIZES)]]
        recomposed[rows] = scorer([pairs[row] for row in rows])
        start, turn = start + len(rows), turn + 1
    return float(np.abs(whole - recomposed).max())


def say(event: str, **fields: Any) -> None:
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--work", type=Path, required=True, help="scratch space (the peers' model exports)")
    args = parser.parse_args(argv)

    threads = pin([int(cpu) for cpu in args.cpus.split(",")])
    import pyarrow.parquet as pq
    import torch

    if args.kind in FLAG_KINDS:
        import FlagEmbedding  # noqa: F401 - imported before the baseline, like the other libraries
    import sentence_transformers  # noqa: F401

    if args.kind in PEER_KINDS:
        import optimum  # noqa: F401 - their backend library, also before the baseline

    table = pq.read_table(args.corpus, columns=["query", "text"])
    pairs = list(zip(table.column("query").to_pylist(), table.column("text").to_pylist(), strict=True))
    baseline = current_rss_bytes()
    started = time.perf_counter()
    scorer, dtype = {
        "ours": lambda: load_ours(args.model, args.device, args.dtype),
        "ours-flag": lambda: load_ours(args.model, args.device, args.dtype, backend="flag"),
        "sentence-transformers": lambda: load_sentence_transformers(args.model, args.device),
        "flagembedding": lambda: load_flagembedding(args.model, args.device),
        **{kind: partial(load_peer, kind, args.model, args.work) for kind in PEER_KINDS},
    }[args.kind]()
    load_seconds = time.perf_counter() - started
    scorer(pairs[:WARMUP_PAIRS])
    on_cuda = args.device.startswith("cuda")
    say("ready", tuning=OURS_TUNING[0] if OURS_TUNING else None)

    scores = None  # of the last call that scored every pair
    timed_tokens: dict[str, int] = {}  # ours' real and padded tokens in that call
    for command in sys.stdin:
        verb, _, count = command.strip().partition(" ")
        if verb == "kernels":
            say("kernels", kernels=onednn_kernels(scorer, pairs[:64]))
            continue
        if verb == "invariance":
            say("invariance", max_change=batch_composition_change(scorer, pairs))
            continue
        if verb != "score":
            break
        batch = pairs[: int(count)] if count else pairs
        if on_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        batch_scores = scorer(batch)
        if on_cuda:
            torch.cuda.synchronize()
        say("scored", seconds=time.perf_counter() - started)
        if len(batch) == len(pairs):
            scores = batch_scores
            timed_tokens = dict(OURS_TOKENS)

    if scores is not None:
        np.save(args.scores, np.asarray(scores, dtype=np.float32))
    run = {
        "kind": args.kind,
        "dtype": dtype,
        "output": "logit" if args.kind in FLAG_KINDS else "sigmoid",
        "pairs": len(pairs),
        "load_seconds": load_seconds,
        "threads": threads,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "gpu_peak_bytes": int(torch.cuda.max_memory_allocated()) if on_cuda else None,
        "padded_ratio": timed_tokens["padded"] / timed_tokens["real"] if timed_tokens.get("real") else None,
    }
    say("done", run=run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
