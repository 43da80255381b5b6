"""A Hugging Face model's forward pass compiled by TorchInductor.

Eager PyTorch on a CPU runs each layer as a string of separate ops (casts, bias adds, GELU, LayerNorm,
residual adds), each one a pass over memory, and sends bf16 linears to a generic GEMM. Compiled with
``freezing`` on, the weights become constants prepacked for oneDNN and the elementwise chains fuse into
the linears or into generated C++ loops: on 2 AVX512-BF16 cores (MiniLM-L6 shape) bf16 went from 115 to
~146 pairs/s and float32 from 46 to ~95.

On an AVX2-only CPU (Zen 3, 2 cores) compiling gained nothing: float32 is the only fast dtype there,
and eager float32 already runs its matrix multiplies (MKL) near the measured matmul peak (~100 GFLOP/s,
MiniLM-L6 shape 38-42 pairs/s eager and compiled alike), so ``auto`` skips the ~40 s compile there.

Sizes are dynamic, so one graph serves every batch width and length; Dynamo still specialises size 1,
so a single-row batch is sent as two copies of its row instead of compiling a second graph (~20 s) —
unless the caller asks for ``single_rows``: then one row runs as one, through a graph compiled for it
on its first call (the calibration asks where that graph scores a pair as the batched one does).

With ``gemm_templates``, TorchInductor generates C++ GEMM kernels for the linear layers (on AMX, tile
micro-kernels with the bias and the elementwise ops that follow fused into them); oneDNN runs only the
layers those kernels cannot. They are not timed against oneDNN's per layer, although oneDNN wins some:
oneDNN's AMX kernels block the reduction by the row count, and with the per-layer timing, row steps and
one-row graphs moved bf16 scores on AMX (the one-row graph's timing presumably picked oneDNN for layers
where the batched graph had not: inferred, as the generated kernels alone moved none). With them alone a
pair scored the same in batches of any rows there, one row included, so batches need no padding to their
bucket's full rows. Whether the mode pays depends on the CPU and the model, so the calibration measures
it as a mode of its own (and checks its batch invariance where it is the fastest); it compiles slower and
is its own ``torch.compile`` object, as Dynamo does not recompile for a changed Inductor setting.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from core.settings import Compile
from worker.backends.local.device import cpu_has_avx512

# Rows of the smallest batch the compiled graph sees; smaller batches are padded with copies.
MIN_ROWS = 2


def wants_compile(setting: Compile, device: torch.device) -> bool:
    """Whether RERANK_COMPILE asks for compiling a model on ``device`` (auto: on CPUs with AVX-512)."""
    if setting == "auto":
        return device.type == "cpu" and cpu_has_avx512()
    return setting == "on"


def missing_cpu_compiler() -> str | None:
    """Why TorchInductor cannot build CPU kernels on this machine (no working C++ compiler), or None.
    Asked before compiling: a compile finds out only after tracing and lowering the model, tens of
    seconds in (a slim image without g++, say)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch that moved it: the compile itself will tell
        return None
    try:
        get_cpp_compiler()
    except Exception as error:  # InvalidCxxCompiler, naming what it searched
        return str(error) or type(error).__name__
    return None


# Inductor settings of a compile with generated GEMM kernels: the C++ templates alone (a linear layer they
# cannot run falls back to oneDNN). With "CPP,ATEN" they were timed against oneDNN per layer and per graph.
GEMM_TEMPLATE_OPTIONS: dict[str, str | int | bool] = {
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP",
}


# The probe's timing: best of this many runs, each of at least this long.
PROBE_RUNS = 3
PROBE_RUN_SECONDS = 0.1


def generated_gemm_share(hidden: int, intermediate: int, rows: int, dtype: torch.dtype) -> float:
    """How fast TorchInductor's generated GEMM kernels run a feed-forward block of these widths (linear,
    GELU, linear) on ``rows`` tokens, as a share of oneDNN's speed (above 1: the generated ones are faster).

    Compiling a whole model with generated kernels takes tens of seconds to minutes; this block compiles
    both ways in seconds. The kernels are written for AMX tiles: without AMX they ran whole models at a
    quarter to a fifth of oneDNN's speed, and the calibration need not compile a mode that cannot win."""
    timings = []
    for options in (None, GEMM_TEMPLATE_OPTIONS):
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            block = nn.Sequential(nn.Linear(hidden, intermediate), nn.GELU(), nn.Linear(intermediate, hidden))
            block = block.eval().to(dtype)
            inputs = torch.randn(rows, hidden, dtype=dtype)
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            compiled: Any = torch.compile(block, options=dict(options) if options else None)
            compiled(inputs)
            timings.append(_seconds_per_call(functools.partial(compiled, inputs)))
    onednn, generated = timings
    return onednn / generated


def _seconds_per_call(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    calls_per_run = max(1, int(PROBE_RUN_SECONDS / max(time.perf_counter() - started, 1e-9)))
    best = float("inf")
    for _ in range(PROBE_RUNS):
        started = time.perf_counter()
        for _ in range(calls_per_run):
            call()
        best = min(best, (time.perf_counter() - started) / calls_per_run)
    return best


class CompiledLogits:
    """``model(**features).logits`` through ``torch.compile``; compiles (once) on the first call."""

    def __init__(self, model: nn.Module, *, gemm_templates: bool = False) -> None:
        self.gemm_templates = gemm_templates
        options: dict[str, Any] | None = dict(GEMM_TEMPLATE_OPTIONS) if gemm_templates else None
        self.compiled: Any = torch.compile(model, dynamic=True, options=options)

    def __call__(self, features: dict[str, torch.Tensor], *, single_rows: bool = False) -> torch.Tensor:
        """The logits of ``features``' rows; with ``single_rows``, a batch of one row runs as one."""
        rows = next(iter(features.values())).shape[0]
        least = 1 if single_rows else MIN_ROWS
        if rows < least:  # contiguous copies: a stride-0 view would fail a guard and recompile too
            features = {
                name: tensor.expand(least, *tensor.shape[1:]).contiguous()
                for name, tensor in features.items()
            }
        # Patched per call, not set globally, so it also covers recompiles and nothing else in the process.
        with torch._inductor.config.patch(freezing=True):
            logits: torch.Tensor = self.compiled(**features, return_dict=True).logits
        return logits[:rows]
