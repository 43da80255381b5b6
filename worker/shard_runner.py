"""Scoring one shard: take its lease, read its input, score every pair, publish the scores under the
lease, and record the attempt's usage whatever happens."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.errors import BudgetExhaustedError, MessageError, PermanentProviderError, ProviderError, RerankError
from core.messages import ShardRef
from core.model_spec import ModelSpec
from storage.atomic import staged
from storage.ledger.leases import Busy, Closed, Publication
from storage.ledger.types import AttemptUsage, utcnow
from storage.location import Location
from storage.shards.inputs import read_shard_input
from storage.shards.publication import attempt_key, settle, settle_run
from storage.shards.scores import scores_table, write_staged_scores
from worker.backends.base import API_DEVICE
from worker.backends.progress_sink import listening
from worker.backends.spending import spending
from worker.lease_keeper import LeaseGuard, LeaseKeeper
from worker.phase_clock import PhaseClock
from worker.runtime import WorkerRuntime
from worker.shard_scoring import score_shard_pairs

log = logging.getLogger(__name__)

# Errors that a retry cannot fix: the shard fails at once.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (MessageError, PermanentProviderError)


@dataclass(frozen=True)
class ShardOutcome:
    status: Literal["done", "closed", "superseded", "paused"]
    attempt: int | None
    pairs: int
    seconds: float


class ShardBusyError(RerankError):
    """Raised when another attempt holds the shard's live lease (a duplicate delivery)."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"another attempt holds the shard; look again in {retry_in_s:.0f}s")
        self.retry_in_s = retry_in_s


class ShardAttemptError(RerankError):
    """Raised when an attempt failed; ``final`` says whether the shard is now marked failed."""

    def __init__(self, message: str, final: bool, attempt: int) -> None:
        super().__init__(message)
        self.final = final
        self.attempt = attempt


