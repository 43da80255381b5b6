"""Cross-encoders loaded by sentence-transformers' ``CrossEncoder``, scored by the shared local pipeline.

The pipeline (``pipeline``) cuts the distinct pairs of a call into growing chunks; a background thread
tokenizes chunk k + 1 while chunk k runs through the model in length-sorted batches under the token
budget. Plain sequence classifiers (nearly every cross-encoder) skip the library's per-batch
preprocessing: their pairs are tokenized in bulk, padded with numpy and fed straight to the Hugging Face
model (see ``cross_encoder_paths``); their last layer computes only the position their head reads
(``first_position``). In bf16/fp16 the matrix multiplies run in low precision while the residual stream
and the score head stay float32 (``mixed_precision``). Compiled on CPU in bf16, attention runs either
through SDPA's fused kernel or as two batched matmuls around a fused softmax (``cpu_attention``), and its
linear layers on oneDNN's kernels or on C++ GEMM kernels TorchInductor generates (``compiled``),
whichever the calibration measured faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.local.batch_shapes import FixedShapes
from worker.backends.local.calibration import EAGER, Mode, Tuning, cache_key, candidate_budgets, tune
from worker.backends.local.compiled import (
    CompiledLogits,
    generated_gemm_share,
    missing_cpu_compiler,
    wants_compile,
)
from worker.backends.local.cpu_attention import (
    MATMUL_ATTENTION,
    attention_of,
    restore_attention,
    use_batched_matmul_attention,
)
from worker.backends.local.cross_encoder_paths import (
    DirectPath,
    Features,
    ForwardPath,
    LibraryPath,
    direct_model,
)
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.distinct import Distinct, Pair, distinct_pairs
from worker.backends.local.first_position import prepare_sequence_classifier
from worker.backends.local.max_length import configured_max_length
from worker.backends.local.mixed_precision import compute_in
from worker.backends.local.pipeline import LocalReranker, Tokenized
from worker.backends.local.tokenizer_processes import tokenizer_helpers

log = logging.getLogger(__name__)

# Tokenizers without a declared limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000
# Two distinct pairs: one batch of two rows compiles the graph every later batch reuses.
_WARM_UP_QUERIES = ("warm-up query", "another warm-up query")
_WARM_UP_TEXTS = ("a short document to compile the model with", "and a second one")
# With single rows (``FixedShapes.single_rows``), one pair compiles the graph of one-row batches.
_WARM_UP_SINGLE = (("warm-up query",), ("a single document to compile the one-row graph with",))


class CrossEncoderModel:
    """A cross-encoder's pipeline steps: each distinct pair runs jointly through one forward pass of its
    path, and the model's activation of the logit is the score."""

    def __init__(self, cross_encoder: Any, target: ComputeTarget, tokenizer_processes: int = 0) -> None:
        self.cross_encoder = cross_encoder
        self.target = target
        self.max_length: int = cross_encoder.max_seq_length
        hf_model = direct_model(cross_encoder)
        self.path: ForwardPath = (
            DirectPath(hf_model, cross_encoder.tokenizer, self.max_length, target.device, tokenizer_processes)
            if hf_model is not None
            else LibraryPath(cross_encoder, self.max_length, target.device)
        )
        # Only the direct path pads lengths itself; the library's pipeline pads to each batch's longest.
        self.pads_to_fixed_shapes = isinstance(self.path, DirectPath)
        if isinstance(self.path, DirectPath) and target.shapes is not None:
            self.path.length_step = target.shapes.length_step
            self.path.single_rows = target.shapes.single_rows

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
        return distinct_pairs(queries, texts)

    def tokenize(self, items: list[Pair]) -> Tokenized:
        return self.path.tokenize(items)

    def collate(self, chunk: Tokenized, rows: np.ndarray) -> Features:
        return self.path.collate(chunk, rows)

    def forward(self, batch: Features) -> torch.Tensor:
        with compute_in(self.target.device, self.target.dtype):
            return self.path.logits(batch)

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        # Upcast before the activation so half-precision ties are broken, as CrossEncoder.predict does.
        scores: torch.Tensor = self.cross_encoder.activation_fn(outputs.float())
        return scores.reshape(-1).cpu().numpy()

    def describe(self, token_budget: int) -> dict[str, str]:
        activation = self.cross_encoder.activation_fn
        helpers = self.path.tokenizer.processes if isinstance(self.path, DirectPath) else 0
        return {
            "max_length": str(self.max_length),
            "activation": f"{type(activation).__module__}.{type(activation).__qualname__}",
            "token_budget": str(token_budget),
            "compiled": self.compiled_with(),
            "attention": self.attention(),
            "tokenizer_processes": str(helpers),
            "library": f"sentence-transformers {version('sentence-transformers')}",
        }

    @property
    def compiled(self) -> bool:
        return isinstance(self.path, DirectPath) and self.path.compiled is not None

    def compiled_with(self) -> str:
        if not isinstance(self.path, DirectPath) or self.path.compiled is None:
            return "no"
        if self.path.compiled.gemm_templates:
            return "TorchInductor, generated GEMM kernels"
        return "TorchInductor"

    def attention(self) -> str:
        """The attention implementation of a directly called model; the library's own otherwise."""
        if isinstance(self.path, DirectPath):
            return attention_of(self.path.model) or "unknown"
        return "sentence-transformers pipeline"


