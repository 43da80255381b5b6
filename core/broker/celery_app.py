"""The Celery application: JSON-only messages, late acks, one prefetched shard, task events on."""

from __future__ import annotations

from celery import Celery

from core.settings import Settings


def create_app(settings: Settings, broker_url: str) -> Celery:
    """A Celery app for ``broker_url``. Producer and workers build it the same way."""
    app = Celery("bulk_rerank", broker=broker_url, set_as_current=False)
    app.conf.update(
        # References travel as JSON; anything else (pickle, yaml, ...) is refused by the worker.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A shard is acknowledged only once it is written and recorded, and comes back if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "global_keyprefix": settings.redis_key_prefix,
        },
        broker_connection_retry_on_startup=True,
        # Status lives in the ledger; Celery keeps no results.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # Events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_create_missing_queues=True,
        task_default_queue="rerank.default",
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app
