"""Compare two runs (or two scores files) on the pairs both scored: per-query Spearman and Kendall tau,
top-k overlap, the share of queries whose top 1 changed, the shift of the score distribution, truncation
rates, and the pairs only one side has. With --fail-if it is the nightly guard: exit 1 when a metric
crosses its threshold.

Each side is a run id from the ledger (its finished shards) or a scores Parquet file or dataset
directory, local or a storage URI (s3://..., gs://...). Every metric below can be guarded:
  spearman, spearman_median, spearman_p5, spearman_min, kendall, kendall_min, top1, top5, top10 (the
  --top-k values), top1_changed, ks, mean_abs_diff, max_abs_diff, only_a, only_b, pairs_common,
  truncated_a, truncated_b, a_p50, b_p50 (and the other quantiles p01..p99).

Exit codes: 0 compared (and no threshold crossed); 1 a --fail-if threshold crossed; 2 bad flags, an
unknown run or an unreadable file; 3 storage unreachable.

Examples:
  python scripts/compare.py 20261201-020000-ab12cd 20261202-020000-cd34ef
  python scripts/compare.py last-night.parquet tonight.parquet --format json
  python scripts/compare.py RUN_A RUN_B --plot drift.png --fail-if "spearman<0.98,top10<0.95"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import RerankError, StorageUnreachableError
from core.settings import get_settings
from producer.comparison import DEFAULT_TOP_KS, compare, load_side, metric_names
from producer.comparison_plot import write_plot
from producer.comparison_report import show_comparison, write_csv, write_json
from producer.thresholds import crossed, parse_thresholds

EXIT_SAME, EXIT_CROSSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", metavar="RUN_A", help="run id or scores file/dataset (the reference)")
    parser.add_argument("b", metavar="RUN_B", help="run id or scores file/dataset (the one checked)")
    parser.add_argument(
        "--top-k",
        type=_ks,
        default=DEFAULT_TOP_KS,
        help="comma-separated k for the top-k overlap (default: 1,5,10)",
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also draw the histograms into this PNG"
    )
    parser.add_argument(
        "--fail-if",
        metavar="CONDITIONS",
        help='exit 1 when any condition holds, e.g. "spearman<0.98,top10<0.95,top1_changed>0.05"',
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        if args.plot is not None and not args.plot.parent.resolve().is_dir():
            raise RerankError(f"--plot {args.plot}: directory {args.plot.parent} does not exist")
        thresholds = parse_thresholds(args.fail_if, metric_names(args.top_k)) if args.fail_if else []
        comparison = compare(load_side(args.a, settings), load_side(args.b, settings), args.top_k)
    except StorageUnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format == "json":
        write_json(comparison, sys.stdout)
    elif args.format == "csv":
        write_csv(comparison, sys.stdout)
    else:
        show_comparison(comparison, sys.stdout)
    if args.plot is not None:
        write_plot(comparison, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    failures = crossed(thresholds, comparison.metrics)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return EXIT_CROSSED if failures else EXIT_SAME


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 1,5,10") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each k must be at least 1")
    return ks


if __name__ == "__main__":
    sys.exit(main())