class CrossEncoderReranker(LocalReranker[CrossEncoderModel]):
    """The shared pipeline around a ``CrossEncoderModel``, which it can compile."""

    tuning: Tuning | None = None  # set at load: the calibration's choice of budget and compiling
    _compile_failed = False

    def __init__(self, spec: ModelSpec, model: CrossEncoderModel, target: ComputeTarget) -> None:
        super().__init__(spec, model, target)
        self._warm_modes: set[Mode] = set()  # compiled modes whose graph has been compiled
        self._failed_modes: set[Mode] = set()  # compiled modes that could not compile
        # The compiled models not in use, by whether they generate GEMM kernels.
        self._compiled_logits: dict[bool, CompiledLogits] = {}

    @property
    def path(self) -> ForwardPath:
        return self.model.path

    @property
    def compiled(self) -> bool:
        return self.model.compiled

    def use_mode(self, mode: Mode, *, required: bool) -> bool:
        """Switch to ``mode``: eager, or compiled with the attention and GEMM kernels it names (compiling
        it, and scoring a warm-up batch, the first time: each attention is its own graph, and generated GEMM
        kernels their own compiled model); returns whether it runs in ``mode`` now. Compiling follows
        ``compile``'s rules for ``required``; a model that failed to compile is not compiled again, and a
        mode that failed to compile is left out."""
        path = self.model.path
        if isinstance(path, DirectPath) and path.compiled is not None:
            # kept: switching back costs no second compile
            self._compiled_logits[path.compiled.gemm_templates] = path.compiled
            path.compiled = None
            restore_attention(path.model)
        if not mode.compiled:
            return True
        if not isinstance(path, DirectPath):
            self.compile(mode, required=required)  # raises if required: the library's pipeline
            return False
        if self._compile_failed or mode in self._failed_modes:
            return False
        if mode.attention == MATMUL_ATTENTION and not use_batched_matmul_attention(path.model):
            return False
        compiled = self._compiled_logits.get(mode.gemm_templates)
        if compiled is None and not self._compiled_logits:
            self.compile(mode, required=required)
            return self.compiled
        path.compiled = compiled or CompiledLogits(path.model, gemm_templates=mode.gemm_templates)
        if mode not in self._warm_modes:
            started = time.perf_counter()
            try:
                self._warm_up()  # compiles this mode's graphs off the clock
            except Exception as error:  # whatever TorchInductor raises; the mode compiled first stands
                path.compiled = None
                restore_attention(path.model)
                self._failed_modes.add(mode)
                log.warning("cannot compile %r in mode %s: %s", self.spec.name, mode.name, error)
                return False
            self._warm_modes.add(mode)
            seconds = time.perf_counter() - started
            log.info("compiled %r in mode %s in %.1fs", self.spec.name, mode.name, seconds)
        return True

    def generated_gemm_share(self, tokens: int) -> float | None:
        """The speed of generated GEMM kernels as a share of oneDNN's on a feed-forward block of this
        model's widths (``compiled.generated_gemm_share``); None where the model does not say its widths,
        runs through the library's pipeline, or the block does not compile."""
        path = self.model.path
        if not isinstance(path, DirectPath) or missing_cpu_compiler() is not None:
            return None  # no compile at all: ``use_mode`` says why, once
        # Widths as BERT-like configs name them; others are not probed.
        hidden = getattr(path.model.config, "hidden_size", None)
        intermediate = getattr(path.model.config, "intermediate_size", None)
        if not isinstance(hidden, int) or not isinstance(intermediate, int):
            return None
        try:
            return generated_gemm_share(hidden, intermediate, tokens, self.target.dtype)
        except Exception as error:  # whatever TorchInductor raises; the whole model's compile will tell
            log.warning("cannot time generated GEMM kernels for %r: %s", self.spec.name, error)
            return None

    def use_shapes(self, shapes: FixedShapes) -> None:
        super().use_shapes(shapes)
        if isinstance(self.path, DirectPath):
            self.path.single_rows = shapes.single_rows

    def use_single_rows(self, enabled: bool) -> bool:
        """Run a batch of one pair as one row from now on, or padded as ``shapes`` pads the others
        (``FixedShapes.single_rows``); a compiled model compiles its one-row graph now, on a warm-up
        pair. Returns whether a batch of one runs as one row now."""
        if self.shapes is None:
            return False
        self.use_shapes(replace(self.shapes, single_rows=enabled))
        if not enabled:
            return False
        try:
            self.score(*_WARM_UP_SINGLE)
        except Exception as error:  # whatever TorchInductor raises; single rows run as two, as before
            self.use_shapes(replace(self.shapes, single_rows=False))
            log.warning("cannot compile %r for one-row batches: %s", self.spec.name, error)
            return False
        return True

    def _warm_up(self) -> None:
        """Score the warm-up pairs: the batched graph's, and with single rows the one-row graph's."""
        self.score(_WARM_UP_QUERIES, _WARM_UP_TEXTS)
        if self.shapes is not None and self.shapes.single_rows:
            self.score(*_WARM_UP_SINGLE)

    def describe(self) -> dict[str, str]:
        described = super().describe()
        if self.tuning is not None:
            described["tuning"] = self.tuning.choice()
            described["calibration"] = self.tuning.summary()
        return described

    def compile(self, mode: Mode, *, required: bool) -> None:
        """Compile the forward pass now, with the attention the model is set to, on a warm-up batch.
        When it cannot be compiled: raise
        (``ModelLoadError``, or ``ConfigError`` for a model that only the library's own pipeline runs) if
        ``required``, else log a warning and stay uncompiled."""
        name = self.spec.name
        path = self.model.path
        if not isinstance(path, DirectPath):
            if required:
                raise ConfigError(
                    f"RERANK_COMPILE=on, but cross-encoder {name!r} runs through sentence-transformers' own "
                    "pipeline, which bulk-rerank does not compile; set RERANK_COMPILE=auto or off"
                )
            return
        started = time.perf_counter()
        path.compiled = CompiledLogits(path.model, gemm_templates=mode.gemm_templates)
        try:
            if self.target.device.type == "cpu" and (missing := missing_cpu_compiler()) is not None:
                raise RuntimeError(missing)
            self._warm_up()
        except Exception as error:  # whatever TorchInductor raises (no C++ compiler, an unsupported op)
            path.compiled = None
            restore_attention(path.model)
            self._compile_failed = True
            if required:
                raise ModelLoadError(
                    f"cannot compile cross-encoder {name!r} (RERANK_COMPILE=on): {error}"
                ) from error
            log.warning(
                "cannot compile cross-encoder %r; scoring it uncompiled (RERANK_COMPILE=off skips this): %s",
                name,
                error,
            )
            return
        self._warm_modes.add(mode)
        log.info(
            "compiled cross-encoder %r with TorchInductor in %.1fs (attention: %s)",
            name,
            time.perf_counter() - started,
            attention_of(path.model),
        )


