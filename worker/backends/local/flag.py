"""FlagEmbedding rerankers (the bge-reranker family): FlagEmbedding loads them, the shared local pipeline
(``pipeline``) runs them.

FlagEmbedding's ``compute_score`` is deliberately not called. In 1.4.2 every call first runs its first
batch as a probe for its own batch-size search (so scoring one of our batches would cost two forward
passes), it catches out-of-memory itself (so our budget would never learn), and it shrinks its batch
size on *any* RuntimeError until it loops forever at zero. Instead the inputs are built exactly as
``compute_score_single_gpu`` builds them, with FlagEmbedding's own helpers, and the tests check the
scores against ``compute_score``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from typing import Any, Protocol

import numpy as np
import torch

from core.errors import ConfigError, ModelLoadError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.local.device import ComputeTarget, resolve_compute
from worker.backends.local.distinct import Distinct, Pair, distinct_pairs, unique_strings
from worker.backends.local.first_position import prepare_sequence_classifier
from worker.backends.local.mixed_precision import compute_in
from worker.backends.local.pipeline import LocalReranker

ENCODER_ONLY = "encoder-only-base"
DECODER_ONLY = "decoder-only-base"
LAYERWISE = "decoder-only-layerwise"
LIGHTWEIGHT = "decoder-only-lightweight"
# The kind that runs each FlagEmbedding model class ("flag" also takes a name FlagEmbedding maps to a class).
FLAG_CLASS_KINDS = {
    ENCODER_ONLY: "flag",
    DECODER_ONLY: "flag-llm",
    LAYERWISE: "flag-layerwise",
    LIGHTWEIGHT: "flag-lightweight",
}
# FlagEmbedding's default max_length; it does not read the model's own limit.
FLAG_DEFAULT_MAX_LENGTH = 512
# The prompt BaseLLMReranker.compute_score_single_gpu uses when none is configured (not exported by it).
FLAG_LLM_DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)

Features = dict[str, torch.Tensor]


class InputFormat(Protocol):
    """How one family of FlagEmbedding rerankers turns pairs into token ids and a batch into logits.

    ``encode`` runs on the pipeline's tokenizing thread while ``collate`` and ``logits`` run on the compute
    thread, so the two sides share no tokenizer state. Another FlagEmbedding model class is another format.
    """

    max_length: int

    def encode(self, pairs: list[list[str]]) -> list[dict[str, list[int]]]: ...

    def collate(self, items: list[dict[str, list[int]]]) -> Features: ...

    def logits(self, model: Any, features: Features) -> torch.Tensor: ...


class EncoderOnlyFormat:
    """BaseReranker: [CLS] query [SEP] passage [SEP], query cut first, logit of a classification head."""

    def __init__(self, tokenizer: Any, max_length: int, query_max_length: int) -> None:
        self.tokenizer = tokenizer  # pads batches on the compute thread
        # Encoding calls reconfigure a Hugging Face tokenizer's Rust backend: a private copy for ``encode``.
        self._encoder = copy.deepcopy(tokenizer)
        self.max_length = max_length
        self.query_max_length = query_max_length

    def encode(self, pairs: list[list[str]]) -> list[dict[str, list[int]]]:
        from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

        if not callable(getattr(self._encoder, "prepare_for_model", None)):
            return self._encode_as_text_pairs(pairs)
        query_ids, passage_ids = tokenize_sides(self._encoder, pairs, self.query_max_length, self.max_length)
        return [
            dict(
                prepare_for_model_compat(
                    self._encoder,
                    query,
                    passage,
                    truncation="only_second",
                    max_length=self.max_length,
                    padding=False,
                )
            )
            for query, passage in zip(query_ids, passage_ids, strict=True)
        ]

    def _encode_as_text_pairs(self, pairs: list[list[str]]) -> list[dict[str, list[int]]]:
        """What ``prepare_for_model_compat`` does under transformers 5 (no id-level ``prepare_for_model``):
        each side's ids decoded with special tokens kept, and the text pair tokenized again, cut
        ``only_second``. One batched call for the chunk instead of one per pair (per pair it ran ~2,000
        pairs/s on a CPU thread, which bounded the flag: backend on a GPU), each distinct query once."""
        decode = partial(
            self._encoder.batch_decode, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        distinct_query_ids, query_index = tokenize_queries(self._encoder, pairs, self.query_max_length)
        distinct_queries = decode(distinct_query_ids)
        query_texts = [distinct_queries[index] for index in query_index]
        passage_texts = decode(tokenize_passages(self._encoder, pairs, self.max_length))
        # A tokenizer called on one pair drops an empty second text (``[CLS] query [SEP]``), where a batched
        # call would keep the pair (``[CLS] query [SEP] [SEP]``): those rows are encoded alone, as singles.
        paired = [row for row, text in enumerate(passage_texts) if text]
        alone = [row for row, text in enumerate(passage_texts) if not text]
        items: list[dict[str, list[int]]] = [{} for _ in pairs]
        for rows, seconds in ((paired, [passage_texts[row] for row in paired]), (alone, None)):
            if not rows:
                continue
            encoded = self._encoder(
                [query_texts[row] for row in rows],
                seconds,
                truncation="only_second" if seconds is not None else True,
                max_length=self.max_length,
                padding=False,
            )
            for index, row in enumerate(rows):
                items[row] = {name: encoded[name][index] for name in encoded}
        return items

    def collate(self, items: list[dict[str, list[int]]]) -> Features:
        from FlagEmbedding.utils.tokenizer_compat import pad_with_compat

        return dict(pad_with_compat(self.tokenizer, items, padding=True, return_tensors="pt"))

    def logits(self, model: Any, features: Features) -> torch.Tensor:
        return model(**features, return_dict=True).logits.view(-1)


class DecoderOnlyFormat:
    """BaseLLMReranker: "A: query\\nB: passage\\n<prompt>", scored by the next-token logit of "Yes".

    Batches are left-padded with explicit position ids, so every row ends at its last real token and the
    model computes vocabulary logits for that one position only (``logits_to_keep=1``) instead of for
    every position as FlagEmbedding does; with a 256k vocabulary that is most of the memory.
    """

    def __init__(self, flag_model: Any, max_length: int, query_max_length: int) -> None:
        tokenizer = flag_model.tokenizer
        self.tokenizer = tokenizer  # once loaded, only ``encode`` calls it: no copy needed
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.yes_id: int = flag_model.yes_loc
        prompt = flag_model.prompt or FLAG_LLM_DEFAULT_PROMPT
        self.prompt_ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.sep_ids: list[int] = tokenizer("\n", add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        self.leading_ids: list[int] = [bos] if bos is not None and bos != tokenizer.pad_token_id else []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0
        self.keeps_last_logit = "logits_to_keep" in inspect.signature(flag_model.model.forward).parameters

    def encode(self, pairs: list[list[str]]) -> list[dict[str, list[int]]]:
        encoded = encode_prompted_pairs(
            self.tokenizer,
            pairs,
            self.leading_ids,
            self.sep_ids,
            self.prompt_ids,
            self.query_max_length,
            self.max_length,
        )
        return [{"input_ids": ids} for ids, _ in encoded]

    def collate(self, items: list[dict[str, list[int]]]) -> Features:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    def logits(self, model: Any, features: Features) -> torch.Tensor:
        if self.keeps_last_logit:
            output = model(**features, use_cache=False, logits_to_keep=1)
        else:
            output = model(**features, use_cache=False)
        return output.logits[:, -1, self.yes_id]


@dataclass(frozen=True)
class EncodedPairs:
    """A chunk's pairs as FlagEmbedding encodes them, one item of token ids per pair."""

    items: list[dict[str, list[int]]]
    lengths: np.ndarray


