"""Submit a corpus for re-scoring: validate it, cut it into shards of whole queries, record the run in
the ledger and enqueue one task per shard for the workers that host the model.

Exit codes: 0 done (or enqueued, without --wait); 1 finished with failed shards; 2 bad input or flags;
3 broker or ledger unreachable; 4 --timeout passed before the run finished; 5 finished, but the canary
drifted (--canary); 6 paused: the run's budget is spent (raise it with --resume RUN_ID --max-cost-usd);
130 interrupted (the run goes on; follow it again with --resume RUN_ID --wait).

Examples:
  python scripts/submit.py corpus.parquet --model all-MiniLM-L6-v2 --wait --out scores.parquet
  python scripts/submit.py --resume 20261121-231500-ab12cd --wait
  python scripts/submit.py --retry-failed 20261121-231500-ab12cd --wait --out scores.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from core.broker import resolve_broker_url
from core.broker.celery_app import create_app
from core.broker.presence import live_workers
from core.broker.url import connect
from core.budget import Budget, spend_keys
from core.errors import BrokerError, CorpusError, RerankError, StorageUnreachableError
from core.field_scoring import FieldPlan
from core.kinds import API_KINDS, LOCAL_KINDS
from core.model_spec import ModelSpec
from core.reach import local_only_warning
from core.score_transforms import NORMALIZATIONS, SCOPES
from core.settings import Settings, get_settings
from producer.canary import check_canary, validate_canary
from producer.cascade import OPTIONS_KEY as CASCADE_KEY
from producer.cascade import CascadePlan, first_run, next_stage, write_cascade_output
from producer.comparison import compare, run_side
from producer.comparison_report import show_comparison
from producer.fusion import DEFAULT_RRF_K, FUSIONS, METRICS
from producer.ranking_recipe import DEFAULT_RERANK_WEIGHT, RankingRecipe, recipe_from_flags
from producer.report import show_run_summary
from producer.run_output import write_run_output
from producer.run_parts import corpus_shards
from producer.shard_size import shard_size
from producer.submission import (
    create_run,
    enqueue_shards,
    failed_shards,
    previous_scores,
    unfinished_shards,
)
from producer.truncation_check import sample_truncation, truncation_warning
from producer.watch import wait_for_run
from storage.corpus import CorpusColumns, CorpusSummary, validate_corpus
from storage.ledger import Ledger, RunStatus, Shard
from storage.ledger.leases import PAUSED_BY
from storage.ledger.schema import Run
from storage.ledger.types import RunProgress
from storage.location import Location, data_location, location_of
from storage.shards.publication import settle_run

EXIT_OK, EXIT_FAILED_SHARDS, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_DRIFT, EXIT_PAUSED = 5, 6
WORKER_CHECK_EVERY_S = 15.0


def build_parser() -> argparse.ArgumentParser:
    defaults = CorpusColumns()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "corpus",
        nargs="?",
        help="the corpus (long or nested form): a Parquet file or a directory of them (Hive-partitioned or "
        "not), a local path or a URI such as s3://bucket/corpus/",
    )
    parser.add_argument(
        "--model",
        help=f"reranker: kind:name, kind a local backend ({', '.join(LOCAL_KINDS)}) or a "
        f"hosted API ({', '.join(API_KINDS)})",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="re-enqueue the shards of RUN_ID that are not done (failed ones too)",
    )
    parser.add_argument(
        "--retry-failed",
        metavar="RUN_ID",
        help="re-enqueue only the failed shards of RUN_ID, with fresh tries",
    )
    parser.add_argument(
        "--reuse",
        metavar="latest|RUN_ID",
        help="incremental run: score only pairs whose content hash is not in that earlier run of the same "
        "model (latest: the newest completed one) and carry its scores over for the rest",
    )
    parser.add_argument(
        "--canary",
        metavar="FILE",
        help="a corpus of a few fixed pairs scored beside the corpus in every run (default: "
        "RERANK_CANARY_PATH); once the run finishes, their scores are compared with the canary's previous "
        "run of the model and a drift past RERANK_CANARY_FAIL_IF marks the run completed_with_drift",
    )
    parser.add_argument(
        "--shadow",
        metavar="MODEL",
        help="also score the corpus with MODEL, as a shadow run on its own queue with its own output under "
        "the run's _shadow/ directory and its usage counted as the shadow's; --wait then compares the two "
        "(the production output, --out included, is --model's alone)",
    )
    parser.add_argument(
        "--max-cost-usd",
        type=float,
        metavar="USD",
        help="the run's budget in API cost: workers send no request once spent plus reserved reach it, and "
        "the run pauses (paused_budget) until --resume RUN_ID raises it (with --resume: the new budget)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="the run's budget in tokens, enforced as --max-cost-usd is (with --resume: the new budget)",
    )
    parser.add_argument(
        "--then",
        action="append",
        default=[],
        metavar="MODEL",
        help="a cascade: once --model has scored every pair, MODEL scores only each query's --top-k best, "
        "as a stage of its own on MODEL's queue; repeat --then/--top-k for more stages",
    )
    parser.add_argument(
        "--top-k",
        action="append",
        default=[],
        type=int,
        metavar="K",
        help="with --then: the pairs of each query the stage scores (the previous stage's K best)",
    )
    _add_ranking_flags(parser)
    fields = parser.add_argument_group("multi-field scoring")
    fields.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="score this text column of each document as a field of its own (give two or more); the score "
        "is the weighted sum of the fields' scores, each kept as score_NAME",
    )
    fields.add_argument("--field-weight", metavar="NAME=W,...", help="the fields' weights (default: 1 each)")
    fields.add_argument(
        "--field-normalize",
        choices=NORMALIZATIONS,
        help="normalize each field's scores per query before the weighted sum (default: raw scores)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the run until it finishes")
    parser.add_argument(
        "--out", help="with --wait: merge all scores into this Parquet file (a local path or a URI)"
    )
    parser.add_argument(
        "--shard-pairs",
        type=int,
        help="target pairs per shard (default: RERANK_SHARD_PAIRS if set, else RERANK_SHARD_DEVICE_SECONDS "
        "of the model's measured speed)",
    )
    parser.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress updates")
    columns = parser.add_argument_group("column names")
    columns.add_argument("--query-id-column", default=defaults.query_id, help="default: %(default)s")
    columns.add_argument("--query-column", default=defaults.query, help="default: %(default)s")
    columns.add_argument("--doc-id-column", default=defaults.doc_id, help="default: %(default)s")
    columns.add_argument("--text-column", default=defaults.text, help="default: %(default)s")
    columns.add_argument(
        "--candidates-column",
        default=defaults.candidates,
        help="nested form's list column (default: %(default)s)",
    )
    return parser


def _add_ranking_flags(parser: argparse.ArgumentParser) -> None:
    ranking = parser.add_argument_group(
        "ranking (columns added to the --out file beside the raw score; see README, Ranking)"
    )
    ranking.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        help="add normalized_score: the raw score transformed (a probability is never put through a "
        "sigmoid again)",
    )
    ranking.add_argument(
        "--normalize-over",
        choices=SCOPES,
        default="query",
        help="statistics of each query (default) or of the whole run",
    )
    ranking.add_argument(
        "--source",
        action="append",
        default=[],
        metavar=f"NAME=COLUMN[:{'|'.join(m for m in METRICS if m != 'score')}]",
        help="a first-stage column of the corpus (a score, a distance or a rank), kept as source_NAME and "
        "fused by --fuse; repeat for several",
    )
    ranking.add_argument(
        "--fuse", choices=FUSIONS, help="fuse the sources and the reranker into final_score and final_rank"
    )
    ranking.add_argument(
        "--rrf-k", type=float, default=DEFAULT_RRF_K, help="k of --fuse rrf (default: %(default)s)"
    )
    ranking.add_argument(
        "--fusion-weights", metavar="NAME=W,...", help="the sources' weights in the fusion (default: 1 each)"
    )
    ranking.add_argument(
        "--rerank-weight",
        type=float,
        default=DEFAULT_RERANK_WEIGHT,
        help="final = W * reranker term + (1 - W) * fused sources (default: %(default)s)",
    )
    ranking.add_argument(
        "--source-normalize",
        choices=NORMALIZATIONS,
        default="minmax",
        help="per-query normalization of each source before --fuse weighted (default: %(default)s)",
    )


def _ranking_recipe(args: argparse.Namespace) -> RankingRecipe:
    return recipe_from_flags(
        args.normalize,
        args.normalize_over,
        args.source,
        args.fuse,
        args.rrf_k,
        args.fusion_weights,
        args.rerank_weight,
        args.source_normalize,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and args.retry_failed:
        parser.error("give either --resume or --retry-failed")
    existing = args.resume or args.retry_failed
    if existing and args.reuse:
        parser.error("--reuse applies to a new submission, not to --resume/--retry-failed")
    if existing and (args.corpus or args.model):
        parser.error("--resume/--retry-failed take no corpus or --model: the run already records them")
    if not existing and (args.corpus is None or args.model is None):
        parser.error("give a corpus and --model, or --resume RUN_ID, or --retry-failed RUN_ID")
    if args.shadow is not None and existing:
        parser.error("--shadow starts with a new run: give a corpus and --model")
    if args.out is not None and not args.wait:
        parser.error("--out needs --wait: the scores are merged once the run has finished")
    if args.max_cost_usd is not None and not args.max_cost_usd > 0:
        parser.error("--max-cost-usd must be a positive amount")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be at least 1")
    if args.retry_failed and (args.max_cost_usd is not None or args.max_tokens is not None):
        parser.error("a budget is given to a new run or raised with --resume RUN_ID, not --retry-failed")
    if args.shard_pairs is not None and args.shard_pairs < 1:
        parser.error("--shard-pairs must be at least 1")
    if existing and not _ranking_recipe(args).empty:
        parser.error("--resume/--retry-failed take no ranking flags: the run already records its recipe")
    if existing and (args.then or args.top_k):
        parser.error("--then starts a new cascade; --resume/--retry-failed RUN_ID goes on with its stages")
    if (args.field_weight or args.field_normalize) and not args.field:
        parser.error("--field-weight and --field-normalize apply to --field NAME=COLUMN fields")
    if args.field:
        if existing:
            parser.error("--field starts a new run; --resume/--retry-failed RUN_ID keeps the run's fields")
        for flag, given in (("--reuse", args.reuse), ("--then", args.then), ("--shadow", args.shadow)):
            if given:
                parser.error(f"--field cannot be combined with {flag} yet")
    if args.then or args.top_k:
        if args.shadow is not None:
            parser.error("--then and --shadow cannot be combined: give one of them")
        if args.max_cost_usd is not None or args.max_tokens is not None:
            parser.error("a budget limits one run; a cascade's stages are not budgeted (drop --max-*)")
        if not _ranking_recipe(args).empty:
            parser.error("--normalize/--source/--fuse apply to one model's scores, not to a cascade's stages")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return _submit(args, settings)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BrokerError, StorageUnreachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except SQLAlchemyError as exc:
        print(
            f"error: the ledger is unreachable: {type(exc).__name__}: {exc.args[0] if exc.args else ''}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: the run goes on; follow it with --resume RUN_ID --wait", file=sys.stderr)
        return EXIT_INTERRUPTED


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    recipe = _ranking_recipe(args)
    fields = FieldPlan.parse(args.field, args.field_weight, args.field_normalize) if args.field else None
    data = data_location(settings)
    out = _checked_out(location_of(args.out, settings)) if args.out is not None else None
    columns = CorpusColumns(
        query_id=args.query_id_column,
        query=args.query_column,
        doc_id=args.doc_id_column,
        text=fields.columns[0] if fields is not None else args.text_column,
        candidates=args.candidates_column,
        carried=recipe.carried_columns,
        fields=fields.columns[1:] if fields is not None else (),
    )
    shadow: _Shadow | None = None
    if args.resume or args.retry_failed:
        flag, run_id = ("--resume", args.resume) if args.resume else ("--retry-failed", args.retry_failed)
        ledger = Ledger(settings.resolved_ledger_url)
        run = ledger.get_run(run_id) if ledger.exists() else None
        if run is None:
            raise RerankError(f"{flag} {run_id}: no such run in the ledger at {_safe(settings)}")
        run = first_run(ledger, run)  # a cascade goes on from its first run, stage by stage
        broker_url = resolve_broker_url(settings)
        if args.max_cost_usd is not None or args.max_tokens is not None:
            run = _raise_budget(ledger, settings, broker_url, run, args)
        elif run.status == RunStatus.PAUSED_BUDGET:
            described = Budget.from_options(run.options).describe()
            print(
                f"warning: run {run.run_id} is paused by its budget ({described}); its shards stop again "
                "at once unless --max-cost-usd or --max-tokens raises it",
                file=sys.stderr,
            )
        shards = unfinished_shards(ledger, run.run_id) if args.resume else failed_shards(ledger, run.run_id)
    else:
        spec = ModelSpec.parse(args.model)
        cascade = (
            CascadePlan.parse(args.model, args.then, args.top_k, args.reuse == "latest", args.shard_pairs)
            if args.then or args.top_k
            else None
        )
        shadow_spec = ModelSpec.parse(args.shadow) if args.shadow else None
        if shadow_spec == spec:
            raise RerankError(f"--shadow {args.shadow} is the production model itself; name a second model")
        if recipe.normalize == "sigmoid" and spec.declared_scale == "probability":
            print(
                f"note: {spec.kind} scores already are probabilities; normalized_score keeps them as is",
                file=sys.stderr,
            )
        corpus = location_of(args.corpus, settings)
        summary = validate_corpus(corpus, columns)
        canary_file = args.canary or settings.canary_path
        canary = validate_canary(location_of(canary_file, settings)) if canary_file else None
        ledger = Ledger(settings.resolved_ledger_url)
        reused_from, previous = (
            previous_scores(ledger, settings, spec, args.reuse) if args.reuse else (None, None)
        )
        broker_url = resolve_broker_url(settings)
        ledger.create_schema()
        size = shard_size(settings, ledger, str(spec), args.shard_pairs)
        shard_pairs = size.pairs
        data.check_container()  # a missing bucket or denied access is told before anything is written
        budget = Budget(args.max_cost_usd, args.max_tokens)
        created = create_run(
            corpus,
            summary,
            spec,
            columns,
            settings,
            ledger,
            shard_pairs,
            previous,
            reused_from,
            canary,
            budget=budget,
            recipe=recipe,
            options={CASCADE_KEY: cascade.as_options()} if cascade is not None else None,
            fields=fields,
        )
        run = ledger.get_run(created.run_id)
        assert run is not None
        shards = created.shards
        print(
            f"run {run.run_id}: {created.n_pairs:,} pairs of {created.n_queries:,} queries "
            f"in {len(shards)} shard(s) of up to {shard_pairs:,} pairs ({size.reason}) for {run.model}",
            file=sys.stderr,
        )
        _warn_if_truncating(
            spec, settings, [data.join(shard.input_path) for shard in corpus_shards(run, shards)]
        )
        if canary is not None:
            print(
                f"canary: {created.canary_pairs:,} pairs from {canary.location.uri}, compared with the "
                "canary's previous run of this model once the run finishes",
                file=sys.stderr,
            )
        if shadow_spec is not None:
            shadow = _create_shadow(corpus, summary, shadow_spec, columns, settings, ledger, args, run)
        if args.reuse and reused_from is None:
            print(f"--reuse latest: no earlier completed run of {spec}; scoring every pair", file=sys.stderr)
        if reused_from is not None:
            print(
                f"reusing {created.reused_pairs:,} scores from run {reused_from}; "
                f"{created.n_pairs - created.reused_pairs:,} pairs to score",
                file=sys.stderr,
            )
    app = create_app(settings, broker_url)
    try:
        sent = enqueue_shards(app, ledger, run, shards)
    except Exception as exc:
        raise BrokerError(
            f"enqueueing run {run.run_id} failed ({type(exc).__name__}); it is recorded in the ledger: "
            f"retry with --resume {run.run_id}"
        ) from exc
    if args.resume or args.retry_failed:
        for later in ledger.stage_runs(run.run_id):
            again = (
                unfinished_shards(ledger, later.run_id)
                if args.resume
                else failed_shards(ledger, later.run_id)
            )
            sent += enqueue_shards(app, ledger, later, again)
        print(f"run {run.run_id}: re-enqueued {sent} shard(s)", file=sys.stderr)
    _warn_if_unserved(broker_url, settings, run)
    if shadow is not None:
        enqueue_shards(app, ledger, shadow.run, shadow.shards)
        _warn_if_unserved(broker_url, settings, shadow.run)
    warning = local_only_warning(settings)
    if warning:
        print(warning, file=sys.stderr)
    print(run.run_id, flush=True)  # stdout carries only the run id, for scripts
    is_cascade = CascadePlan.of(run) is not None
    if not args.wait:
        if is_cascade:
            _advance_cascade(ledger, settings, app, run)
        return EXIT_OK
    if is_cascade:
        progress = _follow_cascade(ledger, settings, app, run, broker_url, args)
    else:
        progress = _follow(ledger, run, broker_url, settings, args)
    if shadow is not None:
        _compare_with_shadow(
            ledger, settings, run, shadow.run, _follow(ledger, shadow.run, broker_url, settings, args)
        )
    if progress.finished:  # the run directory holds every done shard's file, whoever was killed when
        for settled in (run, *ledger.stage_runs(run.run_id)):
            settle_run(data, ledger, settled.run_id)
    finished = ledger.get_run(run.run_id)
    verdict = check_canary(ledger, settings, finished) if finished is not None else None
    show_run_summary(ledger, run.run_id, sys.stderr)
    if progress.paused and not progress.finished:
        paused = ledger.get_run(run.run_id)
        cost, tokens = ledger.spent(run.run_id)
        reason = (paused.options if paused else {}).get(PAUSED_BY, "its budget is spent")
        print(
            f"run {run.run_id} is paused: {reason} (${cost:,.4f}, {tokens:,} tokens so far); go on with: "
            f"submit.py --resume {run.run_id} --max-cost-usd AMOUNT --wait (a daily limit: on the next day)",
            file=sys.stderr,
        )
        return EXIT_PAUSED
    if not progress.finished:
        print(f"error: run {run.run_id} is not finished after {args.timeout}s", file=sys.stderr)
        return EXIT_TIMEOUT
    if progress.shards_failed:
        print(
            f"run {run.run_id} finished with {progress.shards_failed} failed shard(s); see "
            f"scripts/status.py {run.run_id}, fix the cause, then --retry-failed {run.run_id}",
            file=sys.stderr,
        )
        return EXIT_FAILED_SHARDS
    if out is not None:
        writer = write_cascade_output if is_cascade else write_run_output
        rows = writer(ledger, run, data, out)
        print(f"wrote {rows:,} scores to {out.uri}", file=sys.stderr)
    if verdict is not None and verdict.drifted:
        print(
            f"run {run.run_id}: the canary drifted ({verdict.describe()}); see scripts/compare.py",
            file=sys.stderr,
        )
        return EXIT_DRIFT
    return EXIT_OK


def _advance_cascade(ledger: Ledger, settings: Settings, app: Celery, first: Run) -> Run:
    """Walk the cascade's stages, starting the next one where the one before has completed; the last
    stage that exists."""
    current = first
    while (later := next_stage(ledger, settings, app, first, current)) is not None:
        if later.started_now:
            _announce_stage(later.run)
        current = later.run
    return current


def _announce_stage(stage: Run) -> None:
    print(
        f"stage {stage.stage}: run {stage.run_id} scores the top {stage.options.get('top_k')} pairs of each "
        f"query ({stage.n_pairs:,} pairs) with {stage.model} on queue {stage.queue}",
        file=sys.stderr,
    )


def _follow_cascade(
    ledger: Ledger, settings: Settings, app: Celery, first: Run, broker_url: str, args: argparse.Namespace
) -> RunProgress:
    """Follow each stage in turn, starting the next once one completes; the progress of the last stage
    followed (unfinished, failed or the cascade's last)."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    current = first
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        progress = _follow(ledger, current, broker_url, settings, args, timeout_s=left)
        if not progress.finished or progress.shards_failed or progress.paused:
            return progress
        finished = ledger.get_run(current.run_id)
        assert finished is not None
        later = next_stage(ledger, settings, app, first, finished)
        if later is None:
            return progress
        if later.started_now:
            _announce_stage(later.run)
            _warn_if_unserved(broker_url, settings, later.run)
        current = later.run


def _follow(
    ledger: Ledger,
    run: Run,
    broker_url: str,
    settings: Settings,
    args: argparse.Namespace,
    timeout_s: float | None = None,
) -> RunProgress:
    last_check = time.monotonic()

    def check_workers(_: RunProgress) -> None:
        nonlocal last_check
        if time.monotonic() - last_check >= WORKER_CHECK_EVERY_S:
            last_check = time.monotonic()
            _warn_if_unserved(broker_url, settings, run)

    timeout = args.timeout if timeout_s is None else timeout_s
    return wait_for_run(ledger, run.run_id, poll_s=args.poll, timeout_s=timeout, on_poll=check_workers)


def _warn_if_unserved(broker_url: str, settings: Settings, run: Run) -> None:
    if not live_workers(broker_url, settings.redis_key_prefix, run.queue):
        placement = "--concurrency 8" if ModelSpec.parse(run.model).is_api else "--cpu 1   (or --gpus all)"
        print(
            f"warning: no worker consumes queue {run.queue}; start one with\n"
            f"  python scripts/workers.py --model {run.model} {placement}",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class _Shadow:
    run: Run
    shards: list[Shard]


def _create_shadow(
    corpus: Location,
    summary: CorpusSummary,
    spec: ModelSpec,
    columns: CorpusColumns,
    settings: Settings,
    ledger: Ledger,
    args: argparse.Namespace,
    production: Run,
) -> _Shadow:
    size = shard_size(settings, ledger, str(spec), args.shard_pairs)
    created = create_run(
        corpus, summary, spec, columns, settings, ledger, size.pairs, shadow_of=production.run_id
    )
    run = ledger.get_run(created.run_id)
    assert run is not None
    print(
        f"shadow: run {run.run_id} scores the same {created.n_pairs:,} pairs with {run.model} in "
        f"{len(created.shards)} shard(s) on queue {run.queue}; the production output is "
        f"{production.model}'s alone",
        file=sys.stderr,
    )
    return _Shadow(run, created.shards)


def _compare_with_shadow(
    ledger: Ledger, settings: Settings, production: Run, shadow: Run, progress: RunProgress
) -> None:
    if not progress.finished or progress.shards_done == 0:
        print(
            f"shadow run {shadow.run_id} is not finished; compare later with scripts/compare.py",
            file=sys.stderr,
        )
        return
    print(f"production {production.run_id} (A) against its shadow {shadow.run_id} (B):", file=sys.stderr)
    comparison = compare(run_side(ledger, settings, production), run_side(ledger, settings, shadow))
    show_comparison(comparison, sys.stderr)


def _raise_budget(
    ledger: Ledger, settings: Settings, broker_url: str, run: Run, args: argparse.Namespace
) -> Run:
    """Give the run its new budget (a limit not given stays as it was) and restart the fleet's counters
    from the ledger, so that the workers go on."""
    old = Budget.from_options(run.options)
    if not old.limited:
        # Its shards' messages already sent say it has no budget, and would be scored past a new one.
        raise RerankError(
            f"--resume {run.run_id}: the run has no budget to raise; a budget is given when a run is "
            "submitted"
        )
    new = Budget(
        args.max_cost_usd if args.max_cost_usd is not None else old.max_cost_usd,
        args.max_tokens if args.max_tokens is not None else old.max_tokens,
    )
    updated = ledger.set_budget(run.run_id, new)
    client = connect(broker_url)
    try:
        client.delete(*spend_keys(settings.redis_key_prefix, run.run_id))
    finally:
        client.close()
    print(f"run {run.run_id}: budget {old.describe()} -> {new.describe()}", file=sys.stderr)
    return updated


def _warn_if_truncating(spec: ModelSpec, settings: Settings, shard_inputs: list[Location]) -> None:
    try:
        sample = sample_truncation(spec, settings, shard_inputs)
    except Exception as exc:  # an advisory check: a tokenizer file it cannot read must not stop the run
        print(f"note: could not sample the pairs' lengths ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    warning = truncation_warning(sample, settings.truncation_warning)
    if warning:
        print(warning, file=sys.stderr)


def _checked_out(out: Location) -> Location:
    """``--out``, checked before the run starts: its directory (bucket) exists and can be listed."""
    if out.is_local and not out.parent.is_dir():
        raise RerankError(f"--out {out.uri}: directory {out.parent.uri} does not exist")
    out.parent.check_container()
    if out.is_dir():
        raise RerankError(f"--out {out.uri} is a directory; give the path of the Parquet file to write")
    return out


def _safe(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_ledger_url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
