"""The batched-matmul attention compiled cross-encoders use on CPU, against PyTorch's SDPA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from testkit.model_factory import build_tiny_cross_encoder, build_tiny_xlmr_cross_encoder
from worker.backends.local.cpu_attention import (
    ATTENTION,
    attention_of,
    batched_matmul_attention,
    restore_attention,
    use_batched_matmul_attention,
)

PAIRS = [
    ("what is a cat", "A cat is a small domesticated carnivorous mammal."),
    ("python", "a large snake " * 40),
    ("", "an empty query"),
]


def _padded_inputs(batch: int, heads: int, length: int, width: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(7)
    query, key, value = (
        torch.randn(batch, heads, length, width, generator=generator).to(dtype) for _ in range(3)
    )
    lengths = torch.tensor([length, length - 5, 1][:batch])
    keep = torch.arange(length)[None, :] < lengths[:, None]  # padding at the end of shorter rows
    return query, key, value, keep[:, None, None, :].expand(batch, 1, length, length)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_matches_sdpa_in_float32(mask_kind: str) -> None:
    query, key, value, keep = _padded_inputs(3, 4, 23, 32, torch.float32)
    mask = {
        "bool": keep,
        "additive": torch.zeros(keep.shape).masked_fill(~keep, float("-inf")),
        "none": None,
    }[mask_kind]

    found, weights = batched_matmul_attention(torch.nn.Module(), query, key, value, mask, scaling=0.125)

    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.125)
    assert weights is None
    assert found.shape == (3, 23, 4, 32)  # (batch, positions, heads, width), as transformers expects
    torch.testing.assert_close(found, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_bfloat16_stays_close_to_float32() -> None:
    query, key, value, keep = _padded_inputs(3, 4, 23, 32, torch.float32)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=keep).transpose(1, 2)

    found, _ = batched_matmul_attention(
        torch.nn.Module(), query.bfloat16(), key.bfloat16(), value.bfloat16(), keep
    )

    assert found.dtype == torch.bfloat16
    torch.testing.assert_close(found.float(), expected, atol=3e-2, rtol=0)


def test_in_bfloat16_the_scores_before_the_softmax_are_not_rounded() -> None:
    query, key, value, keep = _padded_inputs(3, 4, 23, 32, torch.bfloat16)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * 0.25
    probabilities = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1).bfloat16()
    expected = torch.matmul(probabilities, value).transpose(1, 2)

    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        found, _ = batched_matmul_attention(torch.nn.Module(), query, key, value, keep, scaling=0.25)

    torch.testing.assert_close(found, expected, atol=0, rtol=0)


def test_refuses_dropout() -> None:
    query, key, value, keep = _padded_inputs(2, 2, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="dropout"):
        batched_matmul_attention(torch.nn.Module(), query, key, value, keep, dropout=0.1)


@pytest.mark.parametrize("builder", [build_tiny_cross_encoder, build_tiny_xlmr_cross_encoder])
def test_a_whole_model_scores_as_with_sdpa_and_switches_back(builder, tmp_path: Path) -> None:
    model_dir = builder(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    features = tokenizer(
        [query for query, _ in PAIRS], [text for _, text in PAIRS], padding=True, return_tensors="pt"
    )
    assert not bool(features["attention_mask"].all()), "the batch must have padding to test the mask"
    with torch.inference_mode():
        expected = model(**features).logits

        assert attention_of(model) == "sdpa"
        assert use_batched_matmul_attention(model)
        assert attention_of(model) == ATTENTION
        found = model(**features).logits
        restore_attention(model)

    torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-5)
    assert attention_of(model) == "sdpa"


def test_a_model_on_another_implementation_is_left_alone(tmp_path: Path) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "model")
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager")

    assert not use_batched_matmul_attention(model)
    assert attention_of(model) == "eager"
