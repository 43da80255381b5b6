"""Bi-encoders through sentence-transformers' ``SentenceTransformer``: score = cosine of the embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.errors import ConfigError, ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.base import ScoreResult
from worker.backends.local.batching import TokenBudgetBatcher
from worker.backends.local.compute_thread import runs_on_compute_thread
from worker.backends.local.device import ComputeTarget, ForwardClock, describe_dtype, resolve_compute
from worker.backends.local.distinct import unique_strings

Task = Literal["query", "document"]

# Tokenizers without a declared limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000


class EmbeddingReranker:
    """Embeds each distinct query and text once per call and scores pairs by cosine similarity."""

    def __init__(self, spec: ModelSpec, model: Any, target: ComputeTarget) -> None:
        self.spec = spec
        self.target = target
        self.batcher = TokenBudgetBatcher(target.token_budget)
        self.model = model
        self._max_length: int = model.max_seq_length

    @runs_on_compute_thread
    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        """Cosine similarity of pair i = (queries[i], texts[i]), as float32. Runs on the process's
        compute thread, so calls from several threads take turns."""
        if len(queries) != len(texts):
            raise ValueError(
                f"got {len(queries)} queries but {len(texts)} texts; they must pair up one to one"
            )
        if not queries:
            return ScoreResult(scores=np.empty(0, dtype=np.float32), tokens=0, device_seconds=0.0)
        unique_queries, query_index = unique_strings(queries)
        unique_texts, text_index = unique_strings(texts)
        clock = ForwardClock(self.target.device)
        query_vectors, query_tokens = self.embed(unique_queries, "query", clock)
        text_vectors, text_tokens = self.embed(unique_texts, "document", clock)
        scores = np.einsum("ij,ij->i", query_vectors[query_index], text_vectors[text_index])
        return ScoreResult(
            scores=scores.astype(np.float32, copy=False),
            tokens=query_tokens + text_tokens,
            device_seconds=clock.seconds,
        )

    def embed(self, strings: list[str], task: Task, clock: ForwardClock) -> tuple[np.ndarray, int]:
        """Unit-length float32 embeddings of ``strings`` (in order) and the tokens they took."""
        prompt = self._prompt(task)
        lengths = self.token_lengths([prompt + string for string in strings] if prompt else strings)
        vectors = self.batcher.run(lengths, lambda batch: self._forward(strings, batch, task, prompt, clock))
        return vectors, int(lengths.sum())

    def token_lengths(self, strings: Sequence[str]) -> np.ndarray:
        """Tokens of each string after truncation, special tokens included."""
        encoded = self.model.tokenizer(list(strings), truncation=True, max_length=self._max_length)
        return np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=len(strings))

    def describe(self) -> dict[str, str]:
        return {
            "kind": self.spec.kind,
            "name": self.spec.name,
            "device": str(self.target.device),
            "dtype": describe_dtype(self.target.dtype),
            "max_length": str(self._max_length),
            "activation": "cosine similarity",
            "query_prompt": self._prompt("query"),
            "document_prompt": self._prompt("document"),
            "token_budget": str(self.batcher.max_budget),
            "library": f"sentence-transformers {version('sentence-transformers')}",
        }

    def _prompt(self, task: Task) -> str:
        # Same choice as encode_query/encode_document: the task's own prompt, else the default one.
        prompts: dict[str, str] = self.model.prompts
        if task in prompts:
            return prompts[task]
        default_name = self.model.default_prompt_name
        return prompts.get(default_name, "") if default_name else ""

    def _forward(
        self, strings: list[str], batch: np.ndarray, task: Task, prompt: str, clock: ForwardClock
    ) -> np.ndarray:
        from sentence_transformers.util import batch_to_device

        features = self.model.preprocess(
            [strings[index] for index in batch], prompt=prompt or None, task=task
        )
        features = batch_to_device(features, self.target.device)
        with torch.inference_mode():
            with clock.measure():
                embeddings = self.model(features, task=task)["sentence_embedding"]
            embeddings = embeddings.float()
            if self.model.truncate_dim is not None:
                embeddings = embeddings[:, : self.model.truncate_dim]
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
        return embeddings.cpu().numpy()


def load_embedding(spec: ModelSpec, settings: Settings) -> EmbeddingReranker:
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
    if settings.max_length is not None:
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and settings.max_length > positions:
            raise ConfigError(
                f"RERANK_MAX_LENGTH={settings.max_length} exceeds the {positions} positions of embedding "
                f"model {spec.name!r}; lower it or leave it unset to use the model's own limit"
            )
        model.max_seq_length = settings.max_length
    if model.max_seq_length is None or model.max_seq_length >= _NO_LIMIT:
        raise ModelLoadError(
            f"embedding model {spec.name!r} declares no maximum input length; set RERANK_MAX_LENGTH"
        )
    return EmbeddingReranker(spec, model, target)
