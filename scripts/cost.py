"""Cost accounting from the ledger: cost, tokens, search units, requests, scored pairs and GPU hours,
grouped by run, model, provider, worker, day, role (production, or the shadow runs of submit.py
--shadow) and/or stage (of a submit.py --then cascade), over a date range, with cost per million pairs.
API requests are priced when they are recorded; GPU hours are priced here from the [[gpu]] entries of
the same price table (RERANK_PRICES_PATH, default core/prices.toml).

Exit codes: 0 done; 2 bad flags or price table.

Examples:
  python scripts/cost.py --by model --since 2026-11-01
  python scripts/cost.py --by day --by provider --since 2026-11-01 --until 2026-11-30 --format csv
  python scripts/cost.py --run 20261121-231500-ab12cd --format json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date

from core.errors import RerankError
from core.pricing import load_price_table
from core.settings import get_settings
from producer.cost_table import COLUMNS, show_cost_table
from storage.ledger import DIMENSIONS, Ledger


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--by", action="append", choices=DIMENSIONS, help="group by this (repeat for several; default: model)"
    )
    parser.add_argument("--since", type=date.fromisoformat, help="first day (YYYY-MM-DD, UTC) to count")
    parser.add_argument("--until", type=date.fromisoformat, help="last day (YYYY-MM-DD, UTC) to count")
    parser.add_argument(
        "--run", metavar="RUN_ID", help="only this run (a cascade's first run: all its stages)"
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    by = args.by or ["model"]
    try:
        prices = load_price_table(settings.prices_path)
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ledger = Ledger(settings.resolved_ledger_url)
    rows = ledger.cost_report(by, prices, args.since, args.until, args.run) if ledger.exists() else []
    records = [row.as_dict() for row in rows]
    if args.format == "json":
        print(json.dumps(records, indent=2))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[*by, *COLUMNS, "unpriced"], extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({**record, "unpriced": "; ".join(record["unpriced"])})
    else:
        show_cost_table(by, rows, sys.stdout)  # a table on a terminal, aligned plain columns otherwise
    return 0


if __name__ == "__main__":
    sys.exit(main())
