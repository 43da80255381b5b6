"""Show a run from the ledger: its status, progress, usage, and every failed shard with its error.

Exit codes: 0 completed; 1 completed with failures; 4 still queued or running; 2 no such run.

Examples:
  python scripts/status.py 20261121-231500-ab12cd
  python scripts/status.py            # the latest run
"""

from __future__ import annotations

import argparse
import sys

from core.settings import get_settings
from producer.report import show_run_summary
from storage.ledger import Ledger, RunStatus

EXIT_COMPLETED, EXIT_FAILURES, EXIT_NO_RUN, EXIT_UNFINISHED = 0, 1, 2, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_id", nargs="?", help="the run to show (default: the latest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ledger = Ledger(get_settings().resolved_ledger_url)
    run_id = args.run_id or (ledger.latest_run_id() if ledger.exists() else None)
    run = ledger.get_run(run_id) if run_id and ledger.exists() else None
    if run is None:
        print(f"error: no run {run_id or ''} in the ledger".replace("  ", " "), file=sys.stderr)
        return EXIT_NO_RUN
    show_run_summary(ledger, run.run_id, sys.stdout, max_failed=None)
    if run.status == RunStatus.COMPLETED:
        return EXIT_COMPLETED
    if run.status == RunStatus.COMPLETED_WITH_FAILURES:
        return EXIT_FAILURES
    return EXIT_UNFINISHED


if __name__ == "__main__":
    sys.exit(main())
