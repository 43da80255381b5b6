"""A run across three "hosts" made of Linux network namespaces, one of which is cut off mid-run.

The root namespace is the storage+broker host: a redis-server, the S3 endpoint (moto) and PostgreSQL
(the suite's server, which listens on loopback only, reached through a TCP forwarder) all on the address
of a private bridge. Two worker hosts, namespaces w1 and w2 plugged into that bridge, each run
``scripts/workers.py``; the producer submits from the root namespace. While w1 holds a shard's lease, its
link goes down: w1's processes live on but reach nothing, its lease expires, w2's reaper sends the shard
again and w2 finishes the run. Nothing is lost, nothing duplicated, usage is counted once.

Needs root for ``ip netns``; skipped with the reason elsewhere, except on CI where it must run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from core.model_spec import ModelSpec
from storage.ledger import Ledger
from storage.ledger.schema import Shard, Usage
from storage.ledger.statuses import ShardStatus
from testkit import corpora
from testkit.checks import assert_output_matches, reference_scores
from testkit.fleet import SCRIPTS, Fleet, clean_env, start_workers
from testkit.model_factory import build_tiny_cross_encoder
from testkit.netns import Host, PrivateNetwork, TcpForwarder, namespace_support, private_network
from testkit.object_store import S3Endpoint, s3_server
from testkit.services import postgres_schema, redis_server

BUCKET = "fleet"
POSTGRES = ("127.0.0.1", 5432)
LEASE_S = 4
# 30 shards of 5 queries x 10 documents; the tiny model scores one in a fraction of a second.
N_QUERIES, DOCS_PER_QUERY, SHARD_PAIRS = 150, 10, 50
DONE_BEFORE_CUT = 4
# Shards a worker process holds at once (RERANK_SHARDS_IN_FLIGHT, the default): its Celery slots and
# prefetched messages.
SHARDS_IN_FLIGHT = 2
RUN_TIMEOUT_S = 150

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def network() -> Iterator[PrivateNetwork]:
    reason = namespace_support()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(
                f"the multi-host test must run on CI, but network namespaces cannot be made: {reason}"
            )
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    with private_network(["w1", "w2"]) as made:
        yield made


@dataclass
class Site:
    """The storage+broker host's services, as the other hosts reach them over the bridge."""

    broker_url: str
    ledger_url: str  # through the forwarder, for the hosts and the producer
    local_ledger_url: str  # the same schema on loopback, for the test's own checks
    endpoint: S3Endpoint
    forwarder: TcpForwarder


