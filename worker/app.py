"""The Celery app as a worker process loads it (``celery -A worker.app worker``).

scripts/workers.py starts these processes with RERANK_BROKER_URL and RERANK_WORKER_MODEL set; the
model is loaded once in ``worker_init``, before the process takes its first shard.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import worker_init, worker_shutdown

from core.broker.celery_app import create_app
from core.broker.presence import PresenceBeat
from core.broker.url import connect
from core.errors import ConfigError
from core.model_spec import ModelSpec
from core.settings import get_settings
from worker.fleet.launcher import STARTUP_FAILED_EXIT
from worker.reaper import Reaper
from worker.runtime import get_runtime
from worker.task_events import send_progress_events

log = logging.getLogger(__name__)

_settings = get_settings()
_resolved_broker_url = _settings.resolved_broker_url
if _resolved_broker_url is None:
    raise ConfigError("RERANK_BROKER_URL is not set; start workers with scripts/workers.py")
_broker_url: str = _resolved_broker_url

app = create_app(_settings, _broker_url)
app.conf.include = ["tasks.score_shard"]
send_progress_events(_settings.progress_event_s)

_background: list[PresenceBeat | Reaper] = []


def _queue_length(queue: str) -> int:
    """Messages waiting in ``queue`` (kombu keeps a queue as one Redis list under the key prefix)."""
    client = connect(_broker_url)
    try:
        return int(client.llen(f"{_settings.redis_key_prefix}{queue}"))
    finally:
        client.close()


@worker_init.connect
def _start_or_exit(sender: Any = None, **_: Any) -> None:
    # Celery logs and swallows exceptions from signal handlers, which would leave a worker that failed
    # to load its model looking ready; SystemExit is the one way out it lets through.
    try:
        _load_model_and_announce(getattr(sender, "hostname", None) or "worker")
    except Exception as error:
        log.critical("worker could not start: %s: %s", type(error).__name__, error, exc_info=True)
        raise SystemExit(STARTUP_FAILED_EXIT) from error


def _load_model_and_announce(hostname: str) -> None:
    if _settings.worker_model is None:
        raise ConfigError("RERANK_WORKER_MODEL is not set; start workers with scripts/workers.py --model")
    spec = ModelSpec.parse(_settings.worker_model)
    runtime = get_runtime()
    runtime.ledger.create_schema()
    started = time.monotonic()
    runtime.reranker(spec)
    log.info("loaded %s in %.1fs", spec, time.monotonic() - started)
    beat = PresenceBeat(_broker_url, _settings.redis_key_prefix, spec.queue, hostname, _settings.heartbeat_s)
    beat.start()
    reaper = Reaper(
        runtime.leases,
        runtime.ledger,
        app,
        interval_s=_settings.lease_s / 2,
        queue_length=_queue_length,
        stranded_s=_settings.stranded_s,
    )
    reaper.start()
    _background.extend([beat, reaper])


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    for thread in _background:
        thread.stop()