def run_shard(ref: ShardRef, runtime: WorkerRuntime, worker: str) -> ShardOutcome:
    """Score ``ref`` unless the ledger says it is closed. Raises ``ShardBusyError`` when another
    attempt holds it and ``ShardAttemptError`` when this attempt failed."""
    data = runtime.data
    input_file = data.join(ref.input_key)
    output_key = ref.output_key
    reranker = runtime.reranker(ModelSpec.parse(ref.model))
    phases = PhaseClock()

    with phases.phase("lease"):
        grant = runtime.leases.acquire(ref.run_id, ref.shard_id, worker, ref.budgeted)
    if isinstance(grant, Closed):
        log.info("shard %s/%s is %s; nothing to do", ref.run_id, ref.shard_id, grant.status)
        return ShardOutcome("closed", None, 0, 0.0)
    if isinstance(grant, Busy):
        raise ShardBusyError(grant.retry_in_s)

    attempt = grant.attempt
    started_at = utcnow()
    clock = time.monotonic()
    device = device_label(reranker.describe())
    usage = AttemptUsage(worker=worker, model=ref.model, device=device)
    gate = runtime.spend_gate(ref.run_id, reranker.spec, grant.budget)
    if gate is not None:
        try:
            gate.check()
        except BudgetExhaustedError as exhausted:
            return _pause_for_budget(ref, runtime, attempt, usage, started_at, clock, exhausted)
    scores_key = attempt_key(output_key, attempt)
    scores_file = data.join(scores_key)
    publishing = False
    guard: LeaseGuard | None = None
    try:
        with staged(scores_file) as staged_scores:
            with LeaseKeeper(runtime.leases, ref.run_id, ref.shard_id, attempt) as keeper:
                with phases.phase("read"):
                    pairs = read_shard_input(input_file)
                guard = LeaseGuard(keeper)
                # stops the scoring at the next batch once the lease is lost
                with listening(guard), spending(gate), phases.phase("score"):
                    scored = score_shard_pairs(reranker, pairs)
                result = scored.result
                with phases.phase("write"):
                    metadata = {"run_id": ref.run_id, "shard_id": ref.shard_id, **reranker.describe()}
                    table = scores_table(
                        pairs.column("query_id"),
                        pairs.column("doc_id"),
                        scored.scores,
                        metadata,
                        scored.content_hashes,
                        scored.provenance,
                        scored.field_scores,
                    )
                    write_staged_scores(table, staged_scores)
            # The attempt's own file is whole before the ledger may choose it.
            with phases.phase("write"):
                staged_scores.publish()
        with phases.phase("ledger"):
            runtime.ledger.record_requests(
                ref.run_id, ref.shard_id, attempt, worker, ref.model, result.requests
            )
        usage = AttemptUsage(
            worker=worker,
            model=ref.model,
            device=device,
            pairs=scored.computed,
            # API models keep their tokens on the request rows, so that sums count them once.
            tokens=0 if result.requests else result.tokens,
            truncated_pairs=None if result.truncated is None else int(result.truncated.sum()),
            device_seconds=result.device_seconds,
            wall_seconds=held_seconds(runtime, device, clock),
        )
        if gate is not None and not result.requests:  # a local model: its tokens count against the limits
            gate.record(0.0, result.tokens)
        publishing = True
        with phases.phase("ledger"):
            held = runtime.leases.publish(ref.run_id, ref.shard_id, attempt, usage, started_at, scores_key)
    except Exception as exc:
        if not publishing:  # else the ledger may have chosen the file: settle_run tidies it later
            _delete_quietly(scores_file)
        if guard is not None and guard.stopped:
            return _record_lost_lease(ref, runtime, attempt, usage, started_at, clock, guard, exc)
        if isinstance(exc, BudgetExhaustedError):
            return _pause_for_budget(ref, runtime, attempt, usage, started_at, clock, exc)
        _record_failure(ref, runtime, attempt, usage, started_at, clock, exc, grant.final_try)
        raise ShardAttemptError(
            f"{type(exc).__name__}: {exc}", grant.final_try or isinstance(exc, PERMANENT_ERRORS), attempt
        ) from exc
    if held:
        try:
            with phases.phase("settle"):
                settle(data, runtime.ledger, ref.run_id, ref.shard_id, scores_key, output_key)
        except RerankError as exc:
            log.warning(
                "shard %s/%s is published at %s; copying it to %s failed (settle_run finishes it): %s",
                ref.run_id,
                ref.shard_id,
                scores_key,
                output_key,
                exc,
            )
        if held == Publication.CLOSED_RUN:
            _settle_finished_run(data, runtime, ref.run_id, phases)
    else:
        _delete_quietly(scores_file)
    seconds = time.monotonic() - clock
    status: Literal["done", "superseded"] = "done" if held else "superseded"
    log.info(
        "shard %s/%s %s: %d pairs in %.2fs; %s",
        ref.run_id,
        ref.shard_id,
        status,
        pairs.num_rows,
        seconds,
        phases.line(),
    )
    return ShardOutcome(status, attempt, pairs.num_rows, seconds)


def _settle_finished_run(data: Location, runtime: WorkerRuntime, run_id: str, phases: PhaseClock) -> None:
    """The run's last shard is published: finish the settles of its other shards and sweep their attempt
    files, which a worker killed between publishing a shard and deleting them left behind (no one else
    would, unless the run is followed with ``submit.py --wait`` or merged with ``--out``)."""
    try:
        with phases.phase("settle"):
            settle_run(data, runtime.ledger, run_id)
    except RerankError as exc:
        log.warning(
            "run %s is finished; settling its shards failed (submit.py --out retries it): %s", run_id, exc
        )


def _delete_quietly(location: Location) -> None:
    """Delete an attempt's own scores file; a file left behind is only clutter, which settle_run sweeps."""
    try:
        location.delete()
    except RerankError as exc:
        log.warning("could not delete %s: %s", location.uri, exc)


def held_seconds(runtime: WorkerRuntime, device: str, clock: float) -> float:
    """The wall seconds an attempt that started at ``clock`` is charged: for a local model the part of
    its span no other attempt of this process was charged (``HeldTime``: shards in flight overlap); an
    API attempt keeps its whole span, as its cost comes from its requests."""
    now = time.monotonic()
    if device == API_DEVICE:
        return now - clock
    return runtime.held_time.charge(clock, now)