@pytest.fixture(scope="module")
def site(network: PrivateNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    gateway = network.gateway
    with (
        redis_server(gateway, tmp_path_factory.mktemp("redis")) as broker_url,
        s3_server(host=gateway) as endpoint,
        postgres_schema() as local_ledger_url,
        TcpForwarder((gateway, 0), POSTGRES) as forwarder,
    ):
        endpoint.create_bucket(BUCKET)
        host, port = forwarder.address
        url = make_url(local_ledger_url).set(host=host, port=port)
        yield Site(
            broker_url, url.render_as_string(hide_password=False), local_ledger_url, endpoint, forwarder
        )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-ce"
    return build_tiny_cross_encoder(path, seed=7)


def host_env(site: Site, state_dir: Path, prefix: str) -> dict[str, str]:
    env = clean_env(
        broker_url=site.broker_url,
        ledger_url=site.ledger_url,
        redis_key_prefix=prefix,
        state_dir=str(state_dir),
        dtype="float32",
        heartbeat_s="1",
        lease_s=str(LEASE_S),
        log_level="INFO",
        shards_in_flight=str(SHARDS_IN_FLIGHT),
    )
    env.update(site.endpoint.env(data_dir=f"s3://{BUCKET}/data"))
    return env


def start_hosts(network: PrivateNetwork, site: Site, model: str, prefix: str, root: Path) -> dict[str, Fleet]:
    """``workers.py --cpu 1`` in each worker host's namespace, each with its own node name; returns once
    both serve the queue."""
    queue_spec = ModelSpec.parse(model)

    def start(host: Host) -> Fleet:
        env = host_env(site, root / host.name / "state", prefix)
        args = ["--model", model, "--cpu", "1", "--hostname", f"{host.name}-{network.tag}"]
        log = root / f"{host.name}.log"
        return start_workers(args, queue_spec, 2, env, site.broker_url, prefix, log, wrapper=host.command([]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        fleets = dict(zip(network.hosts, pool.map(start, network.hosts.values()), strict=True))
    return fleets


def node(network: PrivateNetwork, host: str) -> str:
    return f"cpu0@{host}-{network.tag}"


def freeze(host: Host, stopped: bool) -> None:
    for pid in host.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP if stopped else signal.SIGCONT)


def in_transaction(ledger: Ledger, ports: list[int]) -> bool:
    """Whether one of the ledger sessions on these client ports is inside a transaction (or a statement)."""
    with ledger.session() as session:
        busy = session.scalar(
            text("select count(*) from pg_stat_activity where client_port = any(:ports) and state <> 'idle'"),
            {"ports": ports},
        )
    return bool(busy)


def cut_off_while_holding_a_lease(
    network: PrivateNetwork, site: Site, ledger: Ledger, run_id: str, deadline: float
) -> list[Shard]:
    """Once a few shards are done, catch w1 holding a lease for every shard it has in flight and cut it
    off; returns the shards it held. w1's processes are stopped while the ledger is read, so that what it
    holds cannot change under the look; they go on (unable to reach anything) once its link is down.

    Two moments are avoided, not because the product would lose anything there but because recovering
    from them takes minutes (tests/integration/test_stranded_shards.py shows each):
    - between taking a shard's message and leasing it: no lease expires, so the shard is sent again only
      once it has waited RERANK_STRANDED_S (300 s) with its queue empty. A worker process reserves one
      message per shard in flight and acks it late, so a cut made while w1 holds as many leases as it
      has shards in flight is clear of this (with one lease held, its other slot may hold a message it
      has not leased yet: a run here once waited on such a shard past its timeout).
    - inside one of w1's ledger transactions: its row locks stay held until PostgreSQL ends the idle
      transaction (after 30 s, storage/ledger/engine.py), and the reapers wait on them meanwhile."""
    w1, name = network.hosts["w1"], node(network, "w1")
    while time.monotonic() < deadline:
        if ledger.progress(run_id).shards_done < DONE_BEFORE_CUT:
            time.sleep(0.05)
            continue
        freeze(w1, True)
        try:
            time.sleep(0.2)  # what w1 sent before it stopped reaches the ledger
            running = ledger.shards(run_id, statuses=[ShardStatus.RUNNING])
            held = [shard for shard in running if shard.worker == name]
            if len(held) == SHARDS_IN_FLIGHT and not in_transaction(
                ledger, site.forwarder.upstream_ports(w1.address)
            ):
                w1.cut_off()
                return held
        finally:
            freeze(w1, False)
        time.sleep(0.05)
    raise AssertionError(f"w1 never held {SHARDS_IN_FLIGHT} shards at once while the run {run_id} went on")


def not_done(ledger: Ledger, run_id: str) -> str:
    shards = [shard for shard in ledger.shards(run_id) if shard.status != "done"]
    described = [
        f"{shard.shard_id} {shard.status} (attempt {shard.attempts} on {shard.worker})" for shard in shards
    ]
    return f"shards not done: {', '.join(described) or 'none'}"


def test_a_host_cut_off_mid_run_loses_and_duplicates_nothing(
    network: PrivateNetwork, site: Site, tiny_model: Path, tmp_path: Path
) -> None:
    model = f"cross-encoder:{tiny_model}"
    prefix = f"rr-{network.tag}:"
    fleets = start_hosts(network, site, model, prefix, tmp_path)
    ledger = Ledger(site.local_ledger_url)
    submit: subprocess.Popen[bytes] | None = None
    try:
        # The retrieval job's output: a Hive-partitioned dataset of three files on the S3 endpoint.
        corpus = corpora.long_corpus(N_QUERIES, DOCS_PER_QUERY, seed=13)
        part_rows = -(-corpus.num_rows // 3)
        for part in range(3):
            key = f"{BUCKET}/candidates/day=2026-12-02/part={part}/candidates.parquet"
            pq.write_table(
                corpus.slice(part * part_rows, part_rows), key, filesystem=site.endpoint.filesystem()
            )
        producer_env = host_env(site, tmp_path / "producer-state", prefix)
        out = f"s3://{BUCKET}/out/scores.parquet"
        argv = [sys.executable, str(SCRIPTS / "submit.py"), f"s3://{BUCKET}/candidates/", "--model", model]
        argv += ["--shard-pairs", str(SHARD_PAIRS), "--wait", "--timeout", str(RUN_TIMEOUT_S), "--out", out]
        stdout, stderr = tmp_path / "submit.out", tmp_path / "submit.err"
        with stdout.open("wb") as out_file, stderr.open("wb") as err_file:
            submit = subprocess.Popen(argv, env=producer_env, stdout=out_file, stderr=err_file)
        started = time.monotonic()
        while (run_id := ledger.latest_run_id()) is None:
            assert submit.poll() is None, stderr.read_text()
            time.sleep(0.1)

        held = cut_off_while_holding_a_lease(network, site, ledger, run_id, started + RUN_TIMEOUT_S)
        cut_at = datetime.now(UTC)
        submit.wait(timeout=RUN_TIMEOUT_S + 60)
        logs = "\n".join(f"--- {host}\n{fleet.log()[-4000:]}" for host, fleet in fleets.items())
        assert submit.returncode == 0, f"{not_done(ledger, run_id)}\n{stderr.read_text()[-3000:]}\n{logs}"
        assert stdout.read_text().split() == [run_id]

        # w1 was cut off, not killed: its launcher lived through the whole run.
        assert fleets["w1"].process.poll() is None, logs
        network.hosts["w1"].kill_processes()

        # 0 lost, 0 duplicated: the merged output has one row per pair, each with the reference score.
        scores = site.endpoint.read_table(f"{BUCKET}/out/scores.parquet")
        assert_output_matches(corpus, scores, reference_scores(tiny_model, corpus))
        check_ledger(ledger, run_id, corpus.num_rows, held, node(network, "w2"), cut_at)
        check_run_dir(site.endpoint, run_id, len(ledger.shards(run_id)))
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        for fleet in fleets.values():
            fleet.stop(timeout=20)
        ledger.dispose()


def check_ledger(
    ledger: Ledger, run_id: str, n_pairs: int, held: list[Shard], survivor: str, cut_at: datetime
) -> None:
    """Every shard done, once; usage counted once per attempt; w1's shards finished by w2 after the cut."""
    shards = {shard.shard_id: shard for shard in ledger.shards(run_id)}
    progress = ledger.progress(run_id)
    assert progress.status == "completed" and progress.shards_done == len(shards)
    assert all(shard.status == "done" for shard in shards.values())
    assert sum(shard.pairs for shard in shards.values()) == n_pairs == progress.pairs_done
    with ledger.session() as session:
        rows = session.execute(
            select(Usage.shard_id, Usage.attempt, Usage.request_index, Usage.worker, Usage.outcome)
            .where(Usage.run_id == run_id)
            .order_by(Usage.shard_id, Usage.attempt)
        ).all()
        repeated = session.execute(
            select(func.count())
            .select_from(Usage)
            .where(Usage.run_id == run_id)
            .group_by(Usage.shard_id, Usage.attempt, Usage.request_index)
            .having(func.count() > 1)
        ).all()
    assert repeated == [], f"usage rows recorded twice: {repeated}"
    ok = [row for row in rows if row.outcome == "ok"]
    assert sorted(row.shard_id for row in ok) == sorted(shards), "one successful attempt per shard"
    assert ledger.usage_totals(run_id).pairs == n_pairs
    for lost in held:
        shard = shards[lost.shard_id]
        attempts = [row for row in rows if row.shard_id == lost.shard_id]
        # The cut host's attempt recorded nothing (it could not reach the ledger); w2's next one took over.
        assert [row.attempt for row in attempts if row.attempt == lost.attempts] == []
        assert shard.attempts == lost.attempts + 1 and shard.worker == survivor
        assert [(row.attempt, row.worker, row.outcome) for row in attempts] == [
            (shard.attempts, survivor, "ok")
        ]
        assert shard.started_at is not None and shard.started_at >= cut_at


def check_run_dir(endpoint: S3Endpoint, run_id: str, n_shards: int) -> None:
    """The run's directory holds its inputs and one settled scores file per shard: no attempt files."""
    run_dir = f"{BUCKET}/data/runs/{run_id}"
    keys = [key for key in endpoint.keys(run_dir) if not key.startswith(f"{run_dir}/_inputs/")]
    assert keys == [f"{run_dir}/shard-{i:05d}.parquet" for i in range(n_shards)], keys
