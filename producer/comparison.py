"""Two score sets side by side: a run in the ledger or a scores file (or dataset) on either side, joined
on ``(query_id, doc_id)``, summarised as flat metrics that a report prints and a guard checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.errors import RerankError, StorageError
from core.settings import Settings
from producer.run_parts import canary_shards, corpus_shards
from producer.score_agreement import QUANTILES, PerQuery, QueryGroups, distribution, per_query
from storage.ledger import Ledger, Run, ShardStatus
from storage.location import Location, data_location, guarded, location_of
from storage.shards.scores import read_metadata

KEYS = ("query_id", "doc_id")
OPTIONAL_COLUMNS = ("tokens", "truncated")
DEFAULT_TOP_KS = (1, 5, 10)
_COUNTS = ("pairs_a", "pairs_b", "pairs_common", "only_a", "only_b", "queries", "queries_without_order")
_PER_QUERY = ("spearman", "spearman_median", "spearman_p5", "spearman_min", "kendall", "kendall_min")
_DISTRIBUTION = ("ks", "ks_pvalue", "mean_abs_diff", "max_abs_diff")


@dataclass(frozen=True)
class ScoreSide:
    """One side of a comparison: its label (run id or file), the model when known, and its pairs'
    ``query_id, doc_id, score`` (plus ``tokens`` and ``truncated`` when the output has them)."""

    label: str
    model: str | None
    table: pa.Table
    notes: tuple[str, ...] = ()
    metadata: dict[str, object] = field(default_factory=dict)  # the first scores file's

    @property
    def truncation_rate(self) -> float | None:
        if "truncated" not in self.table.column_names or self.table.num_rows == 0:
            return None
        truncated = pc.sum(pc.cast(pc.fill_null(self.table["truncated"], False), pa.int64())).as_py()
        return truncated / self.table.num_rows


@dataclass(frozen=True)
class Comparison:
    a: ScoreSide
    b: ScoreSide
    top_ks: tuple[int, ...]
    metrics: dict[str, float | int | None]
    per_query: PerQuery = field(repr=False)
    scores_a: np.ndarray = field(repr=False)  # the common pairs' scores, in the same order on both sides
    scores_b: np.ndarray = field(repr=False)


def metric_names(top_ks: Sequence[int] = DEFAULT_TOP_KS) -> list[str]:
    """The names of a comparison's metrics, in the order ``compare`` gives them."""
    quantiles = [f"{side}_p{round(q * 100):02d}" for side in ("a", "b") for q in QUANTILES]
    return [
        *_COUNTS,
        *_PER_QUERY,
        *(f"top{k}" for k in sorted(set(top_ks))),
        "top1_changed",
        *_DISTRIBUTION,
        *quantiles,
        "truncated_a",
        "truncated_b",
    ]


def load_side(text: str, settings: Settings) -> ScoreSide:
    """``text`` names a run id in the ledger, or a scores Parquet file or dataset (path or URI)."""
    if _looks_like_location(text):
        return _file_side(text, settings)
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        run = ledger.get_run(text) if ledger.exists() else None
        if run is None:
            raise RerankError(
                f"{text}: not a run id in the ledger, nor a scores file (give a path ending in .parquet)"
            )
        return run_side(ledger, settings, run)
    finally:
        ledger.dispose()


def run_side(ledger: Ledger, settings: Settings, run: Run, canary: bool = False) -> ScoreSide:
    """A run's finished shards of the corpus (or, with ``canary``, of its canary pairs)."""
    every = ledger.shards(run.run_id)
    shards = canary_shards(run, every) if canary else corpus_shards(run, every)
    done = [shard for shard in shards if shard.status == ShardStatus.DONE]
    if not done:
        raise RerankError(f"run {run.run_id} has no finished shard to compare (status {run.status})")
    missing = len(shards) - len(done)
    notes = (f"{missing} of {len(shards)} shards not done",) if missing else ()
    data = data_location(settings)
    files = [data.join(shard.published_scores) for shard in done]
    table = _read_scores(files, run.run_id)
    return ScoreSide(run.run_id, run.model, table, notes, read_metadata(files[0]))


def compare(a: ScoreSide, b: ScoreSide, top_ks: Sequence[int] = DEFAULT_TOP_KS) -> Comparison:
    """Join the two sides on ``(query_id, doc_id)`` and measure how the common pairs' scores agree."""
    top_ks = tuple(sorted(set(top_ks)))
    for side in (a, b):
        check_unique(side)
    keys = {key: common_key_type([a, b], key) for key in KEYS}
    left = pa.table(
        {**{key: a.table[key].cast(kind) for key, kind in keys.items()}, "score_a": a.table["score"]}
    )
    right = pa.table(
        {**{key: b.table[key].cast(kind) for key, kind in keys.items()}, "score_b": b.table["score"]}
    )
    joined = left.join(right, keys=list(KEYS), join_type="inner")
    joined = joined.sort_by([(key, "ascending") for key in KEYS])
    scores_a = joined["score_a"].to_numpy().astype(np.float64)
    scores_b = joined["score_b"].to_numpy().astype(np.float64)
    groups = QueryGroups.from_boundaries(_new_query_flags(joined["query_id"]))
    queries = per_query(groups, scores_a, scores_b, (*top_ks, 1))
    metrics = _metrics(a, b, joined.num_rows, groups, queries, top_ks, scores_a, scores_b)
    return Comparison(a, b, top_ks, metrics, queries, scores_a, scores_b)


