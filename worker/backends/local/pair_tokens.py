"""(query, text) pairs tokenized in bulk into flat numpy arrays, and padded batches cut from them.

One tokenizer call covers a whole chunk of pairs; the ids land back to back in one array with an offset
per pair, so a batch is padded with a few vectorized numpy operations instead of a Python loop per pair.
The token ids are exactly those a Hugging Face tokenizer returns for
``tokenizer(queries, texts, truncation="longest_first", max_length=max_length)``, which is what
sentence-transformers' ``CrossEncoder`` feeds its model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.backends.local.distinct import Pair
from worker.backends.local.plain_text import is_plain_ascii, plain_ascii_backend


@dataclass(frozen=True)
class TokenizedPairs:
    """Token ids of consecutive pairs: pair ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # int64, every pair's ids back to back
    type_ids: np.ndarray | None  # int64, aligned with ids; None when the model takes no token types
    offsets: np.ndarray  # int64, len(pairs) + 1
    truncated: np.ndarray  # bool, one per pair: tokens were cut off to fit max_length

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per pair, special tokens included, after truncation."""
        return np.diff(self.offsets)


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
    the GIL.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if not tokenizer.is_fast:
            raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer")
        self.max_length = max_length
        self.with_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.padding = Padding(
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            pad_type_id=tokenizer.pad_token_type_id,
            left=tokenizer.padding_side == "left",
        )
        backend = _configured_backend(tokenizer, max_length)
        self._encode_batch = _batch_encoder(backend)
        plain = plain_ascii_backend(backend)
        self._encode_plain_batch = None if plain is None else _batch_encoder(plain)

    def __call__(self, pairs: Sequence[Pair] | Sequence[str]) -> TokenizedPairs:
        """Tokenize ``pairs``; a text given instead of a pair is encoded as a single sequence."""
        encodings = self._encode(list(pairs))
        ids = [encoding.ids for encoding in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        type_ids = (
            _flatten((encoding.type_ids for encoding in encodings), total) if self.with_type_ids else None
        )
        return TokenizedPairs(
            ids=_flatten(ids, total), type_ids=type_ids, offsets=offsets, truncated=overflowed(encodings)
        )

    def _encode(self, items: list[Any]) -> list[Any]:
        """``tokenizers.Encoding`` per item (a pair or a text); printable-ASCII items through the
        plain-ASCII backend."""
        if self._encode_plain_batch is None:
            return self._encode_batch(items, add_special_tokens=True)
        plain = [
            is_plain_ascii(item)
            if isinstance(item, str)
            else is_plain_ascii(item[0]) and is_plain_ascii(item[1])
            for item in items
        ]
        if all(plain):
            return self._encode_plain_batch(items, add_special_tokens=True)
        encodings: list[Any] = [None] * len(items)
        for encode, wanted in ((self._encode_plain_batch, True), (self._encode_batch, False)):
            positions = [position for position, is_plain in enumerate(plain) if is_plain == wanted]
            if positions:
                encoded = encode([items[position] for position in positions], add_special_tokens=True)
                for position, encoding in zip(positions, encoded, strict=True):
                    encodings[position] = encoding
        return encodings


def _batch_encoder(backend: Any) -> Any:
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads.
    return getattr(backend, "encode_batch_fast", backend.encode_batch)


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


def overflowed(encodings: Sequence[Any]) -> np.ndarray:
    """Per ``tokenizers.Encoding``, whether truncation cut tokens off (they went to ``overflowing``)."""
    return np.fromiter(
        (bool(encoding.overflowing) for encoding in encodings), dtype=bool, count=len(encodings)
    )


def _configured_backend(tokenizer: Any, max_length: int) -> Any:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(
        max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side
    )
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return backend


def _flatten(rows: Iterable[list[int]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
