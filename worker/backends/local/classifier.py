"""Sequence classifiers with graded labels (C > 1 classes, 0 the least relevant), loaded with transformers'
``AutoModelForSequenceClassification`` and scored by the shared local pipeline.

The score of a pair is the expected label ``sum(p_i * i) / (C - 1)`` with p the softmax of the logits, or
with the spec option ``label=N`` the probability of class N (``core.graded_relevance``). The model reads
the (query, document) pair as its tokenizer encodes a pair (truncating the longer side, the document in
practice, to fit), or with ``template=...`` one text per pair joined by that template
(``core.pair_template``) and encoded as a single sequence: what vLLM's ``/classify`` receives, so the
``vllm-classify`` kind scores a served copy of the model alike. A model with one label is a cross-encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ModelLoadError, ModelSpecError
from core.graded_relevance import graded_scores
from core.model_spec import ModelSpec
from core.pair_template import PairTemplate, pair_template
from core.settings import Settings
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.distinct import Distinct, Pair, distinct_pairs
from worker.backends.local.first_position import prepare_sequence_classifier
from worker.backends.local.max_length import configured_max_length
from worker.backends.local.mixed_precision import compute_in
from worker.backends.local.pair_tokens import PairTokenizer, TokenizedPairs, pad_rows
from worker.backends.local.pipeline import LocalReranker
from worker.backends.local.tokenizer_processes import tokenizer_helpers

# Tokenizers without a declared limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000

Features = dict[str, torch.Tensor]


class ClassifierModel:
    """A graded classifier's pipeline steps: one forward pass per distinct pair, the softmax of its
    logits reduced to one score."""

    pads_to_fixed_shapes = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_length: int,
        target: ComputeTarget,
        *,
        num_labels: int,
        template: PairTemplate | None,
        label: int | None,
        tokenizer_processes: int = 0,
    ) -> None:
        self.model = model
        self.target = target
        self.max_length = max_length
        self.num_labels = num_labels
        self.template = template
        self.label = label
        # Its own Rust backend, shared with no one.
        self.tokenizer = PairTokenizer(tokenizer, max_length, processes=tokenizer_processes)
        self.length_step = target.shapes.length_step if target.shapes is not None else 1

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
        return distinct_pairs(queries, texts)

    def tokenize(self, items: list[Pair]) -> TokenizedPairs:
        if self.template is None:
            return self.tokenizer(items)
        template = self.template
        return self.tokenizer([template.format(query, document) for query, document in items])

    def collate(self, chunk: TokenizedPairs, rows: np.ndarray) -> Features:
        padded = pad_rows(chunk, rows, self.tokenizer.padding, self.length_step)
        return {name: torch.from_numpy(values).to(self.target.device) for name, values in padded.items()}

    def forward(self, batch: Features) -> torch.Tensor:
        with compute_in(self.target.device, self.target.dtype):
            logits: torch.Tensor = self.model(**batch, return_dict=True).logits
        return logits

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        probabilities = torch.softmax(outputs.float(), dim=-1).cpu().numpy()
        return graded_scores(probabilities, self.label)

    def describe(self, token_budget: int) -> dict[str, str]:
        score = "expected label" if self.label is None else f"P(label {self.label})"
        return {
            "token_budget": str(token_budget),
            "max_length": str(self.max_length),
            "labels": str(self.num_labels),
            "score": score,
            "input": "pair" if self.template is None else f"template {self.template.name}",
            "tokenizer_processes": str(self.tokenizer.processes),
            "library": f"transformers {version('transformers')}",
        }


def load_classifier(spec: ModelSpec, settings: Settings) -> LocalReranker[ClassifierModel]:
    """Load ``spec`` with transformers on the configured device and dtype. Raises ``ModelLoadError`` for
    a model that cannot be loaded or has one label, ``ModelSpecError`` for a bad option."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    template = pair_template(spec)
    label = spec.int_option("label", 0)
    target = resolve_compute(settings)
    path = spec.resolve_path()
    local = Path(path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=settings.trust_remote_code, local_files_only=local
        )
        # Loaded in float32 whatever the compute dtype: mixed precision keeps the score head in float32.
        model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=settings.trust_remote_code, local_files_only=local, dtype=torch.float32
        )
    except Exception as error:  # any failure inside the library is a load failure of this model
        raise ModelLoadError(f"cannot load classifier {spec.name!r}: {error}") from error
    num_labels = model.config.num_labels
    if num_labels < 2:
        raise ModelLoadError(
            f"classifier {spec.name!r} has {num_labels} output label; a model with one relevance score "
            f"per pair is a cross-encoder: use 'cross-encoder:{spec.name}'"
        )
    if label is not None and label >= num_labels:
        raise ModelSpecError(
            f"--model {spec}: option label={label} is out of range: {spec.name!r} has {num_labels} labels "
            f"(0..{num_labels - 1})"
        )
    if not tokenizer.is_fast:
        raise ModelLoadError(
            f"classifier {spec.name!r} has no fast (Rust) tokenizer, which bulk-rerank needs"
        )
    max_length = _max_length(spec, settings, tokenizer, model.config)
    model.to(target.device).eval()
    prepare_sequence_classifier(model, target.dtype, num_labels)
    classifier = ClassifierModel(
        model,
        tokenizer,
        max_length,
        target,
        num_labels=num_labels,
        template=template,
        label=label,
        tokenizer_processes=tokenizer_helpers(
            settings.tokenizer_processes, target.device.type, torch.get_num_threads()
        ),
    )
    return LocalReranker(spec, classifier, target)


def _max_length(spec: ModelSpec, settings: Settings, tokenizer: Any, config: Any) -> int:
    """``RERANK_MAX_LENGTH`` where set (at most the model's positions), else the tokenizer's limit, else
    the model's positions."""
    configured = configured_max_length(settings, config, f"classifier {spec.name!r}")
    if configured is not None:
        return configured
    positions = getattr(config, "max_position_embeddings", None)
    declared = tokenizer.model_max_length
    if declared is not None and declared < _NO_LIMIT:
        return int(declared)
    if positions is not None:
        return int(positions)
    raise ModelLoadError(f"classifier {spec.name!r} declares no maximum input length; set RERANK_MAX_LENGTH")
