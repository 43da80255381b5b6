"""The corpus as the producer reads it: ``validate_corpus(location, columns)`` reads it once (streaming;
one Parquet file or a directory of them, see ``source``) and raises ``CorpusError`` for any problem, or
returns a ``CorpusSummary``; ``iter_pairs`` streams the canonical pairs (``query_id, query, doc_id,
text``) of either form.

What is made of a validated corpus (shard plans, shard inputs, scores) lives in ``storage.shards``.
The implementation lives in the modules imported below, one concept each.
"""

from __future__ import annotations

from storage.corpus.layout import CANONICAL_COLUMNS, CorpusColumns, CorpusForm
from storage.corpus.reader import iter_pairs
from storage.corpus.validation import CorpusSummary, validate_corpus

__all__ = [
    "CANONICAL_COLUMNS",
    "CorpusColumns",
    "CorpusForm",
    "CorpusSummary",
    "iter_pairs",
    "validate_corpus",
]
