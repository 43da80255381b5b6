"""Forward-pass FLOPs of an encoder cross-encoder, counted on real (unpadded) tokens."""

from __future__ import annotations

import numpy as np

from benchmarks.models import ModelShape


def forward_flops(shape: ModelShape, lengths: np.ndarray) -> float:
    """Multiply-adds x 2 of one forward pass per pair of ``lengths`` tokens: per layer the Q, K, V and
    output projections (8 L H^2), the feed-forward block (4 L H I) and attention scores and mixing
    (4 L^2 H); then the pooler/classifier (2 H^2 + 2 H). Embedding lookups, norms and activations are
    not matrix work and are left out, as MFU conventionally does."""
    tokens = np.asarray(lengths, dtype=np.float64)
    hidden, intermediate = float(shape.hidden), float(shape.intermediate)
    per_layer = 8 * tokens * hidden**2 + 4 * tokens * hidden * intermediate + 4 * tokens**2 * hidden
    head = 2 * hidden**2 + 2 * hidden
    return float(shape.layers * per_layer.sum() + len(tokens) * head)
