"""Several runs' (or scores files') outputs fused into one ranking (``scripts/fuse.py``): joined on
``(query_id, doc_id)`` (a pair one input lacks gets nothing from it), each input's score fused by
``rrf`` or ``weighted`` as ``producer.fusion`` describes, the inputs' weights from the recipe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.errors import RerankError
from core.score_transforms import Grouping, Normalization, Normalizer, score_scale
from producer.comparison import KEYS, ScoreSide, check_unique, common_key_type
from producer.fusion import FusedInput, Fusion, ranks_in_groups, reciprocal_ranks, weighted_mean


@dataclass(frozen=True)
class NamedSide:
    name: str  # its output column is score_<name>
    side: ScoreSide
    weight: float = 1.0

    @property
    def column(self) -> str:
        return f"score_{self.name}"


@dataclass(frozen=True)
class FusedOutput:
    table: pa.Table
    columns: dict[str, str]  # what each column holds, for the file's metadata


def fuse_outputs(
    inputs: Sequence[NamedSide], fusion: Fusion, rrf_k: float, normalize: Normalization
) -> FusedOutput:
    if len(inputs) < 2:
        raise RerankError("give at least two runs or scores files to fuse")
    for named in inputs:
        check_unique(named.side)
    key_types = {key: common_key_type([named.side for named in inputs], key) for key in KEYS}
    joined: pa.Table | None = None
    for named in inputs:
        table = pa.table(
            {
                **{key: named.side.table[key].cast(kind) for key, kind in key_types.items()},
                named.column: named.side.table["score"].cast(pa.float64()),
            }
        )
        joined = table if joined is None else joined.join(table, keys=list(KEYS), join_type="full outer")
    assert joined is not None
    joined = joined.sort_by([(key, "ascending") for key in KEYS])
    query_ids = joined["query_id"]
    grouping = Grouping.of_queries(query_ids)
    fused: list[FusedInput] = []
    for named in inputs:
        values = joined[named.column].to_numpy().astype(np.float64)
        if fusion == "rrf":
            fused.append(FusedInput(reciprocal_ranks(ranks_in_groups(values, grouping), rrf_k), named.weight))
        else:
            scale = score_scale(named.side.model, named.side.metadata) if named.side.model else "score"
            normalizer = Normalizer(normalize, "query", scale)
            fused.append(FusedInput(normalizer.apply(values, query_ids), named.weight))
    final = weighted_mean(fused)
    table = joined.append_column("final_score", pa.array(final, pa.float64())).append_column(
        "final_rank", pa.array(ranks_in_groups(final, grouping).astype(np.int32), pa.int32())
    )
    return FusedOutput(table, _columns(inputs, fusion, rrf_k, normalize))


def _columns(
    inputs: Sequence[NamedSide], fusion: Fusion, rrf_k: float, normalize: Normalization
) -> dict[str, str]:
    columns = {
        named.column: f"score of {named.side.label}" + (f" ({named.side.model})" if named.side.model else "")
        for named in inputs
    }
    weights = ", ".join(f"{named.name} (weight {named.weight:g})" for named in inputs)
    columns["final_score"] = (
        f"weighted mean of 1 / ({rrf_k:g} + rank) over {weights}"
        if fusion == "rrf"
        else f"weighted mean of the per-query {normalize} of each score: {weights}"
    )
    columns["final_rank"] = "rank of final_score within the query, 1 the best"
    return columns
