"""Benchmark of nightly incremental re-scoring: a full run, then the same corpus with 5% of its
documents changed, scored with `--reuse latest`, against a full re-score of the changed corpus.

Prints the wall time of each and the incremental run's share of the full one (target: at most 10%), and
checks that the incremental output is the full re-score's (same rows, same ranks, same scores).

Example:
  python scripts/bench_incremental.py --pairs 20000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.models import SHAPES, build_model
from benchmarks.suite import HEAD_PAIRS
from core.broker.presence import live_workers
from core.model_spec import ModelSpec
from testkit import corpora

REPO = Path(__file__).resolve().parent.parent

DOCS_PER_QUERY = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs in the corpus")
    parser.add_argument("--changed", type=float, default=0.05, help="share of documents changed")
    parser.add_argument("--workers", type=int, default=1, help="CPU worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the changes")
    return parser


def change_documents(table: pa.Table, share: float, seed: int) -> tuple[pa.Table, int]:
    rng = random.Random(seed)
    texts = table.column("text").to_pylist()
    changed = rng.sample(range(len(texts)), k=max(1, int(len(texts) * share)))
    for index in changed:
        texts[index] = texts[index] + " (revised)"
    return table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), len(changed)


def timed_submit(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "submit.py"), *args, "--wait", "--poll", "0.2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"submit.py failed: {result.stderr}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bulk-rerank-incremental-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    env.update({"RERANK_DATA_DIR": str(root / "data"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    built = build_model(SHAPES["minilm-l6"], REPO / "data" / "bench-models", HEAD_PAIRS)
    model = f"cross-encoder:{built.path}"
    corpus = corpora.long_corpus(max(1, args.pairs // DOCS_PER_QUERY), DOCS_PER_QUERY, seed=args.seed)
    changed, n_changed = change_documents(corpus, args.changed, args.seed)
    first, second = (
        corpora.write(corpus, root / "night1.parquet"),
        corpora.write(changed, root / "night2.parquet"),
    )
    fleet = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "workers.py"), "--model", model, "--cpu", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from core.broker import embedded_broker
        from core.settings import Settings

        settings = Settings(data_dir=root / "data")
        broker_url = embedded_broker(settings).ensure_running()
        queue = ModelSpec.parse(model).queue
        while len(live_workers(broker_url, settings.redis_key_prefix, queue)) < args.workers:
            time.sleep(0.2)
        full = timed_submit(env, str(first), "--model", model)
        incremental = timed_submit(
            env, str(second), "--model", model, "--reuse", "latest", "--out", str(root / "inc.parquet")
        )
        rescored = timed_submit(env, str(second), "--model", model, "--out", str(root / "full.parquet"))
        same = compare(root / "inc.parquet", root / "full.parquet")
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(120)
        from core.broker import embedded_broker as _embedded
        from core.settings import Settings as _Settings

        _embedded(_Settings(data_dir=root / "data")).stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"corpus                 {args.pairs:,} pairs, {n_changed:,} documents changed ({args.changed:.0%})"
    )
    print(f"full run               {full:8.1f}s  ({args.pairs / full:,.0f} pairs/s)")
    print(
        f"incremental (--reuse)  {incremental:8.1f}s  = {incremental / full:.1%} of the full run "
        "(target <= 10%)"
    )
    print(f"full re-score          {rescored:8.1f}s")
    print(f"output identical       {'yes' if same else 'NO'} (rows, ranks, scores within 1e-5)")
    return 0 if same and incremental <= 0.10 * full else 1


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
