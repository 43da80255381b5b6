"""FlagEmbedding's rerankers that score at a cutoff layer, loaded by FlagEmbedding and run by the shared
local pipeline: the layerwise class (``LayerWiseFlagLLMReranker``, e.g. bge-reranker-v2-minicpm-layerwise;
kind ``flag-layerwise``) and the lightweight class (``LightWeightFlagLLMReranker``, e.g.
bge-reranker-v2.5-gemma2-lightweight; kind ``flag-lightweight``).

As in ``flag``, FlagEmbedding's ``compute_score`` is not called (``flag``'s docstring says why). The inputs
are built as both classes' ``compute_score_single_gpu`` builds them: BOS, "A: query", "\\nB: passage"
(the passage cut first), "\\n<prompt>". The model runs with the same arguments, and the score is its
one-logit head at the cutoff layer, read at each row's last real token by FlagEmbedding's own
``last_logit_pool_layerwise`` / ``last_logit_pool_lightweight``. Batches are right-padded: the lightweight
model's token compression refuses left padding, and with right padding every row attends exactly as it
would alone.

Both classes can return one score per cutoff layer; a spec names one layer (``cutoff_layers=N``, by default
the last, as FlagEmbedding), and that layer's logit is the pair's score.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from core.errors import ModelLoadError, ModelSpecError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.flag import (
    FLAG_LLM_DEFAULT_PROMPT,
    LAYERWISE,
    LIGHTWEIGHT,
    Features,
    FlagModel,
    encode_prompted_pairs,
    flag_lengths,
    load_flag_reranker,
)
from worker.backends.local.pipeline import LocalReranker

# The prompt LightWeightFlagLLMReranker.compute_score_single_gpu uses when none is configured.
FLAG_LIGHTWEIGHT_DEFAULT_PROMPT = "Predict whether passage B contains an answer to query A."
# The ratios LightWeightFlagLLMReranker documents; 1 compresses nothing.
COMPRESS_RATIOS = (1, 2, 4, 8)
# LightWeightFlagLLMReranker's defaults.
DEFAULT_COMPRESS_RATIO = 1
DEFAULT_COMPRESS_LAYERS = (8,)
# compress_layers=8+16: option values cannot hold '&', '?' or '='.
LAYER_LIST_SEPARATOR = "+"


class PromptedFormat:
    """What both classes share: "<bos>A: query" + "\\nB: passage" + "\\n<prompt>", right-padded.

    Each item keeps the length of its "<bos>A: query\\n" part, which the lightweight model's token
    compression reads (FlagEmbedding's ``query_lengths``).
    """

    def __init__(self, flag_model: Any, prompt: str, max_length: int, query_max_length: int) -> None:
        tokenizer = flag_model.tokenizer
        self.tokenizer = tokenizer  # once loaded, only ``encode`` calls it: no copy needed
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.prompt_ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.sep_ids: list[int] = tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.bos_id: int = tokenizer.bos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0

    def encode(self, pairs: list[list[str]]) -> list[dict[str, list[int]]]:
        encoded = encode_prompted_pairs(
            self.tokenizer,
            pairs,
            [self.bos_id],
            self.sep_ids,
            self.prompt_ids,
            self.query_max_length,
            self.max_length,
        )
        return [{"input_ids": ids, "query_length": [query_length]} for ids, query_length in encoded]

    def collate(self, items: list[dict[str, list[int]]]) -> Features:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        query_lengths = torch.tensor([item["query_length"][0] for item in items], dtype=torch.long)
        prompt_lengths = torch.full((len(items),), len(self.sep_ids) + len(self.prompt_ids), dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "query_lengths": query_lengths,
            "prompt_lengths": prompt_lengths,
        }


class LayerwiseFormat(PromptedFormat):
    """LayerWiseLLMReranker: the logit of the cutoff layer's head (``head_type`` "simple")."""

    def __init__(self, flag_model: Any, cutoff_layer: int, max_length: int, query_max_length: int) -> None:
        super().__init__(
            flag_model, flag_model.prompt or FLAG_LLM_DEFAULT_PROMPT, max_length, query_max_length
        )
        self.cutoff_layer = cutoff_layer

    def logits(self, model: Any, features: Features) -> torch.Tensor:
        from FlagEmbedding.inference.reranker.decoder_only.layerwise import last_logit_pool_layerwise

        output = model(
            input_ids=features["input_ids"],
            attention_mask=features["attention_mask"],
            output_hidden_states=True,
            cutoff_layers=[self.cutoff_layer],
            use_cache=False,
        )
        return last_logit_pool_layerwise(output.logits[0], features["attention_mask"])


class LightweightFormat(PromptedFormat):
    """LightweightLLMReranker: passage tokens pooled ``compress_ratio`` to one from each of
    ``compress_layers`` on, then the logit of the cutoff layer's head at the last token left."""

    def __init__(
        self,
        flag_model: Any,
        cutoff_layer: int,
        compress_ratio: int,
        compress_layers: list[int],
        max_length: int,
        query_max_length: int,
    ) -> None:
        prompt = flag_model.prompt or FLAG_LIGHTWEIGHT_DEFAULT_PROMPT
        super().__init__(flag_model, prompt, max_length, query_max_length)
        self.cutoff_layer = cutoff_layer
        self.compress_ratio = compress_ratio
        self.compress_layers = compress_layers

    def logits(self, model: Any, features: Features) -> torch.Tensor:
        from FlagEmbedding.inference.reranker.decoder_only.lightweight import last_logit_pool_lightweight

        output = model(
            input_ids=features["input_ids"],
            attention_mask=features["attention_mask"],
            output_hidden_states=True,
            compress_layer=self.compress_layers,
            compress_ratio=self.compress_ratio,
            query_lengths=features["query_lengths"],
            prompt_lengths=features["prompt_lengths"],
            cutoff_layers=[self.cutoff_layer],
            use_cache=False,
        )
        # Compression shortens the rows, so the pooling reads the mask the model returns.
        return last_logit_pool_lightweight(output.logits[0], output.attention_masks[0])


class CutoffFlagModel(FlagModel):
    """A ``FlagModel`` that also describes the layer it scores at and its compression."""

    def __init__(
        self,
        flag_model: Any,
        model_class: str,
        input_format: LayerwiseFormat | LightweightFormat,
        target: ComputeTarget,
        settings_described: dict[str, str],
    ) -> None:
        super().__init__(flag_model, model_class, input_format, target)
        self.settings_described = settings_described

    def describe(self, token_budget: int) -> dict[str, str]:
        return super().describe(token_budget) | self.settings_described


def load_flag_layerwise(spec: ModelSpec, settings: Settings) -> LocalReranker[CutoffFlagModel]:
    """Load ``spec`` as a FlagEmbedding layerwise reranker scoring at its ``cutoff_layers`` layer."""
    requested = cutoff_layer_option(spec)
    target = resolve_compute(settings)
    flag_model = load_flag_reranker(spec, settings, target, LAYERWISE, prepare=rebuild_rotary_caches)
    config = flag_model.model.config
    _require_bos(spec, flag_model)
    head_type = getattr(config, "head_type", "simple")
    if head_type != "simple":
        raise ModelLoadError(
            f"{spec.name!r} has a layerwise head of type {head_type!r}; FlagEmbedding scores layerwise "
            "models by a one-logit head per layer (head_type 'simple')"
        )
    layers = range(config.start_layer, config.num_hidden_layers + 1)
    cutoff = _checked_cutoff(spec, requested, layers)
    max_length, query_max_length = flag_lengths(flag_model)
    input_format = LayerwiseFormat(flag_model, cutoff, max_length, query_max_length)
    model = CutoffFlagModel(flag_model, LAYERWISE, input_format, target, {"cutoff_layer": str(cutoff)})
    _probe(spec, model)
    return LocalReranker(spec, model, target)


def load_flag_lightweight(spec: ModelSpec, settings: Settings) -> LocalReranker[CutoffFlagModel]:
    """Load ``spec`` as a FlagEmbedding lightweight reranker with the spec's cutoff layer and compression."""
    requested = cutoff_layer_option(spec)
    compress_ratio = compress_ratio_option(spec)
    requested_compress_layers = compress_layers_option(spec)
    target = resolve_compute(settings)
    flag_model = load_flag_reranker(spec, settings, target, LIGHTWEIGHT)
    config = flag_model.model.config
    _require_bos(spec, flag_model)
    if not getattr(config, "layer_wise", False):
        raise ModelLoadError(
            f"{spec.name!r} is not a layer-wise lightweight model (its config has no 'layer_wise': true), "
            "so it has no per-layer score heads"
        )
    layers = range(config.start_layer, config.num_hidden_layers + 1, config.layer_sep)
    cutoff = _checked_cutoff(spec, requested, layers)
    if requested_compress_layers is None:
        compress_layers = list(DEFAULT_COMPRESS_LAYERS)
    else:
        compress_layers = requested_compress_layers
        # The model compresses before layer i (0 < i < its layer count) and skips any other.
        outside = [layer for layer in compress_layers if not 0 < layer < config.num_hidden_layers]
        if outside:
            raise ModelSpecError(
                f"--model {spec}: option compress_layers names layer(s) {outside}; {spec.name!r} compresses "
                f"before layers 1 to {config.num_hidden_layers - 1}"
            )
    max_length, query_max_length = flag_lengths(flag_model)
    input_format = LightweightFormat(
        flag_model, cutoff, compress_ratio, compress_layers, max_length, query_max_length
    )
    described = {
        "cutoff_layer": str(cutoff),
        "compress_ratio": str(compress_ratio),
        "compress_layers": LAYER_LIST_SEPARATOR.join(str(layer) for layer in compress_layers),
    }
    model = CutoffFlagModel(flag_model, LIGHTWEIGHT, input_format, target, described)
    _probe(spec, model)
    return LocalReranker(spec, model, target)


def cutoff_layer_option(spec: ModelSpec) -> int | None:
    """The one layer ``cutoff_layers`` names, or None (the model's last layer). Raises ``ModelSpecError``."""
    value = spec.option("cutoff_layers")
    if value is not None and LAYER_LIST_SEPARATOR in value:
        raise ModelSpecError(
            f"--model {spec}: option cutoff_layers={value!r} names several layers; a worker scores with one "
            "layer, so name one (e.g. cutoff_layers=28)"
        )
    return spec.int_option("cutoff_layers", minimum=1)


def compress_ratio_option(spec: ModelSpec) -> int:
    """``compress_ratio``, one of ``COMPRESS_RATIOS`` (default 1). Raises ``ModelSpecError``."""
    value = spec.option("compress_ratio")
    if value is None:
        return DEFAULT_COMPRESS_RATIO
    if value not in {str(ratio) for ratio in COMPRESS_RATIOS}:
        raise ModelSpecError(
            f"--model {spec}: option compress_ratio={value!r} must be one of "
            f"{', '.join(str(ratio) for ratio in COMPRESS_RATIOS)}"
        )
    return int(value)


def compress_layers_option(spec: ModelSpec) -> list[int] | None:
    """The layers ``compress_layers`` names (``8`` or ``8+16``), or None where unset. Raises
    ``ModelSpecError``."""
    value = spec.option("compress_layers")
    if value is None:
        return None
    parts = value.split(LAYER_LIST_SEPARATOR)
    if not all(part.strip().isdigit() and int(part) >= 1 for part in parts):
        raise ModelSpecError(
            f"--model {spec}: option compress_layers={value!r} must be layer numbers >= 1 joined by "
            f"'{LAYER_LIST_SEPARATOR}' (e.g. compress_layers=8{LAYER_LIST_SEPARATOR}16)"
        )
    return [int(part) for part in parts]


def rebuild_rotary_caches(model: torch.nn.Module) -> None:
    """Recompute the rotary tables of FlagEmbedding's MiniCPM layerwise model.

    Its rotary modules compute ``inv_freq`` and the cos/sin caches in ``__init__`` as non-persistent
    buffers; transformers 5 builds a model before loading it without running that code on real memory, so
    they hold whatever the memory held. This recomputes them as ``__init__`` does (a no-op where they were
    right).
    """
    for module in model.modules():
        rotary: Any = module
        if not (hasattr(rotary, "inv_freq") and hasattr(rotary, "_set_cos_sin_cache")):
            continue
        device = rotary.inv_freq.device
        exponents = torch.arange(0, rotary.dim, 2).float().to(device) / rotary.dim
        rotary.inv_freq = 1.0 / (rotary.base**exponents)
        rotary._set_cos_sin_cache(seq_len=rotary.max_position_embeddings, device=device, dtype=torch.float32)


def _checked_cutoff(spec: ModelSpec, requested: int | None, layers: range) -> int:
    if requested is None:
        return layers[-1]  # FlagEmbedding's default: the model's last layer
    if requested not in layers:
        step = f" in steps of {layers.step}" if layers.step != 1 else ""
        raise ModelSpecError(
            f"--model {spec}: option cutoff_layers={requested} is not a scoring layer of {spec.name!r}; "
            f"it scores at layers {layers.start} to {layers[-1]}{step}"
        )
    return requested


def _require_bos(spec: ModelSpec, flag_model: Any) -> None:
    if flag_model.tokenizer.bos_token_id is None:
        raise ModelLoadError(
            f"the tokenizer of {spec.name!r} has no BOS token, which FlagEmbedding puts before every query"
        )


def _probe(spec: ModelSpec, model: CutoffFlagModel) -> None:
    """Score one pair now, so that model code that does not run under the installed libraries fails the
    load with its reason instead of the first shard."""
    try:
        with torch.inference_mode():
            chunk = model.tokenize([("query", "passage")])
            scores = model.postprocess(model.forward(model.collate(chunk, np.arange(1))))
    except Exception as error:
        raise ModelLoadError(
            f"cannot run {spec.name!r} as a FlagEmbedding {model.model_class!r} reranker with FlagEmbedding "
            f"{version('FlagEmbedding')} and transformers {version('transformers')}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not np.isfinite(scores).all():
        raise ModelLoadError(f"{spec.name!r} scores a probe pair as {scores[0]}: its weights are broken")
