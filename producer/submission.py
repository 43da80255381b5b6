"""The producer: validate a corpus, cut it into shards, record the run, enqueue one task per shard."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from celery import Celery

from core.budget import OPTIONS_KEY as BUDGET_KEY
from core.budget import Budget
from core.errors import RerankError
from core.field_scoring import FieldPlan
from core.messages import send_shard
from core.model_spec import ModelSpec
from core.settings import Settings
from producer.canary import Canary, write_canary_inputs
from producer.ranking_recipe import OPTIONS_KEY as RANKING_KEY
from producer.ranking_recipe import RankingRecipe
from producer.run_parts import CANARY_DIRNAME
from storage.corpus import CorpusColumns, CorpusSummary
from storage.ledger import Ledger, Run, RunStatus, Shard, ShardPlanRow, ShardStatus, utcnow
from storage.location import Location, data_location
from storage.shards.annotations import PairAnnotations
from storage.shards.content_hash import scoring_fingerprint
from storage.shards.inputs import write_shard_inputs
from storage.shards.plan import plan_shards
from storage.shards.reuse import PreviousScores
from storage.shards.shard_files import ShardInput

RUNS_DIRNAME = "runs"
INPUTS_DIRNAME = "_inputs"
SHADOW_DIRNAME = "_shadow"
STAGES_DIRNAME = "_stages"


@dataclass(frozen=True)
class CreatedRun:
    run_id: str
    shards: list[Shard]
    n_pairs: int
    n_queries: int
    reused_pairs: int
    canary_pairs: int = 0


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def run_key(run_id: str) -> str:
    """A run's directory, relative to the data dir."""
    return f"{RUNS_DIRNAME}/{run_id}"


def shard_output_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.parquet"


def create_run(
    corpus: Location,
    summary: CorpusSummary,
    spec: ModelSpec,
    columns: CorpusColumns,
    settings: Settings,
    ledger: Ledger,
    shard_pairs: int,
    previous: PreviousScores | None = None,
    reused_from: str | None = None,
    canary: Canary | None = None,
    shadow_of: str | None = None,
    budget: Budget | None = None,
    recipe: RankingRecipe | None = None,
    cascade_of: str | None = None,
    stage: int | None = None,
    options: dict[str, object] | None = None,
    fields: FieldPlan | None = None,
) -> CreatedRun:
    """Record a new run of a validated corpus, with its shard inputs written under the run dir.

    Each shard input is written once, with every pair's content hash and, given ``previous``, the score
    it carries over. The inputs are written before the run is recorded, so no worker ever sees a
    partial input; if writing them or recording the run fails, they are removed again. A ``canary``
    corpus becomes shards of its own after the corpus's (``producer.canary``). ``shadow_of`` makes it the
    shadow run of that production run (``submit.py --shadow``), ``cascade_of`` and ``stage`` a later
    stage of that cascade (``producer.cascade``); ``options`` are recorded beside the run's own. ``fields``
    makes it a multi-field run (``core.field_scoring``), its plan in every shard input."""
    run_id = new_run_id()
    data = data_location(settings)
    # A shadow run's or a later stage's files live under the first run's directory, out of its dataset.
    if shadow_of:
        run_dir = f"{run_key(shadow_of)}/{SHADOW_DIRNAME}/{run_id}"
    elif cascade_of:
        run_dir = f"{run_key(cascade_of)}/{STAGES_DIRNAME}/{run_id}"
    else:
        run_dir = run_key(run_id)
    run_location = data.join(run_dir)
    try:
        plans = plan_shards(summary, shard_pairs)
        # A multi-field score is another score of the same texts: its content hashes must differ.
        scored_as = str(spec) if fields is None else f"{spec} fields={fields.as_options()}"
        fingerprint = scoring_fingerprint(scored_as, settings.max_length)
        annotations = PairAnnotations(fingerprint, previous)
        inputs_dir = run_location.join(INPUTS_DIRNAME)
        inputs = write_shard_inputs(
            corpus,
            columns,
            summary,
            plans,
            inputs_dir,
            annotations,
            metadata=fields.metadata() if fields is not None else None,
        )
        reused = sum(shard.reused_pairs for shard in inputs)
        rows = _plan_rows(inputs, data, run_dir)
        canary_options: dict[str, object] | None = None
        canary_inputs: list[ShardInput] = []
        if canary is not None:
            canary_inputs, identity = write_canary_inputs(
                canary, inputs_dir.join(CANARY_DIRNAME), fingerprint, first_shard_id=len(inputs)
            )
            rows += _plan_rows(canary_inputs, data, f"{run_dir}/{CANARY_DIRNAME}")
            canary_options = {
                "path": canary.location.uri,
                "identity": identity,
                "shard_ids": [shard.shard_id for shard in canary_inputs],
                "pairs": sum(shard.n_pairs for shard in canary_inputs),
            }
        canary_pairs = sum(shard.n_pairs for shard in canary_inputs)
        run = Run(
            run_id=run_id,
            model=str(spec),
            queue=spec.queue,
            corpus_path=corpus.uri,
            n_shards=len(rows),
            n_pairs=summary.n_pairs + canary_pairs,
            n_queries=summary.n_queries + sum(shard.n_queries for shard in canary_inputs),
            options={
                "shard_pairs": shard_pairs,
                "form": summary.form,
                "fingerprint": fingerprint,
                "reused_from": reused_from,
                "reused_pairs": reused,
                **({"canary": canary_options} if canary_options is not None else {}),
                **({BUDGET_KEY: budget.as_options()} if budget is not None and budget.limited else {}),
                **({RANKING_KEY: recipe.as_options()} if recipe is not None and not recipe.empty else {}),
                **({"fields": fields.as_options()} if fields is not None else {}),
                **(options or {}),
            },
            created_at=utcnow(),
            shadow_of=shadow_of,
            cascade_of=cascade_of,
            stage=stage,
        )
        ledger.create_run(run, rows)
    except BaseException:
        with contextlib.suppress(Exception):
            run_location.delete_tree()
        raise
    return CreatedRun(run_id, ledger.shards(run_id), summary.n_pairs, summary.n_queries, reused, canary_pairs)


