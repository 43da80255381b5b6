"""Worker side of bulk-rerank: the Celery app, settings, process lifecycle and reranker backends."""
