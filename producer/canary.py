"""The canary: a fixed small set of pairs scored in every run, beside the corpus, whose scores are compared
with the same canary's previous run of the same model once the run has finished. A changed engine,
dtype, maximum length or model revision moves them, even on a night when ``--reuse`` carried every corpus
pair over (canary pairs are never carried over).

The canary's pairs form shards of their own, written under the run's ``_canary/`` directory, so the run
directory as a dataset, ``--out`` and ``compare.py`` hold the corpus alone. The run's options in the
ledger say which shards they are (``options.canary``) and, once checked, the verdict; a drift past the
thresholds (``RERANK_CANARY_FAIL_IF``) marks the run ``completed_with_drift``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from core.errors import CorpusError
from core.settings import Settings
from producer.comparison import compare, metric_names, run_side
from producer.run_parts import canary_shard_ids
from producer.thresholds import crossed, parse_thresholds
from storage.corpus import CANONICAL_COLUMNS, CorpusColumns, CorpusSummary, validate_corpus
from storage.ledger import Ledger, Run, RunStatus, ShardStatus
from storage.location import Location
from storage.shards.annotations import PairAnnotations
from storage.shards.inputs import read_shard_input, write_shard_inputs
from storage.shards.plan import plan_shards
from storage.shards.shard_files import ShardInput

MAX_CANARY_PAIRS = 50_000
# The metrics a verdict keeps, beside the thresholds it crossed.
_VERDICT_METRICS = ("pairs_common", "spearman", "spearman_min", "top10", "top1_changed", "max_abs_diff")
_FINISHED = (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES, RunStatus.COMPLETED_WITH_DRIFT)


@dataclass(frozen=True)
class CanaryVerdict:
    baseline: str | None  # the run compared with; None on the canary's first run
    crossed: tuple[str, ...]  # the thresholds crossed, one line each
    metrics: dict[str, float | int | None]
    note: str | None = None  # why nothing was compared, when nothing was

    @property
    def drifted(self) -> bool:
        return bool(self.crossed)

    def describe(self) -> str:
        if self.note is not None:
            return self.note
        if self.baseline is None:
            return "first run with this canary: it is the baseline of the next"
        if self.drifted:
            return f"DRIFT against run {self.baseline}: " + "; ".join(self.crossed)
        shown = ", ".join(
            f"{name} {self.metrics[name]:.6g}"
            for name in ("spearman", "max_abs_diff")
            if self.metrics.get(name) is not None
        )
        return f"clean against run {self.baseline} ({shown})"

    def as_record(self) -> dict[str, object]:
        return {
            "baseline": self.baseline,
            "crossed": list(self.crossed),
            "metrics": self.metrics,
            "note": self.note,
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> CanaryVerdict:
        crossed_lines = record.get("crossed") or []
        metrics = record.get("metrics") or {}
        note = record.get("note")
        baseline = record.get("baseline")
        return cls(
            baseline=str(baseline) if baseline is not None else None,
            crossed=tuple(str(line) for line in crossed_lines) if isinstance(crossed_lines, list) else (),
            metrics=dict(metrics) if isinstance(metrics, dict) else {},
            note=str(note) if note is not None else None,
        )


@dataclass(frozen=True)
class Canary:
    """A validated canary file (default column names)."""

    location: Location
    summary: CorpusSummary


def validate_canary(location: Location) -> Canary:
    """Check the canary file as a corpus, and that it is small; raises ``CorpusError`` naming it."""
    try:
        summary = validate_corpus(location, CorpusColumns())
    except CorpusError as exc:
        raise CorpusError(f"canary: {exc}") from exc
    if summary.n_pairs > MAX_CANARY_PAIRS:
        raise CorpusError(
            f"canary {location.uri}: {summary.n_pairs:,} pairs; a canary is a small fixed set (at most "
            f"{MAX_CANARY_PAIRS:,} pairs)"
        )
    return Canary(location, summary)


def write_canary_inputs(
    canary: Canary, inputs_dir: Location, fingerprint: str, first_shard_id: int
) -> tuple[list[ShardInput], str]:
    """Write the canary as one shard input under ``inputs_dir``, with content hashes but nothing carried
    over. Returns the written shard (numbered from ``first_shard_id`` on) and the canary's identity: a
    hash of its pairs."""
    summary = canary.summary
    plans = plan_shards(summary, summary.n_pairs)
    written = write_shard_inputs(
        canary.location, CorpusColumns(), summary, plans, inputs_dir, PairAnnotations(fingerprint)
    )
    inputs = [
        ShardInput(first_shard_id + shard.shard_id, shard.location, shard.n_pairs, shard.n_queries)
        for shard in written
    ]
    return inputs, _identity([shard.location for shard in inputs])


def check_canary(ledger: Ledger, settings: Settings, run: Run) -> CanaryVerdict | None:
    """The run's canary verdict: recorded in the ledger the first time a finished run is checked, read
    back after that. None for a run without a canary or one still running."""
    canary = run.options.get("canary") if run.options else None
    if not isinstance(canary, dict) or run.status not in _FINISHED:
        return None
    if isinstance(canary.get("verdict"), dict):
        return CanaryVerdict.from_record(canary["verdict"])
    verdict = _judge(ledger, settings, run, canary)
    recorded = ledger.record_canary_verdict(run.run_id, verdict.as_record(), verdict.drifted)
    recorded_canary = recorded.options.get("canary")
    stored = recorded_canary.get("verdict") if isinstance(recorded_canary, dict) else None
    return CanaryVerdict.from_record(stored) if isinstance(stored, dict) else verdict


def _judge(ledger: Ledger, settings: Settings, run: Run, canary: dict[str, object]) -> CanaryVerdict:
    shards = {shard.shard_id: shard for shard in ledger.shards(run.run_id)}
    mine = canary_shard_ids(run)
    if any(shards[shard_id].status != ShardStatus.DONE for shard_id in mine if shard_id in shards):
        return CanaryVerdict(
            None, (), {}, note="not checked: the canary's shard failed (see the failed shards)"
        )
    baseline = _baseline(ledger, run, str(canary.get("identity")))
    if baseline is None:
        return CanaryVerdict(None, (), {})
    thresholds = parse_thresholds(settings.canary_fail_if, metric_names())
    comparison = compare(
        run_side(ledger, settings, baseline, canary=True), run_side(ledger, settings, run, canary=True)
    )
    metrics = {name: comparison.metrics[name] for name in _VERDICT_METRICS}
    return CanaryVerdict(baseline.run_id, tuple(crossed(thresholds, comparison.metrics)), metrics)


def _baseline(ledger: Ledger, run: Run, identity: str) -> Run | None:
    """The newest earlier run of the same model whose canary, the same pairs, was scored in full."""
    for earlier in ledger.recent_runs(run.model, before=run.created_at):
        canary = earlier.options.get("canary") if earlier.options else None
        if not isinstance(canary, dict) or canary.get("identity") != identity:
            continue
        shard_ids = canary_shard_ids(earlier)
        done = {shard.shard_id for shard in ledger.shards(earlier.run_id, statuses=[ShardStatus.DONE])}
        if shard_ids and shard_ids <= done:
            return earlier
    return None


def _identity(inputs: Sequence[Location]) -> str:
    """A hash of the canary's pairs (ids and texts, whatever the model or its settings)."""
    digest = hashlib.sha256()
    for location in inputs:
        pairs = read_shard_input(location).select(list(CANONICAL_COLUMNS))
        pairs = pairs.sort_by([("query_id", "ascending"), ("doc_id", "ascending")])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, pairs.schema) as writer:
            writer.write_table(pairs)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:16]
