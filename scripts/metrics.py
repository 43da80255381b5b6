"""Serve the ledger's runs as Prometheus metrics at http://RERANK_METRICS_ADDRESS:RERANK_METRICS_PORT/metrics
(default 127.0.0.1:9808): per run (labels run_id, model, role), pairs done of total, pairs per second,
ETA, cost so far, failed shards, truncation share, drift and status. Every scrape reads the ledger afresh;
runs created in the last RERANK_METRICS_WINDOW_HOURS (48) are served, and every run still going.
Flower's own /metrics covers the tasks and workers; this covers the runs. A ready Grafana dashboard:
examples/grafana-dashboard.json.

Exit codes: 0 stopped (SIGINT or SIGTERM); 2 bad settings or price table; 3 the port is taken.

Example:
  python scripts/metrics.py
  curl -s http://127.0.0.1:9808/metrics | grep bulk_rerank_run_pairs_done
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from core.errors import RerankError
from core.pricing import load_price_table
from core.settings import get_settings
from producer.run_metrics import RunMetrics
from storage.ledger import Ledger

EXIT_OK, EXIT_USAGE, EXIT_PORT = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    settings = get_settings()
    try:
        prices = load_price_table(settings.prices_path)
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    registry = CollectorRegistry()
    window = timedelta(hours=settings.metrics_window_hours)
    registry.register(RunMetrics(Ledger(settings.resolved_ledger_url), prices, window))
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_address, registry=registry)
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.metrics_address}:{settings.metrics_port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_PORT
    print(
        f"serving run metrics at http://{settings.metrics_address}:{settings.metrics_port}/metrics",
        flush=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
