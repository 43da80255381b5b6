"""Benchmark API workers against a rate-limited provider: how much of the limit the fleet uses.

Starts a fake OpenAI-compatible /v1/rerank server (testkit/api_servers.py) on loopback that enforces a
requests and a tokens limit per window and answers 429 past them, starts `scripts/workers.py --api
openai-rerank` with the same limits (real Celery worker processes), submits a synthetic corpus with
`scripts/submit.py --wait`, and prints, per full window from the first request on, the requests and
tokens the server scored as a share of its limits, the 429s it sent, and whether every pair was scored
exactly once. Exit code 0 when every pair was scored exactly once and no request went over the limit.
Uses RERANK_BROKER_URL if set, else an embedded Redis in a temporary directory.

Examples:
  python scripts/bench_api.py --workers 4 --concurrency 4 --limit-requests 100 --window 10
  python scripts/bench_api.py --smoke     # seconds: a few small windows
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from core.broker import embedded_broker
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit import corpora
from testkit.api_dialects import server_tokens
from testkit.api_servers import FakeRerankServer, Received, running
from testkit.fleet import clean_env, start_workers
from testkit.services import delete_prefixed

REPO = Path(__file__).resolve().parent.parent

MODEL = "openai-rerank:bench"
KEY = f"bench-{secrets.token_hex(8)}"


# The benchmark's sizes; --smoke runs the same steps on a few windows' worth, in seconds.
FULL = {
    "workers": 4,
    "concurrency": 4,
    "limit_requests": 100,
    "window": 10.0,
    "queries": 300,
    "docs": 10,
    "max_documents": 5,
    "shard_pairs": 200,
}
SMOKE = {
    "workers": 2,
    "concurrency": 2,
    "limit_requests": 10,
    "window": 2.0,
    "queries": 40,
    "docs": 5,
    "max_documents": 5,
    "shard_pairs": 50,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def sized(flag: str, kind: type, what: str) -> None:
        key = flag.removeprefix("--").replace("-", "_")
        parser.add_argument(
            flag, type=kind, help=f"{what} (default {FULL[key]:g}; {SMOKE[key]:g} with --smoke)"
        )

    sized("--workers", int, "API worker processes")
    sized("--concurrency", int, "requests in flight per worker")
    sized("--limit-requests", int, "requests per window")
    parser.add_argument(
        "--limit-tokens",
        type=int,
        default=None,
        help="tokens per window (default: 1.5x what the requests need)",
    )
    sized("--window", float, "rate window in seconds")
    sized("--queries", int, "queries in the corpus")
    sized("--docs", int, "documents per query")
    sized("--max-documents", int, "documents per request")
    sized("--shard-pairs", int, "pairs per shard")
    parser.add_argument(
        "--latency", type=float, default=0.02, help="server seconds per request (default 0.02)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few windows' worth (2 workers, 10 requests per 2 s window, 200 pairs in 4 shards): the "
        "whole benchmark end to end in seconds",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        return _bench(args, Path(scratch))


def _bench(args: argparse.Namespace, scratch: Path) -> int:
    corpus = corpora.long_corpus(n_queries=args.queries, docs_per_query=args.docs, seed=11)
    corpus_path = corpora.write(corpus, scratch / "corpus.parquet")
    per_request_tokens = _tokens_per_request(corpus, args.max_documents)
    limit_tokens = args.limit_tokens or math.ceil(1.5 * args.limit_requests * per_request_tokens)
    external = os.environ.get("RERANK_BROKER_URL")
    embedded = None if external else embedded_broker(Settings(data_dir=scratch / "data"))
    broker_url = external or embedded.ensure_running()  # type: ignore[union-attr]
    prefix = f"rerank-bench-{secrets.token_hex(4)}:"
    shared = {"data_dir": str(scratch / "data"), "broker_url": broker_url, "redis_key_prefix": prefix}
    server = FakeRerankServer(
        "openai-rerank",
        api_key=KEY,
        limit_requests=args.limit_requests,
        limit_tokens=limit_tokens,
        window_s=args.window,
        latency_s=args.latency,
    )
    try:
        with running(server):
            worker_env = clean_env(
                **shared,
                openai_rerank_base_url=server.url,
                openai_rerank_api_key=KEY,
                api_requests_per_minute=str(args.limit_requests),
                api_tokens_per_minute=str(limit_tokens),
                api_rate_window_s=str(args.window),
                api_max_documents=str(args.max_documents),
                log_level="WARNING",
            )
            worker_args = ["--api", "openai-rerank", "--model", "bench"]
            worker_args += ["--processes", str(args.workers), "--concurrency", str(args.concurrency)]
            fleet = start_workers(
                worker_args,
                ModelSpec.parse(MODEL),
                args.workers,
                worker_env,
                broker_url,
                prefix,
                scratch / "w.log",
            )
            out = scratch / "scores.parquet"
            try:
                started = time.monotonic()
                submit = [sys.executable, str(REPO / "scripts" / "submit.py"), str(corpus_path)]
                submit += [
                    "--model",
                    MODEL,
                    "--wait",
                    "--out",
                    str(out),
                    "--shard-pairs",
                    str(args.shard_pairs),
                    "--poll",
                    "0.5",
                ]
                submitted = subprocess.run(
                    submit,
                    env=clean_env(**shared),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                seconds = time.monotonic() - started
            finally:
                fleet.stop()
        if submitted.returncode != 0:
            print(submitted.stderr[-3000:] + fleet.log()[-3000:], file=sys.stderr)
            return 1
        sound = _report(args, server, limit_tokens, corpus, pq.read_table(out), seconds)
    finally:
        delete_prefixed(broker_url, prefix)
        if embedded is not None:
            embedded.stop()
    return 0 if sound else 1


def _tokens_per_request(corpus: object, max_documents: int) -> float:
    rows = corpus.to_pylist()  # type: ignore[attr-defined]
    total = sum(server_tokens(row["query"], [row["text"]]) for row in rows)
    requests = math.ceil(len(rows) / max_documents)
    return total / requests


def _report(
    args: argparse.Namespace,
    server: FakeRerankServer,
    limit_tokens: int,
    corpus: object,
    scores: object,
    seconds: float,
) -> bool:
    """Print the figures; True when every pair was scored exactly once and none went over the limit."""
    scored = sorted(server.scored(), key=lambda request: request.at)
    windows = _full_windows(scored, args.window)
    request_shares = [len(window) / args.limit_requests for window in windows]
    token_shares = [sum(r.tokens for r in window) / limit_tokens for window in windows]
    busiest_requests, busiest_tokens = server.busiest_window()
    keys = list(zip(scores["query_id"].to_pylist(), scores["doc_id"].to_pylist(), strict=True))  # type: ignore[index]
    expected = {(row["query_id"], row["doc_id"]) for row in corpus.to_pylist()}  # type: ignore[attr-defined]
    per_minute = 60.0 / args.window
    print(
        f"{args.workers} workers x {args.concurrency} in flight, limits {args.limit_requests} requests and "
        f"{limit_tokens:,} tokens per {args.window:g}s window ({args.limit_requests * per_minute:,.0f} "
        f"requests/min, {limit_tokens * per_minute:,.0f} tokens/min), "
        f"server latency {args.latency * 1000:.0f}ms"
    )
    print(f"{len(scored):,} requests scored in {seconds:.1f}s; {len(windows)} full windows from the first:")
    for index, window in enumerate(windows):
        print(
            f"  window {index}: {len(window):4d} requests ({request_shares[index]:6.1%} of limit), "
            f"{sum(r.tokens for r in window):8,d} tokens ({token_shares[index]:6.1%})"
        )
    if windows:
        print(
            f"achieved: {sum(request_shares) / len(windows):.1%} of the request limit "
            f"({sum(len(w) for w in windows) / len(windows) * per_minute:,.0f} requests/min, lowest window "
            f"{min(request_shares):.1%}); {sum(token_shares) / len(windows):.1%} of the token limit "
            f"({sum(sum(r.tokens for r in w) for w in windows) / len(windows) * per_minute:,.0f} tokens/min)"
        )
    print(
        f"busiest {args.window:g}s span: {busiest_requests} requests, {busiest_tokens:,} tokens; "
        f"requests over the limit: {server.over_limit}; 429s sent: {server.statuses()[429]}"
    )
    documents = sum(request.documents for request in scored)
    once = (
        len(keys) == len(set(keys)) == len(expected) and set(keys) == expected and documents == len(expected)
    )
    print(
        f"pairs: {len(expected):,} in the corpus, {len(keys):,} in the output, {documents:,} scored by the "
        f"server: {'every pair scored exactly once' if once else 'MISMATCH'}"
    )
    return once and server.over_limit == 0


def _full_windows(scored: list[Received], window_s: float) -> list[list[Received]]:
    """Consecutive windows from the first scored request, dropping the last, partial one."""
    if not scored:
        return []
    start, end = scored[0].at, scored[-1].at
    count = int((end - start) // window_s)
    return [
        [r for r in scored if start + i * window_s <= r.at < start + (i + 1) * window_s] for i in range(count)
    ]


if __name__ == "__main__":
    sys.exit(main())
