"""The pairs that go on to a cascade's next stage: each query's top k by the stage's rank, read shard by
shard from the stage's inputs and scores (a shard's scores are in its input's row order) and written,
atomically, as one corpus for the next stage. Every survivor keeps ``root_row``, its row in the
cascade's first run's output, so each stage's scores are put beside the first run's without a join."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.atomic import atomic_write
from storage.corpus.layout import CANONICAL_COLUMNS, carried_column
from storage.location import Location
from storage.shards.inputs import read_shard_input
from storage.shards.scores import read_scores

ROOT_ROW = "root_row"


@dataclass(frozen=True)
class StageShard:
    """A finished shard of a stage: its input, its published scores, and, for the cascade's first run,
    the row of its first pair in that run's output (later stages' inputs carry ``root_row``)."""

    input: Location
    scores: Location
    first_root_row: int | None = None


def write_survivors(shards: Sequence[StageShard], top_k: int, target: Location) -> int:
    """Write the pairs ranked at most ``top_k`` in their query (``query_id, query, doc_id, text,
    root_row``) to ``target``, whole or not at all. Returns how many survived."""
    survived = 0
    with atomic_write(target) as temporary, temporary.open_output() as sink:
        writer: pq.ParquetWriter | None = None
        try:
            for shard in shards:
                table = _survivors_of(shard, top_k)
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
                writer.write_table(table)
                survived += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return survived


def _survivors_of(shard: StageShard, top_k: int) -> pa.Table:
    pairs = read_shard_input(shard.input)
    ranks = read_scores(shard.scores, ["rank"]).column("rank")
    if len(ranks) != pairs.num_rows:
        raise ValueError(f"{shard.scores.uri} has {len(ranks)} scores for {pairs.num_rows} input pairs")
    if shard.first_root_row is not None:
        root_rows = pa.array(np.arange(pairs.num_rows, dtype=np.int64) + shard.first_root_row)
    else:
        root_rows = pc.cast(pairs.column(carried_column(ROOT_ROW)), pa.int64())
    table = pairs.select(list(CANONICAL_COLUMNS)).append_column(ROOT_ROW, root_rows)
    return table.filter(pc.less_equal(ranks, top_k))
