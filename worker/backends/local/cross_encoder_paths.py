"""The two ways a batch of pairs becomes logits for a sentence-transformers ``CrossEncoder``.

``DirectPath`` serves the common case, a Hugging Face ``*ForSequenceClassification`` model behind the
cross-encoder: pairs are tokenized in bulk once (``PairTokenizer``), each batch is padded with numpy and
fed straight to the Hugging Face model. ``LibraryPath`` serves everything else (prompts, causal-LM
rerankers with a ``LogitScore`` module, processing overrides) through the library's own ``preprocess`` and
module chain, one batch at a time; so does a model whose tokenizer is not a fast (Rust) one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from worker.backends.local.compiled import CompiledLogits
from worker.backends.local.pair_tokens import Pair, PairTokenizer, TokenizedPairs, pad_rows

# The one modality a plain sequence classifier serves: text in, the model's logits out.
_TEXT_LOGITS = {"text": {"method": "forward", "method_output_name": "logits"}}


class Chunk(Protocol):
    """Pairs made ready for batching; ``lengths`` (tokens per pair) decide the batches."""

    @property
    def lengths(self) -> np.ndarray: ...


class ForwardPath(Protocol):
    # Whether ``prepare`` may run in another thread while ``logits`` runs.
    overlappable: bool

    def prepare(self, pairs: list[Pair]) -> Chunk:
        """Tokenize ``pairs``; runs in a background thread while the previous chunk is scored."""
        ...

    def logits(self, chunk: Any, rows: np.ndarray) -> torch.Tensor:
        """Raw model outputs for ``rows`` of ``chunk``, one row per pair."""
        ...


def direct_model(cross_encoder: Any) -> torch.nn.Module | None:
    """The Hugging Face model to call directly, or None when the cross-encoder needs its own pipeline."""
    from sentence_transformers.base.modules import Transformer

    modules = list(cross_encoder.children())
    if len(modules) != 1 or not isinstance(modules[0], Transformer):
        return None
    transformer = modules[0]
    plain = (
        transformer.transformer_task == "sequence-classification"
        and transformer.modality_config == _TEXT_LOGITS
        and not transformer.processing_kwargs
        and not cross_encoder.prompts
        and cross_encoder.default_prompt_name is None
        and transformer.tokenizer is not None
        and transformer.tokenizer.is_fast
    )
    return transformer.model if plain else None


class DirectPath:
    """Bulk tokenization, numpy padding and a direct call of the Hugging Face model."""

    overlappable = True  # PairTokenizer shares no state with the model's own tokenizer

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.tokenizer = PairTokenizer(tokenizer, max_length)
        self.compiled: CompiledLogits | None = None  # set by ``CrossEncoderReranker.compile``

    def prepare(self, pairs: list[Pair]) -> TokenizedPairs:
        return self.tokenizer(pairs)

    def logits(self, chunk: TokenizedPairs, rows: np.ndarray) -> torch.Tensor:
        features = {
            name: torch.from_numpy(values).to(self.device)
            for name, values in pad_rows(chunk, rows, self.tokenizer.padding).items()
        }
        if self.compiled is not None:
            return self.compiled(features)
        return self.model(**features, return_dict=True).logits


@dataclass(frozen=True)
class PairsWithLengths:
    pairs: list[Pair]
    lengths: np.ndarray


class LibraryPath:
    """``CrossEncoder.preprocess`` and the cross-encoder's module chain, batch by batch, with the model's
    default prompt (if it has one) in front of each query, as ``CrossEncoder.predict`` does."""

    # Both steps call the one Hugging Face tokenizer, which keeps its truncation settings in shared state.
    overlappable = False

    def __init__(self, cross_encoder: Any, max_length: int, device: torch.device) -> None:
        self.cross_encoder = cross_encoder
        self.device = device
        self.max_length = max_length
        name = cross_encoder.default_prompt_name
        self.prompt: str | None = cross_encoder.prompts.get(name) if name is not None else None

    def prepare(self, pairs: list[Pair]) -> PairsWithLengths:
        encoded = self.cross_encoder.tokenizer(
            [(self.prompt or "") + query for query, _ in pairs],
            [text for _, text in pairs],
            truncation="longest_first",
            max_length=self.max_length,
        )
        lengths = np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64, count=len(pairs))
        return PairsWithLengths(pairs, lengths)

    def logits(self, chunk: PairsWithLengths, rows: np.ndarray) -> torch.Tensor:
        from sentence_transformers.util import batch_to_device

        features = self.cross_encoder.preprocess([chunk.pairs[row] for row in rows], prompt=self.prompt)
        return self.cross_encoder(batch_to_device(features, self.device))["scores"]