class FlagModel:
    """A FlagEmbedding reranker's pipeline steps; the score is its raw logit (``normalize=False``)."""

    def __init__(
        self,
        flag_model: Any,
        model_class: str,
        input_format: InputFormat,
        target: ComputeTarget,
        mixed_precision: bool = False,
    ) -> None:
        """``mixed_precision``: the model's linear layers are stored in ``target.dtype`` and run under
        autocast, the rest in float32 (``first_position.prepare_sequence_classifier``)."""
        self.flag_model = flag_model  # kept alive: its __del__ moves the model back to the CPU
        self.model_class = model_class
        self.input_format = input_format
        self.device = target.device
        self.dtype = target.dtype
        self.mixed_precision = mixed_precision

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
        return distinct_pairs(queries, texts)

    def tokenize(self, items: list[Pair]) -> EncodedPairs:
        encoded = self.input_format.encode(self.flag_model.get_detailed_inputs(items))
        lengths = np.fromiter(
            (len(item["input_ids"]) for item in encoded), dtype=np.int64, count=len(encoded)
        )
        return EncodedPairs(encoded, lengths)

    def collate(self, chunk: EncodedPairs, rows: np.ndarray) -> Features:
        features = self.input_format.collate([chunk.items[row] for row in rows])
        return {name: tensor.to(self.device) for name, tensor in features.items()}

    def forward(self, batch: Features) -> torch.Tensor:
        with compute_in(self.device, self.dtype) if self.mixed_precision else contextlib.nullcontext():
            return self.input_format.logits(self.flag_model.model, batch)

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        return outputs.float().cpu().numpy()

    def describe(self, token_budget: int) -> dict[str, str]:
        return {
            "max_length": str(self.input_format.max_length),
            "activation": "none (raw logit)",
            "flag_model_class": self.model_class,
            "precision": "mixed: float32 residual stream and score head"
            if self.mixed_precision
            else "uniform",
            "token_budget": str(token_budget),
            "library": f"FlagEmbedding {version('FlagEmbedding')}",
        }