def device_label(described: dict[str, str]) -> str:
    """The device as the ledger records it, from a reranker's ``describe()``: on CUDA with the GPU's
    name, which the price table's GPU-hour entries match, then the dtype and the tuning of a local model."""
    device = described.get("device", "unknown")
    if device.startswith("cuda"):
        import torch

        device = f"cuda:{torch.cuda.get_device_name()}"
    if "tuning" in described:
        device += f" {described.get('dtype', '')} {described['tuning']}"
    return device[:64]


def _record_lost_lease(
    ref: ShardRef,
    runtime: WorkerRuntime,
    attempt: int,
    usage: AttemptUsage,
    started_at: datetime,
    clock: float,
    guard: LeaseGuard,
    error: Exception,
) -> ShardOutcome:
    """The attempt stopped scoring because a newer attempt took over its lease: record what it
    consumed until then, once, and publish nothing (its staged file is discarded). An API model's
    request rows come with the error its reranker raised, and carry its tokens; a local model's attempt
    row has the pairs and tokens of the batches it finished and the seconds its model was busy on them."""
    requests = error.requests if isinstance(error, ProviderError) else ()
    runtime.ledger.record_requests(ref.run_id, ref.shard_id, attempt, usage.worker, usage.model, requests)
    seconds = held_seconds(runtime, usage.device, clock)
    lost_usage = AttemptUsage(
        worker=usage.worker,
        model=usage.model,
        device=usage.device,
        pairs=min(guard.pairs, ref.pairs),
        # API models keep their tokens on the request rows, so that sums count them once.
        tokens=0 if requests else guard.tokens,
        device_seconds=0.0 if requests else guard.seconds,
        wall_seconds=seconds,
    )
    runtime.leases.superseded(ref.run_id, ref.shard_id, attempt, lost_usage, started_at)
    log.warning(
        "shard %s/%s attempt %d lost its lease after %d pairs in %.2fs; stopped without publishing",
        ref.run_id,
        ref.shard_id,
        attempt,
        lost_usage.pairs,
        seconds,
    )
    return ShardOutcome("superseded", attempt, lost_usage.pairs, seconds)


def _pause_for_budget(
    ref: ShardRef,
    runtime: WorkerRuntime,
    attempt: int,
    usage: AttemptUsage,
    started_at: datetime,
    clock: float,
    error: BudgetExhaustedError,
) -> ShardOutcome:
    """The run's budget is spent: record the requests this attempt made (they are billed), give the
    shard back to the queue without using a try, pause the run and publish nothing."""
    requests = error.requests
    runtime.ledger.record_requests(ref.run_id, ref.shard_id, attempt, usage.worker, usage.model, requests)
    seconds = held_seconds(runtime, usage.device, clock)
    stopped = AttemptUsage(worker=usage.worker, model=usage.model, device=usage.device, wall_seconds=seconds)
    runtime.leases.pause_for_budget(ref.run_id, ref.shard_id, attempt, stopped, started_at, str(error))
    log.warning(
        "shard %s/%s: %s; shard returned unscored and the run paused (%d request(s) made by this attempt)",
        ref.run_id,
        ref.shard_id,
        error,
        len(requests),
    )
    return ShardOutcome("paused", attempt, 0, seconds)


def _record_failure(
    ref: ShardRef,
    runtime: WorkerRuntime,
    attempt: int,
    usage: AttemptUsage,
    started_at: datetime,
    clock: float,
    error: Exception,
    final_try: bool,
) -> None:
    final = final_try or isinstance(error, PERMANENT_ERRORS)
    failed_usage = AttemptUsage(
        worker=usage.worker,
        model=usage.model,
        device=usage.device,
        wall_seconds=held_seconds(runtime, usage.device, clock),
    )
    requests = error.requests if isinstance(error, ProviderError) else ()
    runtime.ledger.record_requests(ref.run_id, ref.shard_id, attempt, usage.worker, usage.model, requests)
    message = f"{type(error).__name__}: {error}"
    runtime.leases.fail(ref.run_id, ref.shard_id, attempt, failed_usage, started_at, message, final)
    log.warning(
        "shard %s/%s attempt %d failed%s: %s",
        ref.run_id,
        ref.shard_id,
        attempt,
        " for good" if final else "",
        message,
    )
