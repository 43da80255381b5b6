"""bf16/fp16 matrix multiplies with a float32 residual stream and a float32 score head.

Casting a whole model to bf16 rounds every residual addition and every LayerNorm to 8 significant bits,
and rounds the final logit too, which turns close scores into ties. Here only the weights of the linear
layers are stored in the low-precision dtype and the forward pass runs under ``torch.autocast``: matrix
multiplies and attention run in bf16/fp16 (where the speed is), the residual stream, embeddings and
LayerNorms stay float32 (type promotion keeps ``bf16 + fp32`` in fp32), and the score head runs in float32
outside autocast so the logit keeps its full precision.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn


class Float32Block(nn.Module):
    """Runs the wrapped module (a score head, or a model's last steps) in float32, weights and
    floating-point inputs, even inside an autocast region; its outputs are float32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.float()

    def forward(self, *inputs: Any, **named: Any) -> Any:
        tensors = [value for value in (*inputs, *named.values()) if isinstance(value, torch.Tensor)]
        with torch.autocast(tensors[0].device.type if tensors else "cpu", enabled=False):
            return self.inner(
                *map(_float32, inputs), **{name: _float32(value) for name, value in named.items()}
            )


def _float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def score_heads(model: nn.Module, score_width: int) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every ``nn.Linear`` in ``model`` with ``score_width`` output features."""
    return [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) and child.out_features == score_width
    ]


def store_linear_weights_in(model: nn.Module, dtype: torch.dtype, head: tuple[nn.Module, str]) -> None:
    """Wrap ``head`` in a ``Float32Block``, then cast every ``nn.Linear`` of ``model`` outside such blocks
    to ``dtype``."""
    parent, name = head
    setattr(parent, name, Float32Block(getattr(parent, name)))
    kept = {
        id(inner) for block in model.modules() if isinstance(block, Float32Block) for inner in block.modules()
    }
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in kept:
            module.to(dtype)


def compute_in(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[object]:
    """The autocast region for ``dtype`` on ``device``; nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