def _plan_rows(inputs: list[ShardInput], data: Location, output_dir: str) -> list[ShardPlanRow]:
    """The ledger rows of written shard inputs whose scores go to ``output_dir`` (under the data dir)."""
    return [
        ShardPlanRow(
            shard_id=shard.shard_id,
            pairs=shard.n_pairs,
            queries=shard.n_queries,
            input_path=shard.location.relative_to(data),
            output_path=f"{output_dir}/{shard_output_name(shard.shard_id)}",
        )
        for shard in inputs
    ]


def enqueue_shards(app: Celery, ledger: Ledger, run: Run, shards: list[Shard]) -> int:
    """Record the shards as queued, then send one task per shard to the model's queue. Done shards and
    shards a live attempt holds are skipped. Returns how many were sent. A shard recorded but not sent
    stays "queued" and ``--resume`` sends it again."""
    marked = set(ledger.mark_enqueued(run.run_id, [shard.shard_id for shard in shards]))
    for shard in shards:
        if shard.shard_id in marked:
            send_shard(app, shard.ref(run), run.queue)
    return len(marked)


def unfinished_shards(ledger: Ledger, run_id: str) -> list[Shard]:
    return ledger.shards(run_id, statuses=[s for s in ShardStatus if s != ShardStatus.DONE])


def previous_scores(
    ledger: Ledger, settings: Settings, spec: ModelSpec, which: str
) -> tuple[str | None, PreviousScores | None]:
    """The earlier run ``which`` and its scores. "latest" is the newest completed run of ``spec``, or
    none at all on the first night (then every pair is scored); an explicit run id must exist."""
    if which == "latest":
        run_id = ledger.latest_completed_run(str(spec)) if ledger.exists() else None
        if run_id is None:
            return None, None
    else:
        run = ledger.get_run(which) if ledger.exists() else None
        if run is None or run.status != RunStatus.COMPLETED:
            raise RerankError(f"--reuse {which}: no completed run with that id in the ledger")
        if run.model != str(spec):
            raise RerankError(f"--reuse {which}: that run scored {run.model}, not {spec}")
        run_id = run.run_id
    return run_id, PreviousScores.from_files(
        [data_location(settings).join(shard.published_scores) for shard in ledger.shards(run_id)]
    )


def failed_shards(ledger: Ledger, run_id: str) -> list[Shard]:
    return ledger.shards(run_id, statuses=[ShardStatus.FAILED])
