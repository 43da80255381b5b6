"""Pairs to flat numpy arrays of token ids with a Rust tokenizer: what one process, the worker's or a
tokenizing helper's, does with a chunk (``pair_tokens`` builds the tokenizers and pads the batches)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.backends.local.plain_text import is_plain_ascii


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
class EncoderState:
    """What builds a ``PairEncoder``, in this process or a helper: serialized Rust tokenizers."""

    backend: str  # the tokenizer, its truncation configured
    plain: str | None  # its copy for printable ASCII (``plain_text``), where one applies
    encode_special_tokens: bool  # not part of the serialized form
    with_type_ids: bool


class PairEncoder:
    """Pairs (or single texts) to ``TokenizedPairs`` with the tokenizers of an ``EncoderState``."""

    def __init__(self, state: EncoderState) -> None:
        from tokenizers import Tokenizer

        self.with_type_ids = state.with_type_ids
        backend = Tokenizer.from_str(state.backend)
        backend.encode_special_tokens = state.encode_special_tokens
        self._encode_batch = _batch_encoder(backend)
        self._encode_plain_batch = None
        if state.plain is not None:
            plain = Tokenizer.from_str(state.plain)
            plain.encode_special_tokens = state.encode_special_tokens
            self._encode_plain_batch = _batch_encoder(plain)

    def __call__(self, items: list[Any]) -> TokenizedPairs:
        encodings = self._encode(items)
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


def concatenate(parts: Sequence[TokenizedPairs]) -> TokenizedPairs:
    """The pairs of ``parts``, one after another, as one ``TokenizedPairs``."""
    starts = np.cumsum([0] + [int(part.offsets[-1]) for part in parts])
    offsets = np.concatenate(
        [part.offsets[:-1] + start for part, start in zip(parts, starts[:-1], strict=True)] + [starts[-1:]]
    )
    with_type_ids = parts[0].type_ids is not None
    return TokenizedPairs(
        ids=np.concatenate([part.ids for part in parts]),
        type_ids=np.concatenate([part.type_ids for part in parts if part.type_ids is not None])
        if with_type_ids
        else None,
        offsets=offsets.astype(np.int64),
        truncated=np.concatenate([part.truncated for part in parts]),
    )


def _batch_encoder(backend: Any) -> Any:
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads.
    return getattr(backend, "encode_batch_fast", backend.encode_batch)


def overflowed(encodings: Sequence[Any]) -> np.ndarray:
    """Per ``tokenizers.Encoding``, whether truncation cut tokens off (they went to ``overflowing``)."""
    return np.fromiter(
        (bool(encoding.overflowing) for encoding in encodings), dtype=bool, count=len(encodings)
    )


def _flatten(rows: Iterable[list[int]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