def load_cross_encoder(spec: ModelSpec, settings: Settings) -> CrossEncoderReranker:
    """Load ``spec`` with sentence-transformers on the configured device and dtype."""
    from sentence_transformers import CrossEncoder

    target = resolve_compute(settings)
    path = spec.resolve_path()
    try:
        # Loaded in float32 whatever the compute dtype: mixed precision keeps some of it in float32.
        model = CrossEncoder(
            path,
            device=str(target.device),
            trust_remote_code=settings.trust_remote_code,
            max_length=settings.max_length,
            local_files_only=Path(path).is_dir(),
            model_kwargs={"dtype": torch.float32},
        )
    except Exception as error:  # any failure inside the library is a load failure of this model
        raise ModelLoadError(f"cannot load cross-encoder {spec.name!r}: {error}") from error
    model.eval()
    if model.num_labels != 1:
        raise ModelLoadError(
            f"cross-encoder {spec.name!r} has {model.num_labels} output labels; bulk-rerank needs a model "
            "with one relevance score per pair"
        )
    max_length = model.max_seq_length
    if max_length is None or max_length >= _NO_LIMIT:
        raise ModelLoadError(
            f"cross-encoder {spec.name!r} declares no maximum input length; set RERANK_MAX_LENGTH"
        )
    configured_max_length(settings, model.config, f"cross-encoder {spec.name!r}")
    prepare_for_scoring(model, target.dtype)
    helpers = tokenizer_helpers(settings.tokenizer_processes, target.device.type, torch.get_num_threads())
    reranker = CrossEncoderReranker(spec, CrossEncoderModel(model, target, helpers), target)
    reranker.tuning = tune_reranker(reranker, settings, path)
    return reranker


