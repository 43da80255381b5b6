"""Causal-LM yes/no rerankers (Qwen3-Reranker, mxbai-rerank-v2 and their kin) through transformers, run
by the shared local pipeline (``pipeline``).

Each pair becomes a prompt (``yes_no_prompts``) whose next token is the model's verdict; the score is
P(yes) over {yes, no}: exp(log_softmax([logit_no, logit_yes])[1]) at the last position. Batches are
left-padded with explicit position ids, so every row ends at its last real token and the model computes
vocabulary logits for that one position only (``logits_to_keep=1``).

A prompt is tokenized as its fixed prefix, its body (instruction, query, document) in one call, and its
fixed suffix; the body is cut from its end, so the document shrinks until the prompt fits the maximum
length, and the prefix and suffix are never cut.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.distinct import Distinct, Pair, distinct_pairs
from worker.backends.local.max_length import configured_max_length
from worker.backends.local.pair_tokens import overflowed
from worker.backends.local.pipeline import LocalReranker
from worker.backends.local.yes_no_prompts import PromptTemplate, template_named

# Tokens a prompt may hold when RERANK_MAX_LENGTH is unset (and the model has at least as many
# positions): Qwen3-Reranker's own default.
DEFAULT_MAX_LENGTH = 8192

Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Verdict:
    """The two label tokens whose next-token logits decide a score."""

    yes_token: str
    no_token: str
    yes_id: int
    no_id: int


@dataclass(frozen=True)
class Prompts:
    """A chunk's prompts as token ids, one list per pair."""

    ids: list[list[int]]
    lengths: np.ndarray
    truncated: np.ndarray | None  # None: a slow tokenizer, which does not say


class CausalLmModel:
    """A causal-LM yes/no reranker's pipeline steps."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: PromptTemplate,
        instruction: str | None,
        verdict: Verdict,
        max_length: int,
        target: ComputeTarget,
    ) -> None:
        self.model = model
        # Loaded for this model alone; once loaded only ``tokenize`` (one thread) calls it.
        self.tokenizer = tokenizer
        self.template = template
        self.instruction = instruction
        self.verdict = verdict
        self.max_length = max_length
        self.device = target.device
        self.prefix_ids: list[int] = tokenizer(template.prefix, add_special_tokens=False)["input_ids"]
        self.suffix_ids: list[int] = tokenizer(template.suffix, add_special_tokens=False)["input_ids"]
        self.body_length = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0
        # Column 0: "no", column 1: "yes", as the log-softmax below reads them.
        self.label_ids = torch.tensor([verdict.no_id, verdict.yes_id], device=self.device)
        self.keeps_last_logit = "logits_to_keep" in inspect.signature(model.forward).parameters

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
        return distinct_pairs(queries, texts)

    def tokenize(self, items: list[Pair]) -> Prompts:
        bodies = [self.template.body(query, text, self.instruction) for query, text in items]
        encoded = self.tokenizer(
            bodies, add_special_tokens=False, truncation=True, max_length=self.body_length
        )
        ids = [self.prefix_ids + body + self.suffix_ids for body in encoded["input_ids"]]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        truncated = overflowed(encoded.encodings) if encoded.encodings is not None else None
        return Prompts(ids, lengths, truncated)

    def collate(self, chunk: Prompts, rows: np.ndarray) -> Features:
        prompts = [chunk.ids[row] for row in rows]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        features = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return {name: tensor.to(self.device) for name, tensor in features.items()}

    def forward(self, batch: Features) -> torch.Tensor:
        """The [no, yes] logits of each row's last position."""
        if self.keeps_last_logit:
            output = self.model(**batch, use_cache=False, logits_to_keep=1)
        else:
            output = self.model(**batch, use_cache=False)
        logits: torch.Tensor = output.logits[:, -1, :].index_select(1, self.label_ids)
        return logits

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        probabilities: np.ndarray = torch.log_softmax(outputs.float(), dim=1)[:, 1].exp().cpu().numpy()
        return probabilities

    def describe(self, token_budget: int) -> dict[str, str]:
        return {
            "max_length": str(self.max_length),
            "activation": (
                f"P({self.verdict.yes_token!r}) over {{{self.verdict.yes_token!r}, "
                f"{self.verdict.no_token!r}}} at the last position"
            ),
            "template": self.template.name,
            "instruction": self.instruction or "(none)",
            "token_budget": str(token_budget),
            "library": f"transformers {version('transformers')}",
        }


