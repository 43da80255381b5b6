"""Chaos run: score a corpus while killing worker processes at random, and restarting Redis (without
persistence) once, then check the output against the corpus and the ledger.

It builds a tiny cross-encoder and a synthetic corpus, starts its own redis-server and a fleet of CPU
workers (scripts/workers.py, whose launcher restarts killed workers), submits the corpus, SIGKILLs a
worker holding a shard after every few finished shards, restarts Redis halfway and rebuilds the queue
with `submit.py --resume`, and finally prints: kills survived, shards redelivered, rows lost, rows
duplicated, usage rows double-counted, and whether the ledger agrees with the output. Exit code 0 when
nothing was lost, duplicated or double-counted.

Example:
  python scripts/chaos.py --pairs 50000 --kills 20
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
from sqlalchemy import func, select

from core.broker.embedded import EmbeddedRedis
from core.broker.presence import live_workers
from core.model_spec import ModelSpec
from core.settings import Settings
from storage.ledger import Ledger
from storage.ledger.schema import Usage
from storage.location import parse_location
from storage.shards.publication import settle_run
from testkit import corpora
from testkit.model_factory import build_tiny_cross_encoder
from worker.backends import load_reranker

REPO = Path(__file__).resolve().parent.parent

DOCS_PER_QUERY = 25


@dataclass
class ChaosReport:
    kills: int
    redis_restarts: int
    shards_redelivered: int
    extra_attempts: int
    rows_lost: int
    rows_duplicated: int
    rows_unexpected: int
    usage_double_counted: int
    ledger_consistent: bool
    max_score_error: float
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.rows_lost == 0
            and self.rows_duplicated == 0
            and self.rows_unexpected == 0
            and self.usage_double_counted == 0
            and self.ledger_consistent
            and self.max_score_error <= 1e-4
        )

    def render(self) -> str:
        return "\n".join(
            [
                f"kills survived            {self.kills}",
                f"redis restarts            {self.redis_restarts}",
                f"shards redelivered        {self.shards_redelivered} ({self.extra_attempts} extra attempts)",
                f"rows lost                 {self.rows_lost}",
                f"rows duplicated           {self.rows_duplicated}",
                f"rows not in the corpus    {self.rows_unexpected}",
                f"usage rows double-counted {self.usage_double_counted}",
                f"ledger consistent         {'yes' if self.ledger_consistent else 'NO'}",
                f"max score error           {self.max_score_error:.2e} (sample vs in-process scorer)",
                f"wall time                 {self.seconds:.0f}s",
                f"verdict                   {'PASS' if self.ok else 'FAIL'}",
            ]
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=50_000, help="pairs in the synthetic corpus")
    parser.add_argument("--kills", type=int, default=20, help="worker processes to SIGKILL mid-shard")
    parser.add_argument("--workers", type=int, default=3, help="CPU worker processes")
    parser.add_argument("--shard-pairs", type=int, default=1000, help="pairs per shard")
    parser.add_argument("--no-redis-restart", action="store_true", help="do not restart Redis halfway")
    parser.add_argument("--lease-s", type=float, default=4.0, help="RERANK_LEASE_S for the workers")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="off",
        help="RERANK_COMPILE for the workers (default off: the tiny model gains nothing from TorchInductor, "
        "and every restarted worker would compile it again)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and of the kill schedule")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    return parser


@dataclass
class ChaosSite:
    """What a chaos run starts, so that it is all stopped again whatever happens."""

    root: Path
    redis_server: EmbeddedRedis
    fleet: subprocess.Popen[bytes] | None = None

    def close(self, keep: bool) -> None:
        if self.fleet is not None and self.fleet.poll() is None:
            self.fleet.send_signal(signal.SIGTERM)
            try:
                self.fleet.wait(60)
            except subprocess.TimeoutExpired:
                self.fleet.kill()
        self.redis_server.stop()
        if keep:
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bulk-rerank-chaos-"))
    site = ChaosSite(root, EmbeddedRedis(root / "redis", persistent=False))
    try:
        report = run_chaos(args, site)
    finally:
        site.close(args.keep)
    print(report.render())
    return 0 if report.ok else 1


def run_chaos(args: argparse.Namespace, site: ChaosSite) -> ChaosReport:
    rng = random.Random(args.seed)
    started = time.monotonic()
    root, redis_server = site.root, site.redis_server
    model = build_tiny_cross_encoder(root / "model", seed=args.seed)
    spec = f"cross-encoder:{model}"
    n_queries = max(1, args.pairs // DOCS_PER_QUERY)
    corpus = corpora.long_corpus(n_queries, DOCS_PER_QUERY, seed=args.seed)
    corpus_path = corpora.write(corpus, root / "corpus.parquet")
    broker_url = redis_server.ensure_running()
    redis_server.port = int(broker_url.rsplit(":", 1)[1].split("/")[0])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANK_")},
        "RERANK_DATA_DIR": str(root / "data"),
        "RERANK_BROKER_URL": broker_url,
        "RERANK_LEASE_S": str(args.lease_s),
        "RERANK_COMPILE": args.compile,
        "RERANK_MAX_ATTEMPTS": "10",
        "RERANK_DTYPE": "float32",
        "RERANK_HEARTBEAT_S": "1",
        "RERANK_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = open(root / "workers.log", "wb")  # noqa: SIM115 - the fleet writes to it for its whole life
    fleet = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "workers.py"), "--model", spec, "--cpu", str(args.workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    site.fleet = fleet
    queue = ModelSpec.parse(spec).queue
    _wait(lambda: len(live_workers(broker_url, "rerank:", queue)) >= args.workers, 300, "workers to start")
    run_id = _submit(env, str(corpus_path), "--model", spec, "--shard-pairs", str(args.shard_pairs))
    ledger = Ledger(f"sqlite:///{root / 'data' / 'ledger.db'}")
    total_shards = ledger.progress(run_id).shards_total
    kills, restarts = 0, 0
    restart_at = None if args.no_redis_restart else max(1, args.kills // 2)
    deadline = started + args.timeout
    while not ledger.progress(run_id).finished:
        if time.monotonic() > deadline:
            stuck = ", ".join(
                f"{shard.shard_id} ({shard.status}, {shard.attempts} attempt(s))"
                for shard in ledger.shards(run_id)
                if shard.status != "done"
            )
            raise SystemExit(
                f"chaos run {run_id} did not finish within {args.timeout:.0f}s; shards not done: {stuck}"
            )
        done_before = ledger.progress(run_id).shards_done
        if kills < args.kills and _kill_a_busy_worker(ledger, run_id, fleet, rng):
            kills += 1
            print(f"kill {kills}/{args.kills} at {done_before}/{total_shards} shards done", flush=True)
            if restart_at is not None and kills == restart_at and restarts == 0:
                redis_server.stop()
                redis_server.ensure_running()
                restarts += 1
                print("redis restarted empty; rebuilding the queue with --resume", flush=True)
                _submit(env, "--resume", run_id)
            # let some shards finish between kills, so kills spread over the run
            target = done_before + rng.randint(1, 2)
            _wait(lambda t=target: _finished_or_done(ledger, run_id, t), args.timeout, "progress")
        else:
            time.sleep(0.1)
    return _verify(args, ledger, run_id, corpus, root, model, kills, restarts, time.monotonic() - started)


def _finished_or_done(ledger: Ledger, run_id: str, shards_done: int) -> bool:
    progress = ledger.progress(run_id)
    return progress.finished or progress.shards_done >= shards_done


def _submit(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "submit.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"submit.py {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


def _kill_a_busy_worker(
    ledger: Ledger, run_id: str, fleet: subprocess.Popen[bytes], rng: random.Random
) -> bool:
    """SIGKILL a worker process in the middle of a shard attempt. A restarted worker keeps its name, and
    the ledger shows its predecessor's attempt as running until the lease expires: only a process that
    already lived when the attempt started can be the one holding it."""
    attempts = [
        (shard.worker, _utc(shard.started_at).timestamp())
        for shard in ledger.shards(run_id, statuses=["running"])
        if shard.worker and shard.started_at
    ]
    children = [
        child
        for child in psutil.Process(fleet.pid).children()
        if any(
            f"--hostname={worker}" in _cmdline(child) and _created(child) <= started
            for worker, started in attempts
        )
    ]
    if not children:
        return False
    victim = rng.choice(children)
    try:
        victim.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
        return False
    return True


def _utc(moment: datetime) -> datetime:
    """SQLite hands back the ledger's UTC times without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _created(process: psutil.Process) -> float:
    """When the process started (epoch seconds), or infinity for one that just died."""
    try:
        return float(process.create_time())
    except psutil.Error:
        return float("inf")


