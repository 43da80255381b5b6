"""Before a run is sent: how many of its pairs the model will cut to fit its limit, from a sample of the
shard inputs tokenized with the model's own tokenizer file (the ``tokenizers`` library: no model library
is loaded by the producer). Cross-encoders only; other kinds tokenize in ways of their own."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.model_spec import ModelSpec
from core.settings import Settings
from storage.location import Location

SAMPLE_PAIRS = 2000
SAMPLED_SHARDS = 8  # the sample is spread over this many shards, the first pairs of each
_NO_LIMIT = 1_000_000  # tokenizers that declare no limit say a huge number


@dataclass(frozen=True)
class TruncationSample:
    pairs: int
    truncated: int
    limit: int

    @property
    def rate(self) -> float:
        return self.truncated / self.pairs if self.pairs else 0.0


def sample_truncation(
    spec: ModelSpec, settings: Settings, shard_inputs: Sequence[Location]
) -> TruncationSample | None:
    """The sampled share of pairs longer than the model's limit, or None where it cannot be told (an API
    or non-cross-encoder kind, a model whose tokenizer file is not on this machine)."""
    model_dir = _local_model_dir(spec)
    if model_dir is None or not shard_inputs:
        return None
    limit = settings.max_length or _model_limit(model_dir)
    if limit is None:
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pairs = _sample_pairs(shard_inputs)
    if not pairs:
        return None
    lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch(pairs, add_special_tokens=True)]
    return TruncationSample(len(lengths), sum(length > limit for length in lengths), limit)


def truncation_warning(sample: TruncationSample | None, threshold: float) -> str | None:
    if sample is None or sample.rate <= threshold:
        return None
    return (
        f"warning: {sample.truncated:,} of {sample.pairs:,} sampled pairs ({sample.rate:.1%}) are longer "
        f"than the model's limit of {sample.limit} tokens and will be truncated; raise RERANK_MAX_LENGTH "
        f"(up to the model's positions) or shorten the documents (warned above "
        f"RERANK_TRUNCATION_WARNING={threshold:g})"
    )


def _local_model_dir(spec: ModelSpec) -> Path | None:
    if spec.kind != "cross-encoder":
        return None
    path = Path(spec.name)
    if path.is_dir():
        return path if (path / "tokenizer.json").is_file() else None
    try:  # a hub model already downloaded to this machine's cache; never a download here
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(spec.name, "tokenizer.json")
    return Path(cached).parent if isinstance(cached, str) else None


def _model_limit(model_dir: Path) -> int | None:
    """The tokenizer's declared ``model_max_length``, else the model's positions (what sentence-
    transformers' CrossEncoder truncates at when ``max_length`` is not given)."""
    for name, key in (
        ("tokenizer_config.json", "model_max_length"),
        ("config.json", "max_position_embeddings"),
    ):
        value = _json(model_dir / name).get(key)
        if isinstance(value, int | float) and not math.isinf(value) and 0 < value < _NO_LIMIT:
            return int(value)
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _sample_pairs(shard_inputs: Sequence[Location]) -> list[tuple[str, str]]:
    step = max(1, len(shard_inputs) // SAMPLED_SHARDS)
    chosen = list(shard_inputs)[::step][:SAMPLED_SHARDS]
    per_shard = -(-SAMPLE_PAIRS // len(chosen))
    pairs: list[tuple[str, str]] = []
    for location in chosen:
        with location.open_input() as source:
            table = pq.ParquetFile(source).read_row_group(0, columns=["query", "text"]).slice(0, per_shard)
        pairs += zip(table.column("query").to_pylist(), table.column("text").to_pylist(), strict=True)
    return pairs
