"""Skip the last layer's work on positions the score never reads.

The classification heads of BERT, RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA read only the hidden state
at position 0 (the [CLS] / <s> token). The last encoder layer still needs keys and values of every
position, but its attention output projection and its feed-forward block (three quarters of the layer's
matrix work) only matter at position 0. Cutting the last layer's attention output to that position makes
the rest of the layer run on one row per pair; position 0 gets exactly the same arithmetic as before.
"""

from __future__ import annotations

import torch
from torch import nn

# Model types whose sequence-classification head reads position 0 only, and whose encoder layers have
# the BERT layout (``encoder.layer[i].attention.output(hidden_states, input_tensor)``).
FIRST_POSITION_HEADS = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})


class FirstPositionOnly(nn.Module):
    """Runs the wrapped attention output block (projection, residual, LayerNorm) on position 0 only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.inner(hidden_states[:, :1], input_tensor[:, :1])


def score_from_first_position_only(model: nn.Module) -> bool:
    """Make the last layer of ``model`` (a Hugging Face sequence classifier) compute position 0 only, when
    its head reads nothing else; returns whether it did."""
    if getattr(model.config, "model_type", None) not in FIRST_POSITION_HEADS:
        return False
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    attention = getattr(layers[-1], "attention", None)
    output = getattr(attention, "output", None)
    if attention is None or output is None or isinstance(output, FirstPositionOnly):
        return False
    attention.output = FirstPositionOnly(output)
    return True
