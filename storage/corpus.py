"""The corpus API used by ``scripts/submit.py`` and the workers, in the order it is called:

1. ``validate_corpus(path, columns)`` reads the file once (streaming) and raises ``CorpusError``
   for any problem, or returns a ``CorpusSummary``;
2. ``plan_shards(summary, shard_pairs)`` groups whole queries into shards;
3. ``write_shard_inputs(path, columns, summary, plans, inputs_dir)`` writes one Parquet file of
   canonical pairs per shard;
4. a worker calls ``read_shard_input(path)`` for its shard.

``iter_pairs`` streams the canonical pairs (``query_id, query, doc_id, text``) of either form.
The implementation lives in the modules imported below, one concept each.
"""

from __future__ import annotations

from storage.corpus_layout import CANONICAL_COLUMNS, CorpusColumns, CorpusForm
from storage.corpus_reader import iter_pairs
from storage.corpus_validation import CorpusSummary, validate_corpus
from storage.shard_inputs import ShardInput, read_shard_input, write_shard_inputs
from storage.shard_plan import ShardPlan, plan_shards

__all__ = [
    "CANONICAL_COLUMNS",
    "CorpusColumns",
    "CorpusForm",
    "CorpusSummary",
    "ShardInput",
    "ShardPlan",
    "iter_pairs",
    "plan_shards",
    "read_shard_input",
    "validate_corpus",
    "write_shard_inputs",
]
