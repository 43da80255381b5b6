"""Show a run from the ledger: its status, progress, usage, and every failed shard with its error.

It also says which broker the fleet uses. The embedded Redis (used when RERANK_BROKER_URL is unset)
keeps running as a daemon after every script and worker has exited, holding the queue;
``--stop-broker`` stops it (queued shards are kept on disk and served again when it next starts).

Exit codes: 0 completed; 1 completed with failures; 4 still queued or running; 2 no such run; 5 completed,
but the run's canary drifted from its previous run (completed_with_drift); 6 paused by its budget.

Examples:
  python scripts/status.py 20261121-231500-ab12cd
  python scripts/status.py               # the latest run
  python scripts/status.py --stop-broker # stop the embedded Redis
"""

from __future__ import annotations

import argparse
import sys

from core.broker import embedded_broker
from core.broker.url import redact
from core.settings import Settings, get_settings
from producer.canary import check_canary
from producer.report import show_run_summary
from storage.ledger import Ledger, RunStatus

EXIT_COMPLETED, EXIT_FAILURES, EXIT_NO_RUN, EXIT_UNFINISHED, EXIT_DRIFT, EXIT_PAUSED = 0, 1, 2, 4, 5, 6


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_id", nargs="?", help="the run to show (default: the latest)")
    parser.add_argument(
        "--stop-broker", action="store_true", help="stop the embedded Redis, if it runs, and exit"
    )
    return parser


def broker_line(settings: Settings) -> str:
    """Which broker the fleet uses and, for the embedded one, whether it runs and how to stop it."""
    if settings.broker_url is not None:
        return f"broker: {redact(settings.broker_url)}"
    embedded = embedded_broker(settings)
    url = embedded.url()
    if url is None:
        return f"broker: embedded Redis (not running; state in {embedded.directory})"
    return (
        f"broker: embedded Redis at {url} (pid {embedded.pid()}, state in {embedded.directory}); "
        "stop it with: python scripts/status.py --stop-broker"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.stop_broker:
        return _stop_broker(settings)
    print(broker_line(settings))
    ledger = Ledger(settings.resolved_ledger_url)
    run_id = args.run_id or (ledger.latest_run_id() if ledger.exists() else None)
    run = ledger.get_run(run_id) if run_id and ledger.exists() else None
    if run is None:
        print(f"error: no run {run_id or ''} in the ledger".replace("  ", " "), file=sys.stderr)
        return EXIT_NO_RUN
    check_canary(ledger, settings, run)  # the first look at a finished run records its canary verdict
    run = ledger.get_run(run.run_id) or run
    show_run_summary(ledger, run.run_id, sys.stdout, max_failed=None)
    if run.status == RunStatus.COMPLETED_WITH_DRIFT:
        return EXIT_DRIFT
    if run.status == RunStatus.PAUSED_BUDGET:
        return EXIT_PAUSED
    if run.status == RunStatus.COMPLETED:
        return EXIT_COMPLETED
    if run.status == RunStatus.COMPLETED_WITH_FAILURES:
        return EXIT_FAILURES
    return EXIT_UNFINISHED


def _stop_broker(settings: Settings) -> int:
    if settings.broker_url is not None:
        print(f"error: the broker is RERANK_BROKER_URL ({redact(settings.broker_url)}), not the embedded one")
        return EXIT_NO_RUN
    embedded = embedded_broker(settings)
    stopped = embedded.stop()
    print(
        f"stopped the embedded Redis in {embedded.directory}"
        if stopped
        else "the embedded Redis was not running"
    )
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
