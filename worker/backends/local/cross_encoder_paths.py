"""The two ways a batch of pairs becomes logits for a sentence-transformers ``CrossEncoder``.

``DirectPath`` serves the common case, a Hugging Face ``*ForSequenceClassification`` model behind the
cross-encoder: pairs are tokenized in bulk once (``PairTokenizer``), each batch is padded with numpy and
fed straight to the Hugging Face model. ``LibraryPath`` serves everything else (prompts, causal-LM
rerankers with a ``LogitScore`` module, processing overrides) through the library's own ``preprocess`` and
module chain, one batch at a time; so does a model whose tokenizer is not a fast (Rust) one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from worker.backends.local.compiled import CompiledLogits
from worker.backends.local.pair_tokens import Pair, PairTokenizer, TokenizedPairs, overflowed, pad_rows
from worker.backends.local.pipeline import Tokenized

# The one modality a plain sequence classifier serves: text in, the model's logits out.
_TEXT_LOGITS = {"text": {"method": "forward", "method_output_name": "logits"}}


Features = dict[str, Any]


class ForwardPath(Protocol):
    """The pipeline steps (``worker.backends.local.pipeline``) that differ between the two paths."""

    def tokenize(self, pairs: list[Pair]) -> Tokenized:
        """Tokenize a chunk of pairs; runs on the tokenizing thread while the previous chunk is scored."""
        ...

    def collate(self, chunk: Any, rows: np.ndarray) -> Features:
        """The model inputs of ``rows`` of ``chunk``, on the device."""
        ...

    def logits(self, features: Features) -> torch.Tensor:
        """Raw model outputs, one row per pair."""
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

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_length: int,
        device: torch.device,
        tokenizer_processes: int = 0,
    ) -> None:
        self.model = model
        self.device = device
        # Its own Rust backend, shared with no one.
        self.tokenizer = PairTokenizer(tokenizer, max_length, processes=tokenizer_processes)
        self.compiled: CompiledLogits | None = None  # set by ``CrossEncoderReranker.compile``
        self.length_step = 1  # padded lengths are multiples of it (``batch_shapes.FixedShapes``)
        self.single_rows = False  # a compiled model runs a batch of one row as one (``FixedShapes``)

    def tokenize(self, pairs: list[Pair]) -> TokenizedPairs:
        return self.tokenizer(pairs)

    def collate(self, chunk: TokenizedPairs, rows: np.ndarray) -> Features:
        return {
            name: torch.from_numpy(values).to(self.device)
            for name, values in pad_rows(chunk, rows, self.tokenizer.padding, self.length_step).items()
        }

    def logits(self, features: Features) -> torch.Tensor:
        if self.compiled is not None:
            return self.compiled(features, single_rows=self.single_rows)
        logits: torch.Tensor = self.model(**features, return_dict=True).logits
        return logits


@dataclass(frozen=True)
class PairsWithLengths:
    pairs: list[Pair]
    lengths: np.ndarray
    truncated: np.ndarray | None  # None: a slow tokenizer, which does not say


class LibraryPath:
    """``CrossEncoder.preprocess`` and the cross-encoder's module chain, batch by batch, with the model's
    default prompt (if it has one) in front of each query, as ``CrossEncoder.predict`` does. A chunk is
    tokenized ahead only to learn its lengths; ``preprocess`` tokenizes each batch again."""

    def __init__(self, cross_encoder: Any, max_length: int, device: torch.device) -> None:
        self.cross_encoder = cross_encoder
        self.device = device
        self.max_length = max_length
        name = cross_encoder.default_prompt_name
        self.prompt: str | None = cross_encoder.prompts.get(name) if name is not None else None
        # A Hugging Face tokenizer call reconfigures truncation and padding in its Rust backend, and
        # ``preprocess`` calls the cross-encoder's own on the compute thread meanwhile.
        self._tokenizer = copy.deepcopy(cross_encoder.tokenizer)

    def tokenize(self, pairs: list[Pair]) -> PairsWithLengths:
        encoded = self._tokenizer(
            [(self.prompt or "") + query for query, _ in pairs],
            [text for _, text in pairs],
            truncation="longest_first",
            max_length=self.max_length,
        )
        lengths = np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64, count=len(pairs))
        truncated = overflowed(encoded.encodings) if encoded.encodings is not None else None
        return PairsWithLengths(pairs, lengths, truncated)

    def collate(self, chunk: PairsWithLengths, rows: np.ndarray) -> Features:
        from sentence_transformers.util import batch_to_device

        features = self.cross_encoder.preprocess([chunk.pairs[row] for row in rows], prompt=self.prompt)
        batch: Features = batch_to_device(features, self.device)
        return batch

    def logits(self, features: Features) -> torch.Tensor:
        scores: torch.Tensor = self.cross_encoder(features)["scores"]
        return scores