def _cmdline(process: psutil.Process) -> str:
    """The command line, or "" for a worker that just died (a zombie until its launcher reaps it)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _verify(
    args: argparse.Namespace,
    ledger: Ledger,
    run_id: str,
    corpus: object,
    root: Path,
    model: Path,
    kills: int,
    restarts: int,
    seconds: float,
) -> ChaosReport:
    import pyarrow as pa

    assert isinstance(corpus, pa.Table)
    run_dir = root / "data" / "runs" / run_id
    # A worker killed between its fenced publish and the copy onto the shard's output key leaves the
    # ledger naming its attempt file; the copy is finished here, as every reader of a run does.
    settle_run(parse_location(str(root / "data")), ledger, run_id)
    scores = pq.read_table(run_dir)
    output_keys = list(
        zip(scores.column("query_id").to_pylist(), scores.column("doc_id").to_pylist(), strict=True)
    )
    corpus_keys = set(
        zip(corpus.column("query_id").to_pylist(), corpus.column("doc_id").to_pylist(), strict=True)
    )
    unique_output = set(output_keys)
    shards = ledger.shards(run_id)
    with ledger.session() as session:
        double_counted = session.execute(
            select(func.count()).select_from(
                select(Usage.shard_id)
                .where(Usage.run_id == run_id)
                .group_by(Usage.shard_id, Usage.attempt, Usage.request_index)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
    progress = ledger.progress(run_id)
    problems = [
        f"shard {shard.shard_id} is {shard.status} or its file has the wrong number of rows"
        for shard in shards
        if shard.status != "done"
        or pq.read_metadata(run_dir / Path(shard.output_path).name).num_rows != shard.pairs
    ]
    if progress.status != "completed":
        problems.append(f"run status {progress.status}")
    if not progress.pairs_done == corpus.num_rows == len(unique_output):
        problems.append(f"{progress.pairs_done} pairs done in the ledger, {len(unique_output)} in the output")
    problems += [f"partial file left: {p.name}" for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    for problem in problems:
        print(f"inconsistent: {problem}")
    consistent = not problems
    return ChaosReport(
        kills=kills,
        redis_restarts=restarts,
        shards_redelivered=sum(1 for shard in shards if shard.attempts > 1),
        extra_attempts=sum(shard.attempts - 1 for shard in shards),
        rows_lost=len(corpus_keys - unique_output),
        rows_duplicated=len(output_keys) - len(unique_output),
        rows_unexpected=len(unique_output - corpus_keys),
        usage_double_counted=int(double_counted),
        ledger_consistent=consistent,
        max_score_error=_sample_error(corpus, scores, model, args.seed),
        seconds=seconds,
    )


def _sample_error(corpus: object, scores: object, model: Path, seed: int, sample: int = 500) -> float:
    """Largest difference between the fleet's scores and the in-process scorer on a random sample."""
    import pyarrow as pa

    assert isinstance(corpus, pa.Table) and isinstance(scores, pa.Table)
    rows = np.random.default_rng(seed).choice(
        corpus.num_rows, size=min(sample, corpus.num_rows), replace=False
    )
    picked = corpus.take(pa.array(rows))
    reranker = load_reranker(
        ModelSpec.parse(f"cross-encoder:{model}"), Settings(dtype="float32", device="cpu")
    )
    expected = reranker.score(picked.column("query").to_pylist(), picked.column("text").to_pylist()).scores
    by_key = dict(
        zip(
            zip(scores.column("query_id").to_pylist(), scores.column("doc_id").to_pylist(), strict=True),
            scores.column("score").to_pylist(),
            strict=True,
        )
    )
    keys = zip(picked.column("query_id").to_pylist(), picked.column("doc_id").to_pylist(), strict=True)
    got = np.array([by_key.get(key, np.inf) for key in keys])
    return float(np.max(np.abs(got - expected)))


if __name__ == "__main__":
    sys.exit(main())