def load_flag(spec: ModelSpec, settings: Settings) -> LocalReranker[FlagModel]:
    """Load ``spec`` through ``FlagAutoReranker`` on the configured device and dtype."""
    target = resolve_compute(settings)
    model_class = flag_model_class(spec)
    if model_class not in (ENCODER_ONLY, DECODER_ONLY):
        kind = FLAG_CLASS_KINDS.get(model_class)
        advice = f"; load it as kind {kind!r}" if kind else ""
        raise ModelLoadError(
            f"{spec.name!r} is a FlagEmbedding {model_class!r} reranker, which kind {spec.kind!r} does not "
            f"run{advice}"
        )
    encoder_only = model_class == ENCODER_ONLY
    flag_model = load_flag_reranker(spec, settings, target, model_class, float32_weights=encoder_only)
    # As for cross-encoders: only the linear layers in low precision, so the raw logit keeps float32's
    # digits instead of bf16's three (close scores would tie), and the last layer at position 0 only.
    mixed = encoder_only and prepare_sequence_classifier(
        flag_model.model, target.dtype, flag_model.model.config.num_labels
    )
    max_length, query_max_length = flag_lengths(flag_model)
    input_format: InputFormat
    if encoder_only:
        positions = getattr(flag_model.model.config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ConfigError(
                f"max_length {max_length} (RERANK_MAX_LENGTH, else FlagEmbedding's default of "
                f"{FLAG_DEFAULT_MAX_LENGTH}) exceeds the {positions} positions of {spec.name!r}; lower it"
            )
        input_format = EncoderOnlyFormat(flag_model.tokenizer, max_length, query_max_length)
    else:
        input_format = DecoderOnlyFormat(flag_model, max_length, query_max_length)
    return LocalReranker(spec, FlagModel(flag_model, model_class, input_format, target, mixed), target)


def flag_lengths(flag_model: Any) -> tuple[int, int]:
    """The loaded reranker's token limits of a pair and of its query side (FlagEmbedding's default for
    the query: three quarters of the pair's)."""
    max_length: int = flag_model.max_length
    query_max_length: int = flag_model.query_max_length or max_length * 3 // 4
    return max_length, query_max_length


def load_flag_reranker(
    spec: ModelSpec,
    settings: Settings,
    target: ComputeTarget,
    model_class: str,
    *,
    float32_weights: bool = False,
    prepare: Callable[[Any], None] | None = None,
    **options: Any,
) -> Any:
    """``FlagAutoReranker.from_finetuned`` for ``spec`` as a ``model_class`` reranker, its model moved to
    ``target`` (in float32 where ``float32_weights``, for mixed precision). ``prepare`` sees the model
    before it moves; ``options`` go to the reranker class. Raises ``ModelLoadError``."""
    from FlagEmbedding import FlagAutoReranker

    if model_class != ENCODER_ONLY:
        options["use_bf16"] = target.dtype == torch.bfloat16  # load straight into bf16, not fp32 first
    try:
        flag_model = FlagAutoReranker.from_finetuned(
            spec.resolve_path(),
            model_class=model_class,
            use_fp16=False,  # precision is set below, for every model class alike
            trust_remote_code=settings.trust_remote_code,
            devices=[str(target.device)],  # one device: FlagEmbedding starts no process pool
            max_length=settings.max_length or FLAG_DEFAULT_MAX_LENGTH,
            **options,
        )
        if prepare is not None:
            prepare(flag_model.model)
        flag_model.model.to(device=target.device, dtype=torch.float32 if float32_weights else target.dtype)
    except Exception as error:  # any failure inside the library is a load failure of this model
        raise ModelLoadError(f"cannot load FlagEmbedding reranker {spec.name!r}: {error}") from error
    flag_model.model.eval()
    return flag_model


def flag_model_class(spec: ModelSpec) -> str:
    """The FlagEmbedding model class for ``spec``: by FlagEmbedding's name table, else by kind."""
    for model_class, kind in FLAG_CLASS_KINDS.items():
        if spec.kind == kind and kind != "flag":
            return model_class
    from FlagEmbedding.inference.reranker.model_mapping import (
        AUTO_RERANKER_MAPPING,
        RERANKER_CLASS_MAPPING,
    )

    # The name FlagAutoReranker looks up: the last path part, or its parent's for "checkpoint-N".
    path = spec.resolve_path()
    name = os.path.basename(path)
    if name.startswith("checkpoint-"):
        name = os.path.basename(os.path.dirname(path))
    config = AUTO_RERANKER_MAPPING.get(name)
    if config is None:
        return ENCODER_ONLY
    return next(key.value for key, cls in RERANKER_CLASS_MAPPING.items() if cls is config.model_class)


def encode_prompted_pairs(
    tokenizer: Any,
    pairs: list[list[str]],
    leading_ids: list[int],
    sep_ids: list[int],
    prompt_ids: list[int],
    query_max_length: int,
    max_length: int,
) -> list[tuple[list[int], int]]:
    """Each pair as FlagEmbedding's LLM rerankers encode it, "<leading>A: query" + "<sep>B: passage" (the
    passage cut first) + "<sep><prompt>", with the length of its "<leading>query<sep>" part."""
    from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

    query_ids, passage_ids = tokenize_sides(tokenizer, pairs, query_max_length, max_length)
    encode_max_length = max_length + len(sep_ids) + len(prompt_ids)
    encoded = []
    for query, passage in zip(query_ids, passage_ids, strict=True):
        item = prepare_for_model_compat(
            tokenizer,
            leading_ids + query,
            sep_ids + passage,
            truncation="only_second",
            max_length=encode_max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            add_special_tokens=False,
        )
        query_part = len(leading_ids) + len(query) + len(sep_ids)
        encoded.append((list(item["input_ids"]) + sep_ids + prompt_ids, query_part))
    return encoded


def tokenize_sides(
    tokenizer: Any, pairs: list[list[str]], query_max_length: int, max_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Query and passage ids without special tokens, each cut to its own limit, as FlagEmbedding does."""
    distinct_query_ids, query_index = tokenize_queries(tokenizer, pairs, query_max_length)
    return [distinct_query_ids[index] for index in query_index], tokenize_passages(
        tokenizer, pairs, max_length
    )


def tokenize_queries(
    tokenizer: Any, pairs: list[list[str]], query_max_length: int
) -> tuple[list[list[int]], np.ndarray]:
    """Each distinct query's ids without special tokens, cut to ``query_max_length``, and for each pair
    its query's index among them: a chunk holds a query's candidates together, so each is tokenized once."""
    distinct, index = unique_strings([pair[0] for pair in pairs])
    ids = tokenizer(distinct, add_special_tokens=False, max_length=query_max_length, truncation=True)
    return ids["input_ids"], index


def tokenize_passages(tokenizer: Any, pairs: list[list[str]], max_length: int) -> list[list[int]]:
    """Each pair's passage ids without special tokens, cut to ``max_length``."""
    return tokenizer(
        [pair[1] for pair in pairs], add_special_tokens=False, max_length=max_length, truncation=True
    )["input_ids"]
