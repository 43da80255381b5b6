"""The one task: score a shard named by its reference, and return its typed result as JSON."""

from __future__ import annotations

import random
from typing import Any

from celery import Task

from core.messages import TASK_NAME, ShardRef, ShardResult
from worker.app import app
from worker.runtime import get_runtime
from worker.shard_runner import ShardAttemptError, ShardBusyError, run_shard

MAX_BACKOFF_S = 300.0


def backoff_s(attempt: int) -> float:
    """Capped exponential backoff with full jitter before attempt ``attempt + 1``."""
    return random.uniform(0, min(MAX_BACKOFF_S, 2.0**attempt))


@app.task(name=TASK_NAME, bind=True)
def score_shard(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Score the shard ``message`` names; the JSON of its ``ShardResult`` is what Flower shows. Raises
    ``MessageError`` for a message this worker cannot read, and retries busy or failed attempts."""
    ref = ShardRef.from_message(message)
    try:
        outcome = run_shard(ref, get_runtime(), self.request.hostname or "worker")
    except ShardBusyError as busy:
        raise self.retry(countdown=busy.retry_in_s, max_retries=None) from busy
    except ShardAttemptError as failure:
        if failure.final:
            raise
        raise self.retry(countdown=backoff_s(failure.attempt), max_retries=None) from failure
    return ShardResult(status=outcome.status, attempt=outcome.attempt, pairs=outcome.pairs).to_result()
