"""Bi-encoders through sentence-transformers' ``SentenceTransformer``: score = cosine of the embeddings.

The shared local pipeline (``pipeline``) runs them: the distinct queries and the distinct texts are
embedded in growing chunks, each chunk's lengths learned on the tokenizing thread while the one before it
runs; the library's ``preprocess`` builds each batch's inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.distinct import Distinct, Side, SideText, distinct_sides
from worker.backends.local.max_length import configured_max_length
from worker.backends.local.pair_tokens import overflowed
from worker.backends.local.pipeline import LocalReranker

# Tokenizers without a declared limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class SideChunk:
    """Strings of one side (``task``), with their lengths as the model would tokenize them."""

    task: Side
    prompt: str
    strings: list[str]
    lengths: np.ndarray
    truncated: np.ndarray | None  # None: a slow tokenizer, which does not say


@dataclass(frozen=True)
class SideBatch:
    task: Side
    features: dict[str, Any]


class EmbeddingModel:
    """A bi-encoder's pipeline steps: each distinct query and text is embedded once, as a unit vector,
    and a pair's score is the cosine of its two."""

    def __init__(self, sentence_transformer: Any, target: ComputeTarget) -> None:
        self.sentence_transformer = sentence_transformer
        self.device = target.device
        self.max_length: int = sentence_transformer.max_seq_length
        # Learning a chunk's lengths calls a tokenizer on the tokenizing thread, while ``preprocess`` calls
        # the model's own on the compute thread; a call reconfigures the tokenizer's Rust backend.
        self._tokenizer = copy.deepcopy(sentence_transformer.tokenizer)

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[SideText]:
        return distinct_sides(queries, texts)

    def tokenize(self, items: list[SideText]) -> SideChunk:
        task = items[0][0]
        prompt = self.prompt(task)
        strings = [string for _, string in items]
        encoded = self._tokenizer(
            [prompt + string for string in strings] if prompt else strings,
            truncation=True,
            max_length=self.max_length,
        )
        lengths = np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64, count=len(strings))
        truncated = overflowed(encoded.encodings) if encoded.encodings is not None else None
        return SideChunk(task, prompt, strings, lengths, truncated)

    def collate(self, chunk: SideChunk, rows: np.ndarray) -> SideBatch:
        from sentence_transformers.util import batch_to_device

        features = self.sentence_transformer.preprocess(
            [chunk.strings[row] for row in rows], prompt=chunk.prompt or None, task=chunk.task
        )
        return SideBatch(chunk.task, batch_to_device(features, self.device))

    def forward(self, batch: SideBatch) -> torch.Tensor:
        embeddings: torch.Tensor = self.sentence_transformer(batch.features, task=batch.task)[
            "sentence_embedding"
        ]
        return embeddings

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        embeddings = outputs.float()
        if self.sentence_transformer.truncate_dim is not None:
            embeddings = embeddings[:, : self.sentence_transformer.truncate_dim]
        return torch.nn.functional.normalize(embeddings, p=2, dim=1).cpu().numpy()

    def describe(self, token_budget: int) -> dict[str, str]:
        return {
            "max_length": str(self.max_length),
            "activation": "cosine similarity",
            "query_prompt": self.prompt("query"),
            "document_prompt": self.prompt("document"),
            "token_budget": str(token_budget),
            "library": f"sentence-transformers {version('sentence-transformers')}",
        }

    def prompt(self, task: Side) -> str:
        # Same choice as encode_query/encode_document: the task's own prompt, else the default one.
        prompts: dict[str, str] = self.sentence_transformer.prompts
        if task in prompts:
            return prompts[task]
        default_name = self.sentence_transformer.default_prompt_name
        return prompts.get(default_name, "") if default_name else ""


def load_embedding(spec: ModelSpec, settings: Settings) -> LocalReranker[EmbeddingModel]:
    """Load ``spec`` as a sentence-transformers bi-encoder on the configured device and dtype."""
    from sentence_transformers import SentenceTransformer

    target = resolve_compute(settings)
    path = spec.resolve_path()
    try:
        model = SentenceTransformer(
            path,
            device=str(target.device),
            trust_remote_code=settings.trust_remote_code,
            local_files_only=Path(path).is_dir(),
            model_kwargs={"dtype": target.dtype},
        )
    except Exception as error:  # any failure inside the library is a load failure of this model
        raise ModelLoadError(f"cannot load embedding model {spec.name!r}: {error}") from error
    model.eval()
    max_length = configured_max_length(settings, model.config, f"embedding model {spec.name!r}")
    if max_length is not None:
        model.max_seq_length = max_length
    if model.max_seq_length is None or model.max_seq_length >= _NO_LIMIT:
        raise ModelLoadError(
            f"embedding model {spec.name!r} declares no maximum input length; set RERANK_MAX_LENGTH"
        )
    return LocalReranker(spec, EmbeddingModel(model, target), target)
