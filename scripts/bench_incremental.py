"""Benchmark of nightly incremental re-scoring: a full run, then the same corpus with 5% of its
documents changed, scored with `--reuse latest`, against a full re-score of the changed corpus.

Prints the wall time of each (scripts/submit.py --wait, launch to exit, with the workers already up),
the pairs the workers scored in each run (from the ledger: the incremental run must score only the
changed documents), the incremental run's share of the full one (target: at most 10%), and whether the
incremental output is the full re-score's (same rows, same ranks, same scores). Exit code 0 when the
outputs agree, the incremental run scored only the changed pairs and, except with --smoke, it took at
most 10% of the full run. Uses RERANK_BROKER_URL if set, else an embedded Redis in a temporary
directory.

Examples:
  python scripts/bench_incremental.py --pairs 20000      # the ms-marco-MiniLM-L-6-v2 shape
  python scripts/bench_incremental.py --smoke            # seconds: a tiny model, 300 pairs
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.models import SHAPES, build_model
from benchmarks.suite import HEAD_PAIRS
from core.broker import embedded_broker
from core.settings import Settings
from storage.ledger import Ledger
from testkit import corpora
from testkit.fleet import clean_env, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed

REPO = Path(__file__).resolve().parent.parent

DOCS_PER_QUERY = 50
SMOKE_PAIRS = 300
SMOKE_SHARD_PAIRS = 100
TARGET_SHARE = 0.10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, help="pairs in the corpus (default 20000; 300 with --smoke)")
    parser.add_argument("--changed", type=float, default=0.05, help="share of documents changed")
    parser.add_argument("--workers", type=int, default=1, help="CPU worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the changes")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="RERANK_DTYPE of the workers (default auto: bf16 where the CPU multiplies it natively; its "
        "batches keep fixed shapes, so a reused score equals a re-scored one within the 1e-5 the check "
        "allows, see RERANK_BATCH_INVARIANT)",
    )
    parser.add_argument("--shard-pairs", type=int, help="pairs per shard (default: RERANK_SHARD_PAIRS)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny random-weight model and 300 pairs in shards of 100, to check the script end to end "
        "in seconds; the 10%% target is not judged (start-up costs dominate so few pairs)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / "data" / "bench-models",
        help="where the MiniLM-shaped model is built and kept (default data/bench-models)",
    )
    return parser


@dataclass(frozen=True)
class Timed:
    run_id: str
    seconds: float
    scored_pairs: int  # by the workers, from the ledger's usage rows


def change_documents(table: pa.Table, share: float, seed: int) -> tuple[pa.Table, int]:
    rng = random.Random(seed)
    texts = table.column("text").to_pylist()
    changed = rng.sample(range(len(texts)), k=max(1, int(len(texts) * share)))
    for index in changed:
        texts[index] = texts[index] + " (revised)"
    return table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), len(changed)


def timed_submit(env: dict[str, str], ledger: Ledger, *args: str) -> Timed:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "submit.py"), *args, "--wait", "--poll", "0.2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"submit.py failed ({result.returncode}): {result.stderr[-3000:]}")
    run_id = result.stdout.split()[0]  # submit.py's stdout starts with the run id
    return Timed(run_id, seconds, ledger.usage_totals(run_id).pairs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bulk-rerank-incremental-") as scratch:
        return _bench(args, Path(scratch))


def _bench(args: argparse.Namespace, root: Path) -> int:
    pairs = args.pairs or (SMOKE_PAIRS if args.smoke else 20_000)
    shard_pairs = args.shard_pairs or (SMOKE_SHARD_PAIRS if args.smoke else None)
    if args.smoke:
        model_dir = build_tiny_cross_encoder(root / "tiny-cross-encoder")
    else:
        model_dir = build_model(SHAPES["minilm-l6"], args.cache_dir, HEAD_PAIRS["minilm-l6"]).path
    model = f"cross-encoder:{model_dir}"
    corpus = corpora.long_corpus(max(1, pairs // DOCS_PER_QUERY), DOCS_PER_QUERY, seed=args.seed)
    pairs = corpus.num_rows
    changed, n_changed = change_documents(corpus, args.changed, args.seed)
    first = corpora.write(corpus, root / "night1.parquet")
    second = corpora.write(changed, root / "night2.parquet")

    external = os.environ.get("RERANK_BROKER_URL")
    embedded = None if external else embedded_broker(Settings(data_dir=root / "data"))
    broker_url = external or embedded.ensure_running()  # type: ignore[union-attr]
    prefix = f"rerank-bench-{secrets.token_hex(4)}:"
    shared = {"data_dir": str(root / "data"), "broker_url": broker_url, "redis_key_prefix": prefix}
    # The tiny model has no time for a TorchInductor compile; the real one compiles as workers do.
    env = clean_env(
        **shared,
        dtype=args.dtype,
        compile="off" if args.smoke else "auto",
        calibrate="false" if args.smoke else "true",
    )
    ledger = Ledger(Settings(data_dir=root / "data").resolved_ledger_url)
    submit_args = ["--model", model] + (["--shard-pairs", str(shard_pairs)] if shard_pairs else [])
    try:
        fleet = start_fleet(model, args.workers, env, broker_url, prefix, root / "workers.log", timeout=600)
        try:
            full = timed_submit(env, ledger, str(first), *submit_args)
            incremental = timed_submit(
                env,
                ledger,
                str(second),
                *submit_args,
                "--reuse",
                "latest",
                "--out",
                str(root / "inc.parquet"),
            )
            rescored = timed_submit(
                env, ledger, str(second), *submit_args, "--out", str(root / "full.parquet")
            )
        finally:
            fleet.stop()
        same = compare(root / "inc.parquet", root / "full.parquet")
    finally:
        delete_prefixed(broker_url, prefix)
        if embedded is not None:
            embedded.stop()

    share = incremental.seconds / full.seconds
    only_changed = incremental.scored_pairs == n_changed
    model_line = "tiny random-weight cross-encoder (--smoke)" if args.smoke else SHAPES["minilm-l6"].label
    print(f"model                  {model_line}, {args.workers} CPU worker(s) at {args.dtype}")
    print(f"corpus                 {pairs:,} pairs, {n_changed:,} documents changed ({args.changed:.0%})")
    print(
        f"full run               {full.seconds:8.1f}s  ({pairs / full.seconds:,.0f} pairs/s)  "
        f"{full.scored_pairs:,} pairs scored"
    )
    print(
        f"incremental (--reuse)  {incremental.seconds:8.1f}s  = {share:.1%} of the full run  "
        f"{incremental.scored_pairs:,} pairs scored"
    )
    print(f"full re-score          {rescored.seconds:8.1f}s  {rescored.scored_pairs:,} pairs scored")
    print(
        f"only changed rescored  {'yes' if only_changed else 'NO'} "
        f"({incremental.scored_pairs:,} scored, {n_changed:,} changed)"
    )
    print(f"output identical       {'yes' if same else 'NO'} (rows, ranks, scores within 1e-5)")
    if args.smoke:
        print(f"target                 <= {TARGET_SHARE:.0%} of the full run: not judged in a smoke run")
        return 0 if same and only_changed else 1
    met = share <= TARGET_SHARE
    print(f"target                 <= {TARGET_SHARE:.0%} of the full run: {'met' if met else 'MISSED'}")
    return 0 if same and only_changed and met else 1


def compare(incremental: Path, full: Path) -> bool:
    left = pq.read_table(incremental).sort_by([("query_id", "ascending"), ("doc_id", "ascending")])
    right = pq.read_table(full).sort_by([("query_id", "ascending"), ("doc_id", "ascending")])
    return (
        left.num_rows == right.num_rows
        and left.column("doc_id").equals(right.column("doc_id"))
        and left.column("rank").equals(right.column("rank"))
        and left.column("content_hash").equals(right.column("content_hash"))
        and bool(np.allclose(left.column("score").to_numpy(), right.column("score").to_numpy(), atol=1e-5))
    )


if __name__ == "__main__":
    sys.exit(main())