def _metrics(
    a: ScoreSide,
    b: ScoreSide,
    common: int,
    groups: QueryGroups,
    queries: PerQuery,
    top_ks: tuple[int, ...],
    scores_a: np.ndarray,
    scores_b: np.ndarray,
) -> dict[str, float | int | None]:
    spread = distribution(scores_a, scores_b)
    metrics: dict[str, float | int | None] = {
        "pairs_a": a.table.num_rows,
        "pairs_b": b.table.num_rows,
        "pairs_common": common,
        "only_a": a.table.num_rows - common,
        "only_b": b.table.num_rows - common,
        "queries": groups.count,
        "queries_without_order": int(np.isnan(queries.spearman).sum()),
        "spearman": _mean(queries.spearman),
        "spearman_median": _quantile(queries.spearman, 0.5),
        "spearman_p5": _quantile(queries.spearman, 0.05),
        "spearman_min": _min(queries.spearman),
        "kendall": _mean(queries.kendall),
        "kendall_min": _min(queries.kendall),
    }
    for k in top_ks:
        metrics[f"top{k}"] = _mean(queries.top_k_overlap[k])
    metrics["top1_changed"] = _mean(queries.top_k_overlap[1] < 1.0) if groups.count else math.nan
    metrics["ks"] = spread.ks_statistic
    metrics["ks_pvalue"] = spread.ks_pvalue
    metrics["mean_abs_diff"] = spread.mean_abs_diff
    metrics["max_abs_diff"] = spread.max_abs_diff
    for name, side_quantiles in (("a", spread.quantiles_a), ("b", spread.quantiles_b)):
        for q, value in zip(QUANTILES, side_quantiles, strict=True):
            metrics[f"{name}_p{round(q * 100):02d}"] = value
    metrics["truncated_a"] = a.truncation_rate
    metrics["truncated_b"] = b.truncation_rate
    return metrics


def _looks_like_location(text: str) -> bool:
    return "://" in text or "/" in text or text.endswith(".parquet")


def _file_side(text: str, settings: Settings) -> ScoreSide:
    location = location_of(text, settings)
    if not guarded(location.exists, location):
        raise RerankError(f"{text}: no such scores file or directory")
    files = [location] if location.is_file() else [f for f in location.files() if f.name.endswith(".parquet")]
    if not files:
        raise RerankError(f"{text}: no .parquet files in that directory")
    return ScoreSide(
        label=text, model=None, table=_read_scores(files, text), metadata=read_metadata(files[0])
    )


def _read_scores(files: Sequence[Location], label: str) -> pa.Table:
    first = files[0]
    try:
        dataset = ds.dataset([f.path for f in files], filesystem=first.filesystem, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise RerankError(f"{label}: cannot read its scores as Parquet: {exc}") from exc
    missing = [name for name in (*KEYS, "score") if name not in dataset.schema.names]
    if missing:
        raise RerankError(
            f"{label}: no column {', '.join(missing)}; a scores file has query_id, doc_id and score"
        )
    columns = [*KEYS, "score", *[name for name in OPTIONAL_COLUMNS if name in dataset.schema.names]]
    try:
        return dataset.to_table(columns=columns)
    except OSError as exc:
        raise StorageError(f"{label}: reading its scores failed: {exc}") from exc


def common_key_type(sides: Sequence[ScoreSide], key: str) -> pa.DataType:
    """One type for ``key`` on every side: text (string or large_string) or integers of any width."""
    types = [side.table.schema.field(key).type for side in sides]
    if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
        return pa.large_string()
    if all(pa.types.is_integer(t) for t in types):
        return pa.int64()
    described = ", ".join(f"{t} in {side.label}" for t, side in zip(types, sides, strict=True))
    raise RerankError(f"{key} is {described}: they cannot name the same pairs")


def check_unique(side: ScoreSide) -> None:
    distinct = side.table.group_by(list(KEYS)).aggregate([]).num_rows
    if distinct != side.table.num_rows:
        raise RerankError(
            f"{side.label}: {side.table.num_rows - distinct} (query_id, doc_id) pair(s) appear more than once"
        )


def _new_query_flags(query_ids: pa.ChunkedArray) -> np.ndarray:
    n_pairs = len(query_ids)
    flags = np.zeros(n_pairs, dtype=bool)
    if n_pairs:
        flags[0] = True
        column = query_ids.combine_chunks()
        flags[1:] = pc.not_equal(column.slice(1), column.slice(0, n_pairs - 1)).to_numpy(zero_copy_only=False)
    return flags


def _mean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    return float(defined.mean()) if len(defined) else math.nan


def _min(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.min()) if len(defined) else math.nan


def _quantile(values: np.ndarray, q: float) -> float:
    defined = values[~np.isnan(values)]
    return float(np.quantile(defined, q)) if len(defined) else math.nan
