"""Skip the last layer's work on positions the score never reads.

The classification heads of BERT, RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA read only the hidden state
at position 0 (the [CLS] / <s> token). The last encoder layer still needs keys and values of every
position, but its attention output projection and its feed-forward block (three quarters of the layer's
matrix work) only matter at position 0. Cutting the last layer's attention output to that position makes
the rest of the layer run on one row per pair; position 0 gets exactly the same arithmetic as before.

That tail (the last layer at position 0, then the pooler or the classification head's dense layer) is
then a sliver of the work, so in bf16/fp16 it runs in float32 (``tail_in_float32``): the score is not
rounded to 8 significant bits on its last steps, for well under 1% of the time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker.backends.local.mixed_precision import Float32Block, score_heads, store_linear_weights_in

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


def tail_in_float32(model: nn.Module) -> bool:
    """Run the position-0 tail of a model that ``score_from_first_position_only`` cut (the last layer's
    attention output block and feed-forward block, the pooler, the classification head) in float32, also
    inside an autocast region; returns whether it did."""
    base: Any = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    last = layers[-1]
    cut = getattr(getattr(last, "attention", None), "output", None)
    if not isinstance(cut, FirstPositionOnly) or isinstance(cut.inner, Float32Block):
        return False
    cut.inner = Float32Block(cut.inner)
    for name in ("intermediate", "output"):
        setattr(last, name, Float32Block(getattr(last, name)))
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        base.pooler = Float32Block(pooler)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Linear):
        model.classifier = Float32Block(classifier)
    return True


def prepare_sequence_classifier(model: nn.Module, dtype: torch.dtype, score_width: int) -> bool:
    """Ready a Hugging Face sequence classifier for scoring in ``dtype``: its last layer computes position 0
    only where its head reads nothing else, and in bf16/fp16 its linear layers are stored in ``dtype`` but
    for the position-0 tail and the score head (the one ``nn.Linear`` with ``score_width`` outputs), which
    stay float32. Returns whether the model runs in that mixed precision; a model with no single such head
    is cast whole to ``dtype`` (False), as is nothing in float32."""
    score_from_first_position_only(model)
    if dtype == torch.float32:
        return False
    heads = score_heads(model, score_width)
    if len(heads) != 1:
        model.to(dtype)
        return False
    tail_in_float32(model)  # before the rest goes to ``dtype``, so that its weights stay as they are
    store_linear_weights_in(model, dtype, heads[0])
    return True
