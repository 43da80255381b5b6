"""Benchmark of the producer at scale: scripts/submit.py without workers (validate the corpus, plan its
shards, write the shard inputs, record the run in a SQLite ledger, enqueue the shards) on synthetic
corpora of growing size, each in a fresh process.

Prints, per corpus, the wall time of submit.py from launch to exit, pairs/s and the process's peak RSS,
then the targets: peak RSS flat in corpus size (smallest and largest within 15%) and under 1 GiB, and at
least 150k pairs/s on every corpus. Exit code 0 when the runs succeeded and, except with --smoke, the
targets were met. Corpora (string ids, 20-100 passages per query, ~320 characters each) are generated
streaming and cached under --scratch. Uses RERANK_BROKER_URL if set, else an embedded Redis in a
temporary directory; the data dir and ledger of each run are in a temporary directory too.

Examples:
  python scripts/bench_submit.py                           # 1M and 10M pairs (generated once: ~2 minutes)
  python scripts/bench_submit.py --sizes 2M,5M --files 16  # corpora of 16 files each
  python scripts/bench_submit.py --interleaved             # each query's rows spread out (the spill path)
  python scripts/bench_submit.py --smoke                   # seconds: 3k and 30k pairs
  python scripts/bench_submit.py --sizes 1M --s3           # also from an S3 endpoint on loopback

With --s3 every corpus also runs with the corpus and the data dir on an S3 endpoint on loopback (moto's
server, in this process, which holds the objects in memory), right after its local-disk run, and the
target adds: from S3 within 2x of the local figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from benchmarks.machine import cpu_kind, usable_cpus
from benchmarks.producer_corpus import CorpusShape
from benchmarks.producer_scale import MIB, ProducerRun, cached_corpus, results_table, run_producer
from core.broker import embedded_broker
from core.settings import Settings
from testkit.fleet import clean_env
from testkit.object_store import S3Endpoint, s3_server
from testkit.services import delete_prefixed

REPO = Path(__file__).resolve().parent.parent
SMOKE_SIZES = "3k,30k"
RSS_SPREAD = 0.15
RSS_LIMIT_BYTES = 1 << 30
PAIRS_PER_S = 150_000
S3_BUCKET = "bench"


def parse_size(text: str) -> int:
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    number = text[:-1] if factor > 1 else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500k or 10M") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", help="comma-separated corpus sizes in pairs, e.g. 1M,10M (default; 3k,30k with --smoke)"
    )
    parser.add_argument("--files", type=int, default=1, help="Parquet files per corpus (default 1)")
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="shuffle the rows of every few hundred queries, so no query is contiguous",
    )
    parser.add_argument("--shard-pairs", type=int, help="pairs per shard (default: RERANK_SHARD_PAIRS)")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=REPO / "data" / "bench-corpora",
        help="where generated corpora are cached (default data/bench-corpora; a temporary one with --smoke)",
    )
    parser.add_argument(
        "--s3", action="store_true", help="also run each corpus from an S3 endpoint on loopback (moto)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny corpora, seconds; targets not judged")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [
        parse_size(size) for size in (args.sizes or (SMOKE_SIZES if args.smoke else "1M,10M")).split(",")
    ]
    if args.files < 1 or any(size < args.files for size in sizes):
        raise SystemExit("--files must be at least 1 and at most the smallest size")
    with tempfile.TemporaryDirectory(prefix="bulk-rerank-bench-submit-") as scratch:
        corpora = Path(scratch) / "corpora" if args.smoke else args.scratch
        return _bench(args, sizes, corpora, Path(scratch))


def _bench(args: argparse.Namespace, sizes: list[int], corpora: Path, root: Path) -> int:
    print(
        f"machine  CPU {cpu_kind()}, {usable_cpus()} usable CPUs; {platform.python_implementation()} "
        f"{platform.python_version()}, pyarrow {pa.__version__}",
        flush=True,
    )
    external = os.environ.get("RERANK_BROKER_URL")
    embedded = None if external else embedded_broker(Settings(data_dir=root / "broker"))
    broker_url = external or embedded.ensure_running()  # type: ignore[union-attr]
    prefix = f"rerank-bench-submit-{secrets.token_hex(4)}:"
    runs: list[ProducerRun] = []
    try:
        with s3_server() if args.s3 else contextlib.nullcontext() as endpoint:
            if endpoint is not None:
                endpoint.create_bucket(S3_BUCKET)
            for size in sizes:
                shape = CorpusShape(size, args.files, args.interleaved)
                corpus = cached_corpus(shape, corpora)
                places: list[tuple[str, str, dict[str, str]]] = [("local disk", str(corpus), {})]
                if endpoint is not None:
                    places.append(("S3 endpoint", _uploaded(endpoint, corpus), endpoint.env()))
                for store, corpus_location, store_env in places:
                    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as work:
                        data_dir = str(Path(work) / "data")
                        if store_env:
                            data_dir = f"s3://{S3_BUCKET}/runs-{secrets.token_hex(4)}"
                        env = clean_env(
                            data_dir=data_dir,
                            state_dir=str(Path(work) / "state"),
                            broker_url=broker_url,
                            redis_key_prefix=prefix,
                        )
                        env.update(store_env)
                        runs.append(run_producer(shape, corpus_location, env, args.shard_pairs, store))
                    delete_prefixed(broker_url, prefix)
                    print(
                        f"  {runs[-1].pairs:,} pairs from {store}: {runs[-1].seconds:.1f}s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        delete_prefixed(broker_url, prefix)
        if embedded is not None:
            embedded.stop()
    print("submit.py without workers, from launch to exit; peak RSS of the submit.py process")
    for line in results_table(runs):
        print(line)
    return _judge(runs, args.smoke)


def _uploaded(endpoint: S3Endpoint, corpus: Path) -> str:
    """The corpus (a file or a directory of files) copied to the endpoint; its s3:// URI."""
    key = f"{S3_BUCKET}/corpora/{corpus.name}"
    pafs.copy_files(str(corpus), key, destination_filesystem=endpoint.filesystem())
    return f"s3://{key}"


def _judge(runs: list[ProducerRun], smoke: bool) -> int:
    local = [run for run in runs if run.store == "local disk"]
    peaks = [run.peak_rss_bytes for run in local]
    spread = max(peaks) / min(peaks) - 1
    slowest = min(run.pairs_per_s for run in local)
    targets = [
        (f"peak RSS within {RSS_SPREAD:.0%} across sizes", f"{spread:.1%}", spread <= RSS_SPREAD),
        (
            f"peak RSS under {RSS_LIMIT_BYTES // MIB:,} MiB",
            f"{max(peaks) / MIB:,.0f} MiB",
            max(peaks) < RSS_LIMIT_BYTES,
        ),
        (
            f"at least {PAIRS_PER_S:,} pairs/s",
            f"{slowest:,.0f} pairs/s at the slowest",
            slowest >= PAIRS_PER_S,
        ),
    ]
    by_corpus = {run.shape: run for run in local}
    for run in runs:
        if run.store != "local disk":
            ratio = by_corpus[run.shape].pairs_per_s / run.pairs_per_s
            targets.append(
                (f"{run.pairs:,} pairs from S3 within 2x of local disk", f"{ratio:.2f}x slower", ratio <= 2)
            )
    for name, figure, met in targets:
        verdict = "not judged in a smoke run" if smoke else ("met" if met else "MISSED")
        print(f"target  {name}: {figure}: {verdict}")
    return 0 if smoke or all(met for _, _, met in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
