"""Benchmark of the worker machinery alone: a corpus through ``submit.py --wait`` and one worker process
hosting the ``null`` scorer (a hash of each pair, no model), so what is measured is everything around the
scoring: reading each shard's Parquet, writing its scores, the ledger's transactions, Redis and the acks.

A GPU worker on a MiniLM-class model scores tens of thousands of pairs per second; this is how many the
machinery can feed one worker process. Prints, per ledger (SQLite, and PostgreSQL when one answers at
127.0.0.1:5432 or the given URL): pairs/s end to end (from launching submit.py to its exit, so submit's
start-up, validation and sharding count), pairs/s of the worker process (from its first shard's start to
its last shard's finish in the ledger), and each shard's fixed cost in milliseconds by phase, from the
worker's log: lease (taking the shard's lease), read (its input Parquet), score, write (the scores'
Parquet), ledger (recording and publishing the attempt), settle (copying the attempt's file to its final
name) and the rest of the worker's time per shard (Celery: receiving the message, storing the result,
acking). Then the target: >= 50,000 pairs/s per worker process. Exit code 0 when every run succeeded.

With ``--device-pairs-per-s R`` the worker also hosts ``null:machinery?pairs_per_s=R``, which stands in for
a device scoring R pairs/s (one call at a time, waiting without the interpreter lock as for a GPU), with
one shard in flight per worker and then with ``RERANK_SHARDS_IN_FLIGHT`` at 2: pairs/s of the worker
process and the share of its time the device is busy, which is what overlapping a shard's reading and
writing with another's scoring buys.

Examples:
  python scripts/bench_machinery.py                      # 50,000 short pairs, shards of 2,000
  python scripts/bench_machinery.py --pairs 200000 --shard-pairs 10000
  python scripts/bench_machinery.py --device-pairs-per-s 50000   # and a simulated 50,000 pairs/s device
  python scripts/bench_machinery.py --smoke              # seconds: 2,000 pairs, SQLite only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import cpu_kind, usable_cpus
from benchmarks.pipeline import PipelineFleet, PipelineRun

TARGET_PAIRS_PER_S = 50_000
# Shards in flight per worker compared on the simulated device: one at a time, then the pipelined default.
SHARDS_IN_FLIGHT = (1, 2)
DOCS_PER_QUERY = 50
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "for",
    "is",
    "on",
    "that",
    "by",
    "with",
    "as",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=50_000, help="pairs in the corpus (default 50,000)")
    parser.add_argument("--shard-pairs", type=int, default=2_000, help="pairs per shard (default 2,000)")
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="a PostgreSQL ledger URL to also run against (default: a fresh schema at 127.0.0.1:5432 "
        "if it answers)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="run on SQLite only")
    parser.add_argument(
        "--device-pairs-per-s",
        type=float,
        default=None,
        help="also run on a simulated device scoring this many pairs/s, with 1 and 2 shards in flight",
    )
    parser.add_argument("--smoke", action="store_true", help="2,000 pairs in shards of 500, SQLite only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.shard_pairs, args.no_postgres = 2_000, 500, True
    if args.pairs < 1 or args.shard_pairs < 1:
        parser.error("--pairs and --shard-pairs must be at least 1")
    return args


def short_pairs_corpus(path: Path, pairs: int) -> Path:
    """``pairs`` short pairs (a few words of query, ~30 words of passage), 50 passages per query."""
    rows = range(pairs)
    texts = [" ".join(WORDS[(row * 7 + i) % len(WORDS)] for i in range(30)) + f" {row}" for row in rows]
    table = pa.table(
        {
            "query_id": pa.array([row // DOCS_PER_QUERY for row in rows], pa.int64()),
            "query": [f"query number {row // DOCS_PER_QUERY}" for row in rows],
            "doc_id": pa.array(list(rows), pa.int64()),
            "text": texts,
        }
    )
    pq.write_table(table, path)
    return path


@contextlib.contextmanager
def ledgers(args: argparse.Namespace) -> Iterator[dict[str, str | None]]:
    """Ledger name -> URL (None: the data dir's SQLite file)."""
    found: dict[str, str | None] = {"sqlite": None}
    with contextlib.ExitStack() as stack:
        if args.postgres_url:
            found["postgresql"] = args.postgres_url
        elif not args.no_postgres:
            from testkit.services import postgres_schema

            try:
                found["postgresql"] = stack.enter_context(postgres_schema())
            except Exception as error:  # no server here: say so and measure SQLite only
                print(f"PostgreSQL: not reachable ({type(error).__name__}); SQLite only", file=sys.stderr)
        yield found


def run_one(
    corpus: Path,
    work: Path,
    ledger_url: str | None,
    shard_pairs: int,
    model: str = "null:machinery",
    settings_env: dict[str, str] | None = None,
) -> PipelineRun:
    cpus = sorted(os.sched_getaffinity(0))
    with PipelineFleet(
        model, work, "cpu", "float32", cpus, timeout_s=1800, ledger_url=ledger_url, settings_env=settings_env
    ) as fleet:
        fleet.wait_ready()
        return fleet.submit(corpus, shard_pairs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"$ python scripts/bench_machinery.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"CPU {cpu_kind()}, {usable_cpus()} usable; one worker process hosting null:machinery")
    figures: dict[str, dict[str, float]] = {}
    device: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rerank-machinery-") as scratch:
        work = Path(scratch)
        corpus = short_pairs_corpus(work / "corpus.parquet", args.pairs)
        with ledgers(args) as urls:
            for name, url in urls.items():
                run = run_one(corpus, work / name, url, args.shard_pairs)
                worker_ms = run.worker_span_seconds / run.shards * 1000
                phases = dict(run.phases_ms)
                phases["celery"] = worker_ms - sum(phases.values())
                figures[name] = {
                    "pairs": run.pairs,
                    "shards": run.shards,
                    "wall_seconds": run.wall_seconds,
                    "end_to_end_pairs_per_s": run.wall_pairs_per_s,
                    "pairs_per_s": run.worker_pairs_per_s,
                    "worker_ms_per_shard": worker_ms,
                    "phases_ms_per_shard": phases,
                }
                print(
                    f"{name:>10}: {run.pairs:,} pairs in {run.shards} shards; end to end "
                    f"{run.wall_seconds:.2f} s = {run.wall_pairs_per_s:,.0f} pairs/s; the worker process "
                    f"{run.worker_span_seconds:.2f} s = {run.worker_pairs_per_s:,.0f} pairs/s, "
                    f"{worker_ms:.1f} ms per shard: "
                    + ", ".join(f"{phase} {ms:.1f}" for phase, ms in phases.items())
                )
                if args.device_pairs_per_s is not None:
                    device[name] = simulated_device(corpus, work / name, url, args)
    worst = min(values["pairs_per_s"] for values in figures.values())
    verdict = "met" if worst >= TARGET_PAIRS_PER_S else "MISSED"
    print(f"\ntarget: >= {TARGET_PAIRS_PER_S:,} pairs/s per worker process: {worst:,.0f} ({verdict})")
    if args.json:
        found = {"cpu": cpu_kind(), "figures": figures}
        if device:
            found["simulated_device"] = {"pairs_per_s": args.device_pairs_per_s, **device}
        args.json.write_text(json.dumps(found, indent=2))
    return 0


def simulated_device(
    corpus: Path, work: Path, ledger_url: str | None, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """The corpus on a simulated device of ``--device-pairs-per-s``, per number of shards in flight:
    pairs/s of the worker process and the device's busy share of its span."""
    model = f"null:machinery?pairs_per_s={args.device_pairs_per_s:g}"
    found: dict[str, dict[str, float]] = {}
    for in_flight in SHARDS_IN_FLIGHT:
        settings_env = {"RERANK_SHARDS_IN_FLIGHT": str(in_flight)}
        run = run_one(corpus, work / f"device-{in_flight}", ledger_url, args.shard_pairs, model, settings_env)
        busy = run.ledger_device_seconds / run.worker_span_seconds if run.worker_span_seconds > 0 else 0.0
        found[str(in_flight)] = {
            "pairs_per_s": run.worker_pairs_per_s,
            "device_busy_share": busy,
            "worker_span_seconds": run.worker_span_seconds,
            # what the ledger charged the attempts (GPU cost is priced on it): at most the span
            "charged_wall_seconds": run.ledger_wall_seconds,
        }
    print(
        f"{'':>10}  on a simulated device of {args.device_pairs_per_s:,.0f} pairs/s: "
        + "; ".join(
            f"{in_flight} shard(s) in flight {values['pairs_per_s']:,.0f} pairs/s, device busy "
            f"{values['device_busy_share']:.0%}"
            for in_flight, values in found.items()
        )
    )
    return found


if __name__ == "__main__":
    sys.exit(main())