def tune_reranker(reranker: CrossEncoderReranker, settings: Settings, model_path: str) -> Tuning:
    """Choose the token budget, eager vs compiled and a compiled model's attention: what the settings fix,
    else by measurement (``calibration``), cached per model and machine kind under the state dir."""
    target = reranker.target
    measuring = settings.calibrate
    can_compile = isinstance(reranker.model.path, DirectPath)
    compiled_modes = [Mode(True)]
    if target.device.type == "cpu" and target.dtype != torch.float32:
        # On CPUs without AMX the batched-matmul attention won; with AMX, SDPA's kernel did, and generated
        # GEMM kernels keep scores batch-invariant where oneDNN's do not: measured, not assumed.
        compiled_modes = [Mode(True, MATMUL_ATTENTION), Mode(True), Mode(True, gemm_templates=True)]
    if settings.compile == "auto" and measuring and can_compile and target.device.type == "cpu":
        modes = [EAGER, *compiled_modes]
    elif wants_compile(settings.compile, target.device):
        modes = compiled_modes if measuring else compiled_modes[:1]
    else:
        modes = [EAGER]
    if settings.token_budget is not None or not measuring:
        budgets = [target.token_budget]
    else:
        budgets = candidate_budgets(target.device, torch.get_num_threads())
    cache_file = None
    if measuring:
        key = cache_key(
            model_path,
            target.device,
            target.dtype,
            torch.get_num_threads(),
            f"{budgets}{[mode.name for mode in modes]}{reranker.model.max_length}",
        )
        cache_file = settings.resolved_state_dir / "calibration" / f"{key}.json"
    tuning = tune(
        reranker,
        reranker.model.cross_encoder.tokenizer,
        budgets=budgets,
        modes=modes,
        compile_required=settings.compile == "on",
        cache_file=cache_file,
    )
    log.info("cross-encoder %r runs with %s", reranker.spec.name, tuning.summary())
    return tuning


def prepare_for_scoring(model: Any, dtype: torch.dtype) -> None:
    """Plain sequence classifiers get mixed precision (their score head is known) and skip the last
    layer's work on positions their head does not read; anything else runs wholly in ``dtype``."""
    hf_model = direct_model(model)
    if hf_model is None:
        if dtype != torch.float32:
            model.to(dtype)
        return
    prepare_sequence_classifier(hf_model, dtype, model.num_labels)
