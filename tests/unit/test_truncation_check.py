"""submit.py's truncation warning: a sample of the shard inputs tokenized with the model's tokenizer file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.model_spec import ModelSpec
from core.settings import Settings
from producer.truncation_check import sample_truncation, truncation_warning
from testkit.corpora import location
from testkit.model_factory import bert_tokenizer, build_tiny_cross_encoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny") / "ce")


def _shard_input(path: Path, texts: list[str]) -> Path:
    pq.write_table(pa.table({"query": ["what is it"] * len(texts), "text": texts}), path)
    return path


def test_the_sampled_rate_counts_pairs_longer_than_the_limit(model_dir: Path, tmp_path: Path) -> None:
    texts = [" ".join(["word"] * n) for n in (5, 20, 40, 80, 160)]
    shards = [location(_shard_input(tmp_path / f"s{i}.parquet", texts)) for i in range(3)]
    lengths = [len(ids) for ids in bert_tokenizer()(["what is it"] * 5, texts)["input_ids"]]
    spec = ModelSpec.parse(f"cross-encoder:{model_dir}")

    sample = sample_truncation(spec, Settings(max_length=48), shards)

    assert sample is not None and (sample.pairs, sample.limit) == (15, 48)
    assert sample.truncated == 3 * sum(length > 48 for length in lengths) == 6
    warning = truncation_warning(sample, 0.05)
    assert (
        warning is not None and "6 of 15 sampled pairs (40.0%)" in warning and "RERANK_MAX_LENGTH" in warning
    )
    assert truncation_warning(sample, 0.5) is None  # under the threshold: a quiet night
    # Unset, the limit is the model's own (512 here): nothing is cut.
    unset = sample_truncation(spec, Settings(max_length=None), shards)
    assert unset is not None and (unset.limit, unset.truncated) == (512, 0)


def test_kinds_and_models_it_cannot_tokenize_are_not_sampled(model_dir: Path, tmp_path: Path) -> None:
    shards = [location(_shard_input(tmp_path / "s.parquet", ["a text"]))]
    bare = tmp_path / "bare-model"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    for model in ("cohere:rerank-v3.5", f"embedding:{model_dir}", f"cross-encoder:{bare}"):
        assert sample_truncation(ModelSpec.parse(model), Settings(), shards) is None, model