def load_causal_lm(spec: ModelSpec, settings: Settings) -> LocalReranker[CausalLmModel]:
    """Load ``spec`` as a causal-LM yes/no reranker on the configured device and dtype; its options
    choose the prompt (``template``, ``instruction``) and the verdict labels (``yes_token``, ``no_token``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    template = template_named(spec.option("template"))
    instruction = spec.option("instruction") or template.default_instruction
    target = resolve_compute(settings)
    path = spec.resolve_path()
    local_only = Path(path).is_dir()
    model: Any
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=settings.trust_remote_code, local_files_only=local_only
        )
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=target.dtype,
            trust_remote_code=settings.trust_remote_code,
            local_files_only=local_only,
        )
    except Exception as error:  # any failure inside the library is a load failure of this model
        raise ModelLoadError(f"cannot load causal-LM reranker {spec.name!r}: {error}") from error
    model.to(device=target.device).eval()
    tokenizer.truncation_side = "right"  # the body ends with the document: cut it, not the instruction
    yes = spec.option("yes_token") or template.yes_token
    no = spec.option("no_token") or template.no_token
    verdict = Verdict(
        yes_token=yes,
        no_token=no,
        yes_id=label_id(spec, tokenizer, model, "yes_token", yes),
        no_id=label_id(spec, tokenizer, model, "no_token", no),
    )
    if verdict.yes_id == verdict.no_id:
        raise ModelLoadError(
            f"{spec.name!r}: yes_token {yes!r} and no_token {no!r} are the same token; give two labels"
        )
    max_length = prompt_max_length(spec, settings, model.config)
    causal_lm = CausalLmModel(model, tokenizer, template, instruction, verdict, max_length, target)
    if causal_lm.body_length < 1:
        raise ConfigError(
            f"max_length {max_length} leaves no room for the pair: the {template.name!r} template's prefix "
            f"and suffix take {max_length - causal_lm.body_length} tokens of {spec.name!r}; raise "
            "RERANK_MAX_LENGTH"
        )
    return LocalReranker(spec, causal_lm, target)


def label_id(spec: ModelSpec, tokenizer: Any, model: Any, option: str, label: str) -> int:
    """The one token id of ``label``; raises ``ModelLoadError`` when the tokenizer makes it several
    tokens (or none), or the model has no logit for it."""
    ids: list[int] = tokenizer(label, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelLoadError(
            f"{spec.name!r}: the {option} label {label!r} is {len(ids)} tokens of its tokenizer "
            f"({ids}), not one; set {option} to a single token of the model"
        )
    vocabulary = model.get_output_embeddings().weight.shape[0]
    if ids[0] >= vocabulary:
        raise ModelLoadError(
            f"{spec.name!r}: the {option} label {label!r} is token {ids[0]}, past the model's "
            f"{vocabulary} output logits"
        )
    return ids[0]


def prompt_max_length(spec: ModelSpec, settings: Settings, config: Any) -> int:
    """Tokens a prompt may hold: RERANK_MAX_LENGTH, else ``DEFAULT_MAX_LENGTH``, at most the model's
    positions (raises ``ConfigError`` when RERANK_MAX_LENGTH asks for more)."""
    configured = configured_max_length(settings, config, f"causal-LM reranker {spec.name!r}")
    if configured is not None:
        return configured
    positions: int | None = getattr(config, "max_position_embeddings", None)
    return min(DEFAULT_MAX_LENGTH, positions) if positions is not None else DEFAULT_MAX_LENGTH
