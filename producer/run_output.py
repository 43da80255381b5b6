"""A finished run's output in one Parquet file (``submit.py --out``): its corpus shards' scores merged,
with the run's ranking recipe applied (``producer.ranking``) and recorded in the file's metadata."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.score_transforms import score_scale
from producer.ranking import Ranker
from producer.ranking_recipe import OPTIONS_KEY, RankingRecipe
from producer.run_parts import corpus_shards
from storage.ledger import Ledger, Run
from storage.location import Location
from storage.shards.inputs import read_carried
from storage.shards.publication import settle_run
from storage.shards.scores import merge_scores, read_metadata, read_scores


def run_recipe(run: Run) -> RankingRecipe:
    recorded = (run.options or {}).get(OPTIONS_KEY)
    return RankingRecipe.from_options(recorded if isinstance(recorded, dict) else None)


def write_run_output(ledger: Ledger, run: Run, data: Location, out: Location) -> int:
    """Merge the run's corpus shards into ``out`` (atomically), ranked as the run's recipe says; returns
    the number of rows written."""
    settle_run(data, ledger, run.run_id)
    shards = corpus_shards(run, ledger.shards(run.run_id))
    files = [data.join(shard.published_scores) for shard in shards]
    metadata: dict[str, object] = {**read_metadata(files[0]), "run_id": run.run_id}
    metadata.pop("shard_id", None)
    fields = (run.options or {}).get("fields")
    if isinstance(fields, dict):
        metadata["fields"] = fields
    recipe = run_recipe(run)
    if recipe.empty:
        return merge_scores(files, out, metadata)
    ranker = Ranker(recipe, score_scale(run.model, metadata), run.model)
    if ranker.needs_fit:
        ranker.fit(np.concatenate([read_scores(f, ["score"]).column("score").to_numpy() for f in files]))
    inputs = [data.join(shard.input_path) for shard in shards]

    def ranked(index: int, table: pa.Table) -> pa.Table:
        return ranker.rank(table, read_carried(inputs[index], recipe.carried_columns))

    metadata.update(
        {OPTIONS_KEY: recipe.as_options(), "score_scale": ranker.scale, "columns": ranker.columns()}
    )
    return merge_scores(files, out, metadata, ranked)
