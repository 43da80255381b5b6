"""Self-attention for compiled cross-encoders on CPU: two batched matmuls around a softmax that
TorchInductor fuses.

PyTorch's CPU flash-attention kernel works through each head in blocks of 32 queries with small GEMM
calls. Cross-encoder heads are narrow (32 or 64 wide) and pairs short, so those calls are mostly
overhead: on 2 AVX512-BF16 cores, with the MiniLM-L6 shape, attention took 47% of the compiled model's
time for 4.5% of its FLOPs. Here every head of a batch goes through one batched matmul for the scores
and one for the output (oneDNN runs them near the matmul peak), and the scaling, padding mask, softmax and
cast between them compile into one generated loop. Measured in one process, same pairs: 192 -> 240
pairs/s in bf16, the same agreement with float32. The scores' matmul runs in float32 (its inputs are
exact bf16 values, its reduction only a head wide): rounded to bf16 before the softmax, they were the
attention's largest error (README, "Local scoring speed"). Eagerly the float32 scores of long pairs would be
materialized op by op, so this is used only with TorchInductor, and only in bf16: float32 attention ran
slower this way than through SDPA (AVX2 Zen 3: 41 -> 34 pairs/s; AVX-512 Zen 5: 138 -> 129).

It is registered with Hugging Face's ``AttentionInterface`` under its own name and chosen per model with
``set_attn_implementation``; masks come from the same builder SDPA uses, so any mask pattern a model asks
for is honoured.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

import torch
from torch import nn

ATTENTION = "bulk-rerank-cpu"
# Its name in the calibration's modes and in ``describe()``.
MATMUL_ATTENTION = "matmul"
# The implementation this one replaces; other choices (eager, flash, flex) are left to the model.
REPLACES = "sdpa"


def batched_matmul_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of ``query`` over ``key``/``value`` (batch, heads, positions, head width), as
    ``scaled_dot_product_attention`` computes it; returns (batch, positions, heads, head width)."""
    if dropout:
        raise ValueError(f"{ATTENTION} attention is for inference; got dropout {dropout}")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # The scores are computed in float32 from bf16 queries and keys: rounded to bf16 before the
    # softmax, a logit of 10 moves by up to 0.04, which exp turns into a 4% change of its weight.
    with torch.autocast(device_type=query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probabilities = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(probabilities, value).transpose(1, 2), None


@lru_cache(maxsize=1)
def register() -> None:
    """Make ``ATTENTION`` known to transformers, with SDPA's mask builder (once per process)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION, batched_matmul_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def attention_of(model: nn.Module) -> str | None:
    """The attention implementation a Hugging Face model runs (None for other modules)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def use_batched_matmul_attention(model: nn.Module) -> bool:
    """Switch a Hugging Face model from SDPA to ``ATTENTION``; False (model unchanged) for a model on
    another implementation or one that cannot switch."""
    if attention_of(model) != REPLACES or not hasattr(model, "set_attn_implementation"):
        return False
    try:
        register()
        cast(Any, model).set_attn_implementation(ATTENTION)  # a transformers model, typed as its nn.Module
    except (ImportError, ValueError):  # no pluggable attention, or refused for this model's code
        return False
    return attention_of(model) == ATTENTION


def restore_attention(model: nn.Module) -> None:
    """Undo ``use_batched_matmul_attention``."""
    if attention_of(model) == ATTENTION:
        cast(Any, model).set_attn_implementation(REPLACES)
