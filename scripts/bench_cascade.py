"""Benchmark what a two-stage cascade saves: a cheap local model in front of a token-priced rerank API.

Starts a fake Voyage rerank server on loopback (testkit/api_servers.py, the real request and answer
shapes), a worker for a tiny local cross-encoder built here and API workers for voyage:rerank-2.5, then
scores one synthetic corpus twice with scripts/submit.py --wait: every pair with the API, and as a cascade
(--model the local model --then the API --top-k K). Prints, from the ledger, the API requests, tokens and
cost of each and what the cascade saved, with each stage's pairs. Exit code 0 when both runs completed
and the API scored exactly each query's top K in the cascade.
Uses RERANK_BROKER_URL if set, else an embedded Redis in a temporary directory.

Examples:
  python scripts/bench_cascade.py                 # 300 queries x 50 documents, top 10
  python scripts/bench_cascade.py --smoke         # seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from core.broker import embedded_broker
from core.model_spec import ModelSpec
from core.settings import Settings
from storage.ledger import Ledger
from testkit import corpora
from testkit.api_servers import FakeRerankServer, running
from testkit.fleet import clean_env, start_fleet, start_workers
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed

REPO = Path(__file__).resolve().parent.parent
API_MODEL = "voyage:rerank-2.5"
KEY = f"bench-{secrets.token_hex(8)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=300, help="queries (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=50, help="documents per query (default: %(default)s)")
    parser.add_argument(
        "--top-k", type=int, default=10, help="pairs a query the API scores (default: %(default)s)"
    )
    parser.add_argument("--smoke", action="store_true", help="40 queries x 20 documents, top 5")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.queries, args.docs, args.top_k = 40, 20, 5
    with tempfile.TemporaryDirectory(prefix="bench-cascade-") as scratch:
        return _bench(args, Path(scratch))


def _bench(args: argparse.Namespace, scratch: Path) -> int:
    corpus = corpora.long_corpus(n_queries=args.queries, docs_per_query=args.docs, seed=21)
    corpus_path = corpora.write(corpus, scratch / "corpus.parquet")
    local_model = f"cross-encoder:{build_tiny_cross_encoder(scratch / 'local-model', seed=3)}"
    external = os.environ.get("RERANK_BROKER_URL")
    embedded = None if external else embedded_broker(Settings(data_dir=scratch / "data"))
    broker_url = external or embedded.ensure_running()  # type: ignore[union-attr]
    prefix = f"rerank-bench-{secrets.token_hex(4)}:"
    shared = {"data_dir": str(scratch / "data"), "broker_url": broker_url, "redis_key_prefix": prefix}
    server = FakeRerankServer("voyage", api_key=KEY)
    try:
        with running(server):
            api_env = clean_env(**shared, voyage_base_url=server.url, voyage_api_key=KEY, log_level="WARNING")
            fleets = [
                start_workers(
                    ["--api", "voyage", "--model", "rerank-2.5", "--concurrency", "4"],
                    ModelSpec.parse(API_MODEL),
                    1,
                    api_env,
                    broker_url,
                    prefix,
                    scratch / "api.log",
                ),
                start_fleet(
                    local_model,
                    1,
                    clean_env(**shared, dtype="float32"),
                    broker_url,
                    prefix,
                    scratch / "l.log",
                ),
            ]
            try:
                full = _submit(shared, corpus_path, "--model", API_MODEL)
                cascade = _submit(
                    shared,
                    corpus_path,
                    "--model",
                    local_model,
                    "--then",
                    API_MODEL,
                    "--top-k",
                    str(args.top_k),
                )
            finally:
                for fleet in fleets:
                    fleet.stop()
        if full is None or cascade is None:
            return 1
        return _report(
            args, Ledger(f"sqlite:///{scratch / 'data' / 'ledger.db'}"), full, cascade, corpus.num_rows
        )
    finally:
        delete_prefixed(broker_url, prefix)
        if embedded is not None:
            embedded.stop()


def _submit(shared: dict[str, str], corpus: Path, *flags: str) -> str | None:
    command = [
        sys.executable,
        str(REPO / "scripts" / "submit.py"),
        str(corpus),
        *flags,
        "--wait",
        "--poll",
        "0.5",
    ]
    done = subprocess.run(command, env=clean_env(**shared), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return done.stdout.strip().splitlines()[-1]


def _report(args: argparse.Namespace, ledger: Ledger, full: str, cascade: str, n_pairs: int) -> int:
    [stage2] = ledger.stage_runs(cascade)
    full_api = ledger.api_usage_totals(full)
    cascade_api = ledger.api_usage_totals(stage2.run_id)
    local = ledger.usage_totals(cascade)
    print(
        f"CPU: {_cpu()}; {args.queries} queries x {args.docs} documents = {n_pairs:,} pairs; API {API_MODEL}"
    )
    print(
        f"every pair with the API (run {full}): {ledger.usage_totals(full).pairs:,} pairs, "
        f"{full_api.requests:,} requests, {full_api.tokens:,} tokens, ${full_api.cost_usd or 0:.6f}"
    )
    print(
        f"cascade (run {cascade}): stage 1 {local.pairs:,} pairs on the local model; stage 2 (run "
        f"{stage2.run_id}) the top {args.top_k} a query, {ledger.usage_totals(stage2.run_id).pairs:,} pairs, "
        f"{cascade_api.requests:,} requests, {cascade_api.tokens:,} tokens, ${cascade_api.cost_usd or 0:.6f}"
    )
    full_cost, cascade_cost = full_api.cost_usd or 0.0, cascade_api.cost_usd or 0.0
    saved = 1 - cascade_cost / full_cost if full_cost else 0.0
    print(
        f"API cost saved by the cascade: ${full_cost - cascade_cost:.6f} ({saved:.1%}); priced by the ledger"
    )
    ledger.dispose()
    exact = ledger.usage_totals(stage2.run_id).pairs == args.queries * min(args.top_k, args.docs)
    return 0 if exact else 1


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
