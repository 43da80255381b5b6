"""Multi-stage cascades (``submit.py CORPUS --model A --then B --top-k 20 [--then C --top-k 5]``): A
scores every pair; once A's run has completed, each query's top k by A become the corpus of a run of B
(a stage of its own, on B's queue), and so on. Each stage is a run in the ledger (``cascade_of`` the
first run, ``stage`` 2, 3, ...), so leases, exactly-once publication, ``--resume``, ``--retry-failed``,
``--reuse`` and usage work per stage as for any run; the first run's options hold the plan.

A stage starts when a producer follows the cascade (``submit.py --wait``, or ``--resume RUN``) and finds
the stage before it completed; the ledger allows one run per stage, so two producers never start one
twice."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from celery import Celery
from sqlalchemy.exc import IntegrityError

from core.errors import RerankError
from core.model_spec import ModelSpec
from core.score_transforms import Grouping
from core.settings import Settings
from producer.fusion import ranks_by
from producer.run_parts import corpus_shards
from producer.shard_size import shard_size
from producer.submission import STAGES_DIRNAME, create_run, enqueue_shards, previous_scores, run_key
from storage.corpus import CorpusColumns, validate_corpus
from storage.ledger import Ledger, Run, RunStatus
from storage.location import Location, data_location
from storage.shards.inputs import read_carried
from storage.shards.publication import settle_run
from storage.shards.scores import merge_scores, read_metadata, read_scores
from storage.shards.survivors import ROOT_ROW, StageShard, write_survivors

OPTIONS_KEY = "cascade"
SURVIVOR_COLUMNS = CorpusColumns(carried=(ROOT_ROW,))


@dataclass(frozen=True)
class Stage:
    model: str
    top_k: int  # the pairs of each query it scores: the previous stage's best top_k


@dataclass(frozen=True)
class CascadePlan:
    """The stages after the first, and how their runs are made."""

    stages: tuple[Stage, ...]
    reuse_latest: bool = False
    shard_pairs: int | None = None

    @classmethod
    def parse(
        cls, first_model: str, then: list[str], top_ks: list[int], reuse_latest: bool, shard_pairs: int | None
    ) -> CascadePlan:
        if len(then) != len(top_ks):
            raise RerankError(
                f"each --then MODEL needs its --top-k K (got {len(then)} --then and {len(top_ks)} --top-k)"
            )
        for top_k in top_ks:
            if top_k < 1:
                raise RerankError(f"--top-k {top_k}: a stage must keep at least 1 pair per query")
        models = [str(ModelSpec.parse(first_model)), *(str(ModelSpec.parse(model)) for model in then)]
        for earlier, later in itertools.pairwise(models):
            if earlier == later:
                raise RerankError(
                    f"--then {later} follows a stage of the same model: it would score its pairs again"
                )
        stages = tuple(Stage(model, top_k) for model, top_k in zip(models[1:], top_ks, strict=True))
        return cls(stages, reuse_latest, shard_pairs)

    def as_options(self) -> dict[str, Any]:
        return {
            "stages": [[stage.model, stage.top_k] for stage in self.stages],
            "reuse_latest": self.reuse_latest,
            "shard_pairs": self.shard_pairs,
        }

    @classmethod
    def of(cls, run: Run) -> CascadePlan | None:
        recorded = (run.options or {}).get(OPTIONS_KEY)
        if not isinstance(recorded, dict):
            return None
        return cls(
            tuple(Stage(str(model), int(top_k)) for model, top_k in recorded.get("stages", [])),
            bool(recorded.get("reuse_latest", False)),
            recorded.get("shard_pairs"),
        )


def first_run(ledger: Ledger, run: Run) -> Run:
    """The cascade's first run, given any of its stages (a run of no cascade is its own first run)."""
    if run.cascade_of is None:
        return run
    first = ledger.get_run(run.cascade_of)
    if first is None:
        raise RerankError(f"run {run.run_id} is stage {run.stage} of run {run.cascade_of}, which is gone")
    return first


def stage_runs(ledger: Ledger, first: Run) -> list[Run]:
    """The cascade's runs that exist, stage 1 (``first``) first."""
    return [first, *ledger.stage_runs(first.run_id)]


@dataclass(frozen=True)
class NextStage:
    run: Run
    started_now: bool  # this call made the run and enqueued its shards


def next_stage(ledger: Ledger, settings: Settings, app: Celery, first: Run, after: Run) -> NextStage | None:
    """The stage after ``after``: the run that exists, or a new one (its shards enqueued) when ``after``
    has completed and the plan has another stage; None when there is none (yet)."""
    plan = CascadePlan.of(first)
    number = (after.stage or 1) + 1
    existing = _stage_run(ledger, first, number)
    if existing is not None:
        return NextStage(existing, started_now=False)
    if plan is None or number - 1 > len(plan.stages) or after.status != RunStatus.COMPLETED:
        return None
    stage = plan.stages[number - 2]
    data = data_location(settings)
    survivors = data.join(f"{run_key(first.run_id)}/{STAGES_DIRNAME}/survivors-{number}.parquet")
    write_survivors(_stage_shards(ledger, after, data), stage.top_k, survivors)
    summary = validate_corpus(survivors, SURVIVOR_COLUMNS)
    spec = ModelSpec.parse(stage.model)
    reused_from, previous = (
        previous_scores(ledger, settings, spec, "latest") if plan.reuse_latest else (None, None)
    )
    size = shard_size(settings, ledger, str(spec), plan.shard_pairs)
    try:
        created = create_run(
            survivors,
            summary,
            spec,
            SURVIVOR_COLUMNS,
            settings,
            ledger,
            size.pairs,
            previous,
            reused_from,
            cascade_of=first.run_id,
            stage=number,
            options={"top_k": stage.top_k},
        )
    except IntegrityError:  # another producer started this stage first
        existing = _stage_run(ledger, first, number)
        if existing is None:
            raise
        return NextStage(existing, started_now=False)
    run = ledger.get_run(created.run_id)
    assert run is not None
    enqueue_shards(app, ledger, run, created.shards)
    return NextStage(run, started_now=True)


