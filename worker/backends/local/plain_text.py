"""BERT's text normalization skipped where it can change nothing but the case.

A BERT tokenizer's ``BertNormalizer`` cleans control characters, spaces out CJK ideographs, decomposes
and strips accents and lowercases, char by char in Unicode, and takes about as long as the rest of
tokenizing. On printable ASCII (tab, newline and carriage return allowed) all but the lowercasing are
no-ops: there are no accents, ideographs or control characters to act on, and the whitespace it maps to
spaces is whitespace to the pre-tokenizer either way. So such text is encoded by a copy of the tokenizer
whose normalizer only lowercases (or does nothing), with identical ids; any other text, and tokenizers
with another normalizer, take the original. On a GPU this matters: there the host's tokenizing, not the
device, can bound a small model's pairs/s.
"""

from __future__ import annotations

import json
import re
from typing import Any

# ASCII control characters BertNormalizer deletes; tab, newline and carriage return it turns into spaces.
_DELETED_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_plain_ascii(text: str) -> bool:
    """ASCII without the control characters BertNormalizer would delete."""
    return text.isascii() and (text.isprintable() or _DELETED_CONTROLS.search(text) is None)


def plain_ascii_backend(backend: Any) -> Any | None:
    """A copy of the Rust tokenizer ``backend`` that gives printable ASCII the same ids faster, or None
    when its normalizer is not ``BertNormalizer`` (alone)."""
    from tokenizers import Tokenizer, normalizers

    serialized = backend.to_str()  # truncation and padding travel in it
    normalizer = json.loads(serialized).get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return None
    plain = Tokenizer.from_str(serialized)
    plain.normalizer = normalizers.Lowercase() if normalizer.get("lowercase") else None
    plain.encode_special_tokens = backend.encode_special_tokens
    return plain
