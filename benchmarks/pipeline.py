"""The same corpus through the real pipeline: ``scripts/workers.py`` (one worker) and ``scripts/submit.py``.

Both run as subprocesses with an isolated data dir, so the run has its own SQLite ledger and, unless
RERANK_BROKER_URL is set (then under a key prefix of its own), its own embedded Redis. The worker has
loaded its model before the clock starts; the wall time runs from launching ``submit.py --wait`` to its
exit, so it includes submit's start-up, validation, sharding, queueing and polling. The ledger's figure is
pairs over the summed wall seconds of the shard attempts: what the worker spends per shard (read the
shard, score, write the scores, record the attempt). The worker's span runs from the first shard's
start to the last shard's finish in the ledger (submit's start-up and sharding left out), and the
worker's log gives each shard's milliseconds per phase (``worker/phase_clock.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from benchmarks.contender import REPO, child_env
from worker.phase_clock import parse_phases

SCRIPTS = REPO / "scripts"
WORKER_START_TIMEOUT_S = 600.0
POLL_S = 0.2


@dataclass(frozen=True)
class PipelineRun:
    pairs: int
    shards: int
    wall_seconds: float  # submit.py --wait, from launch to exit
    ledger_wall_seconds: float  # sum of the shard attempts' wall seconds, from the ledger
    ledger_device_seconds: float
    worker_span_seconds: float  # the first shard's start to the last one's finish, from the ledger
    phases_ms: dict[str, float]  # mean milliseconds per shard in each phase, from the worker's log
    devices: tuple[str, ...] = ()  # the worker's device, dtype and tuning, as the ledger recorded them

    @property
    def worker_pairs_per_s(self) -> float:
        return self.pairs / self.worker_span_seconds if self.worker_span_seconds > 0 else float("nan")

    @property
    def wall_pairs_per_s(self) -> float:
        return self.pairs / self.wall_seconds

    @property
    def ledger_pairs_per_s(self) -> float:
        return self.pairs / self.ledger_wall_seconds


class PipelineFleet:
    """One worker hosting the model, started in the background; ``submit`` times a corpus through it."""

    def __init__(
        self,
        model: str,
        work_dir: Path,
        device: str,
        dtype: str,
        cpus: list[int],
        timeout_s: float,
        compile_mode: str = "auto",
        ledger_url: str | None = None,
        settings_env: dict[str, str] | None = None,
        calibration: Path | None = None,
    ) -> None:
        """Start the worker hosting ``model`` (a ``--model`` spec) in the background: call ``wait_ready``.
        The children inherit this process's CPU affinity; ``cpus`` sets their thread count.
        ``ledger_url``: a ledger other than the data dir's SQLite file. ``settings_env``: more ``RERANK_*``
        settings for the worker and submit.py. ``calibration``: a calibration cache the worker loads its
        tuning from, as the workers of a fleet share their machine's, instead of measuring its own."""
        from core.broker import embedded_broker
        from core.model_spec import ModelSpec
        from core.settings import Settings

        self.timeout_s = timeout_s
        self.model = model
        self.queue = ModelSpec.parse(self.model).queue
        data_dir = work_dir / "pipeline-data"
        self.env = child_env(len(cpus), device, compile_mode)
        self.env.update({"RERANK_DATA_DIR": str(data_dir), "RERANK_DTYPE": dtype, "RERANK_HEARTBEAT_S": "1"})
        if ledger_url is not None:
            self.env["RERANK_LEDGER_URL"] = ledger_url
        self.env.update(settings_env or {})
        broker_url = os.environ.get("RERANK_BROKER_URL")
        self.settings = Settings(data_dir=data_dir, broker_url=broker_url, ledger_url=ledger_url)
        if calibration is not None:
            shutil.copytree(calibration, self.settings.resolved_state_dir / "calibration", dirs_exist_ok=True)
        self.embedded = None
        if broker_url is None:
            self.embedded = embedded_broker(self.settings)
            broker_url = self.embedded.ensure_running()
        else:
            self.env["RERANK_BROKER_URL"] = broker_url
            self.env["RERANK_REDIS_KEY_PREFIX"] = f"rerank-bench-{uuid.uuid4().hex[:8]}:"
        self.broker_url = broker_url
        self.prefix = self.env.get("RERANK_REDIS_KEY_PREFIX", self.settings.redis_key_prefix)
        placement = ["--gpus", "0"] if device.startswith("cuda") else ["--cpu", "1"]
        self.log_path = work_dir / "pipeline-workers.log"
        with open(self.log_path, "wb") as worker_log:
            self.workers = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "workers.py"), "--model", self.model, *placement],
                cwd=REPO,
                env=self.env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a stuck fleet can be killed as one
            )

    def wait_ready(self) -> None:
        """Block until the worker has loaded its model and beats in Redis."""
        from core.broker.presence import live_workers

        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not live_workers(self.broker_url, self.prefix, self.queue):
            if self.workers.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the pipeline worker did not come up:\n{self._log_tail()}")
            time.sleep(0.2)

    def submit(self, corpus_file: Path, shard_pairs: int) -> PipelineRun:
        """Run ``submit.py --wait`` on ``corpus_file``; return its wall time and the ledger's figures."""
        from storage.ledger import Ledger

        self.wait_ready()
        started = time.perf_counter()
        submitted = subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "submit.py"),
                str(corpus_file),
                "--model",
                self.model,
                "--wait",
                f"--poll={POLL_S}",
                f"--shard-pairs={shard_pairs}",
                f"--timeout={self.timeout_s}",
            ],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall_seconds = time.perf_counter() - started
        if submitted.returncode != 0:
            raise RuntimeError(
                f"submit.py exited {submitted.returncode}:\n{submitted.stderr[-3000:]}\n"
                f"worker log:\n{self._log_tail()}"
            )
        run_id = submitted.stdout.strip().splitlines()[-1]
        ledger = Ledger(self.settings.resolved_ledger_url)
        try:
            usage = ledger.usage_totals(run_id)
            shards = ledger.shards(run_id)
        finally:
            ledger.dispose()
        starts = [shard.started_at for shard in shards if shard.started_at is not None]
        finishes = [shard.finished_at for shard in shards if shard.finished_at is not None]
        span = (max(finishes) - min(starts)).total_seconds() if starts and finishes else 0.0
        return PipelineRun(
            pairs=usage.pairs,
            shards=len(shards),
            wall_seconds=wall_seconds,
            ledger_wall_seconds=usage.wall_seconds,
            ledger_device_seconds=usage.device_seconds,
            worker_span_seconds=span,
            phases_ms=self.mean_phases(run_id),
            devices=usage.devices,
        )

    def mean_phases(self, run_id: str) -> dict[str, float]:
        """Mean milliseconds per shard of ``run_id`` in each phase, from the worker's log."""
        totals: dict[str, float] = {}
        count = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            phases = parse_phases(line) if f"shard {run_id}/" in line else None
            if phases is not None:
                count += 1
                for name, ms in phases.items():
                    totals[name] = totals.get(name, 0.0) + ms
        return {name: total / count for name, total in totals.items()}

    def stop(self, timeout_s: float = 60) -> None:
        """Ask the worker to finish and exit (SIGTERM), kill its process group if it hangs, and stop the
        embedded Redis this fleet started."""
        if self.workers.poll() is None:
            self.workers.send_signal(signal.SIGTERM)
            try:
                self.workers.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.workers.pid, signal.SIGKILL)
                self.workers.wait()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> PipelineFleet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]
