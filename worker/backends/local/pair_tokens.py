"""(query, text) pairs tokenized in bulk into flat numpy arrays, and padded batches cut from them.

One tokenizer call covers a whole chunk of pairs; the ids land back to back in one array with an offset
per pair, so a batch is padded with a few vectorized numpy operations instead of a Python loop per pair.
The token ids are exactly those a Hugging Face tokenizer returns for
``tokenizer(queries, texts, truncation="longest_first", max_length=max_length)``, which is what
sentence-transformers' ``CrossEncoder`` feeds its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.backends.local.distinct import Pair
from worker.backends.local.pair_encoding import (
    EncoderState,
    PairEncoder,
    TokenizedPairs,
    overflowed,
)
from worker.backends.local.plain_text import plain_ascii_backend

if TYPE_CHECKING:
    from worker.backends.local.tokenizer_processes import TokenizerProcesses

__all__ = ["Padding", "Pair", "PairTokenizer", "TokenizedPairs", "overflowed", "pad_rows"]


@dataclass(frozen=True)
class Padding:
    """How a tokenizer pads a batch: the id and token type of padding, and the side it goes on."""

    pad_id: int
    pad_type_id: int
    left: bool


class PairTokenizer:
    """Tokenizes pairs as ``tokenizer(queries, texts, truncation="longest_first", max_length=...)`` does.

    It runs a private copy of a fast tokenizer's Rust backend, configured once, so it shares no per-call
    settings with other users of the Hugging Face tokenizer, and a whole chunk is one call that releases
    the GIL. With ``processes``, chunks large enough are tokenized in slices by that many helper
    processes (``tokenizer_processes``), with the same ids.
    """

    def __init__(self, tokenizer: Any, max_length: int, processes: int = 0) -> None:
        if not tokenizer.is_fast:
            raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer")
        self.max_length = max_length
        self.padding = Padding(
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            pad_type_id=tokenizer.pad_token_type_id,
            left=tokenizer.padding_side == "left",
        )
        backend = _configured_backend(tokenizer, max_length)
        plain = plain_ascii_backend(backend)
        state = EncoderState(
            backend=backend.to_str(),
            plain=None if plain is None else plain.to_str(),
            encode_special_tokens=backend.encode_special_tokens,
            with_type_ids="token_type_ids" in tokenizer.model_input_names,
        )
        self._encoder = PairEncoder(state)
        self.helpers: TokenizerProcesses | None = None
        if processes > 0:
            from worker.backends.local.tokenizer_processes import TokenizerProcesses

            self.helpers = TokenizerProcesses(state, processes)

    def __call__(self, pairs: Sequence[Pair] | Sequence[str]) -> TokenizedPairs:
        """Tokenize ``pairs``; a text given instead of a pair is encoded as a single sequence."""
        if self.helpers is not None and (tokenized := self.helpers(pairs)) is not None:
            return tokenized
        return self._encoder(list(pairs))

    @property
    def processes(self) -> int:
        """Helper processes that tokenize for it (0: it tokenizes in this process)."""
        return 0 if self.helpers is None else self.helpers.processes

    def close(self) -> None:
        """Stop the helper processes, if any."""
        if self.helpers is not None:
            self.helpers.close()
            self.helpers = None


def pad_rows(
    tokens: TokenizedPairs, rows: np.ndarray, padding: Padding, length_step: int = 1
) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of ``rows``, padded to their longest
    rounded up to a multiple of ``length_step``."""
    lengths = tokens.lengths[rows]
    width = -(-int(lengths.max()) // length_step) * length_step
    columns = np.arange(width)
    if padding.left:
        mask = columns >= (width - lengths)[:, None]
        position = columns - (width - lengths)[:, None]
    else:
        mask = columns < lengths[:, None]
        position = columns[None, :]
    # Padded cells read some valid token (clipped into the row) and are overwritten just below.
    gather = tokens.offsets[rows][:, None] + np.clip(position, 0, np.maximum(lengths - 1, 0)[:, None])
    features = {
        "input_ids": np.where(mask, tokens.ids[gather], padding.pad_id),
        "attention_mask": mask.astype(np.int64),
    }
    if tokens.type_ids is not None:
        features["token_type_ids"] = np.where(mask, tokens.type_ids[gather], padding.pad_type_id)
    return features


def _configured_backend(tokenizer: Any, max_length: int) -> Any:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(
        max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side
    )
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return backend