def _stage_run(ledger: Ledger, first: Run, number: int) -> Run | None:
    return next((run for run in ledger.stage_runs(first.run_id) if run.stage == number), None)


def _stage_shards(ledger: Ledger, run: Run, data: Location) -> list[StageShard]:
    settle_run(data, ledger, run.run_id)
    shards = corpus_shards(run, ledger.shards(run.run_id))
    first_rows = np.cumsum([0] + [shard.pairs for shard in shards])
    return [
        StageShard(
            data.join(shard.input_path),
            data.join(shard.published_scores),
            int(first_row) if run.cascade_of is None else None,
        )
        for shard, first_row in zip(shards, first_rows, strict=False)
    ]


def write_cascade_output(ledger: Ledger, first: Run, data: Location, out: Location) -> int:
    """Every pair of the first run with each stage's score (``score_stage1``, ``score_stage2``, ...; null
    where a stage did not score it), ``stage`` (the last stage that scored it), ``final_score`` (that
    stage's score) and ``final_rank``: a query's pairs that reached the last stage first, by its score,
    then those that stopped a stage earlier, by that stage's score, and so on."""
    first = ledger.get_run(first.run_id) or first  # as it is now, not as the caller last read it
    runs = stage_runs(ledger, first)
    for run in runs:
        if run.status != RunStatus.COMPLETED:
            raise RerankError(
                f"stage {run.stage or 1} (run {run.run_id}) is {run.status}; the cascade is not done"
            )
    shards = _stage_shards(ledger, first, data)
    n_pairs = sum(shard.pairs for shard in corpus_shards(first, ledger.shards(first.run_id)))
    later_scores = [_scores_by_root_row(ledger, run, data, n_pairs) for run in runs[1:]]
    first_rows = [shard.first_root_row or 0 for shard in shards]

    def with_stages(index: int, table: pa.Table) -> pa.Table:
        rows = slice(first_rows[index], first_rows[index] + table.num_rows)
        stage_scores = [table.column("score").to_numpy().astype(np.float64)]
        stage_scores += [scores[rows].astype(np.float64) for scores in later_scores]
        reached = np.ones(table.num_rows, dtype=np.int32)
        final = stage_scores[0].copy()
        for number, scores in enumerate(stage_scores[1:], start=2):
            scored = ~np.isnan(scores)
            reached[scored] = number
            final[scored] = scores[scored]
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "query_id": table.column("query_id"),
            "doc_id": table.column("doc_id"),
        }
        for number, scores in enumerate(stage_scores, start=1):
            columns[f"score_stage{number}"] = pa.array(scores, pa.float64(), from_pandas=True)
        ranks = ranks_by(Grouping.of_queries(table.column("query_id")), reached.astype(np.float64), final)
        columns["stage"] = pa.array(reached, pa.int32())
        columns["final_score"] = pa.array(final, pa.float64())
        columns["final_rank"] = pa.array(ranks.astype(np.int32), pa.int32())
        return pa.table(columns)

    files = [shard.scores for shard in shards]
    metadata: dict[str, object] = {**read_metadata(files[0]), "run_id": first.run_id}
    metadata.pop("shard_id", None)
    metadata[OPTIONS_KEY] = {
        "stages": [
            {
                "stage": run.stage or 1,
                "run_id": run.run_id,
                "model": run.model,
                "top_k": run.options.get("top_k"),
            }
            for run in runs
        ]
    }
    metadata["columns"] = {
        **{f"score_stage{run.stage or 1}": f"raw score of {run.model}" for run in runs},
        "stage": "the last stage that scored the pair",
        "final_score": "the score of that stage",
        "final_rank": "rank within the query: pairs of later stages first, each stage's by its score",
    }
    return merge_scores(files, out, metadata, with_stages)


def _scores_by_root_row(ledger: Ledger, run: Run, data: Location, n_pairs: int) -> np.ndarray:
    """The stage's scores at each pair's row of the first run's output; NaN where it scored none."""
    scores = np.full(n_pairs, np.nan, dtype=np.float32)
    settle_run(data, ledger, run.run_id)
    for shard in ledger.shards(run.run_id):
        rows = read_carried(data.join(shard.input_path), (ROOT_ROW,))[ROOT_ROW].astype(np.int64)
        scores[rows] = read_scores(data.join(shard.published_scores), ["score"]).column("score").to_numpy()
    return scores
