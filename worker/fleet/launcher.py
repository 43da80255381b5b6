"""Start a fleet of worker processes on this machine: one per GPU, N CPU workers, or API workers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from core.errors import ConfigError, NoDeviceError
from core.model_spec import ModelSpec

log = logging.getLogger(__name__)

# A worker exits with this code when it cannot load its model or ledger; starting it again would fail
# the same way, so the launcher does not.
STARTUP_FAILED_EXIT = 3
ALLOCATOR_SETTING = "PYTORCH_CUDA_ALLOC_CONF"


@dataclass(frozen=True)
class WorkerProcess:
    """How to start one worker process: its Celery node name, command line and environment overrides."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(value: str, visible: int) -> list[int]:
    """``all`` or a comma-separated list of GPU indices, checked against what is visible."""
    if visible == 0:
        from worker.backends.local.device import cuda_versions

        raise NoDeviceError(
            f"--gpus {value}: no CUDA GPU is visible on this machine ({cuda_versions()}); "
            "use --cpu N to run CPU workers"
        )
    if value.strip().lower() == "all":
        return list(range(visible))
    try:
        indices = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {value!r}: expected 'all' or indices like 0,1") from None
    bad = [index for index in indices if not 0 <= index < visible]
    if bad or not indices:
        raise ConfigError(f"--gpus {value!r}: this machine has GPUs 0..{visible - 1}")
    return sorted(set(indices))


def plan_fleet(
    spec: ModelSpec,
    gpus: list[int] | None,
    cpu_workers: int,
    broker_url: str,
    hostname: str,
    log_level: str,
    inherited_devices: str | None = None,
    shards_in_flight: int = 1,
) -> list[WorkerProcess]:
    """One Celery worker per GPU (pinned with CUDA_VISIBLE_DEVICES) or ``cpu_workers`` CPU workers
    sharing the cores. Each runs up to ``shards_in_flight`` tasks at once in threads (their model calls
    take turns on the process's compute thread, so one shard's reading and writing overlap another's
    scoring), and heartbeats and control commands keep flowing while a shard is scored.
    ``inherited_devices``: the launcher's own CUDA_VISIBLE_DEVICES, through which ``gpus`` (the indices
    torch shows the launcher) are mapped."""
    processes: list[WorkerProcess] = []
    base_env = {"RERANK_BROKER_URL": broker_url, "RERANK_WORKER_MODEL": str(spec)}
    if gpus:
        # The GPU workers share the cores for tokenizing, padding and writing.
        threads = thread_limits(max(1, (os.cpu_count() or 1) // len(gpus)))
        for gpu in gpus:
            name = f"gpu{gpu}@{hostname}"
            device = physical_device(gpu, inherited_devices)
            env = {
                **base_env,
                **threads,
                "CUDA_VISIBLE_DEVICES": device,
                "RERANK_DEVICE": "cuda",
                # Batch shapes vary, so fixed-size segments would fragment; a user's own setting stands.
                ALLOCATOR_SETTING: os.environ.get(ALLOCATOR_SETTING, "expandable_segments:True"),
            }
            processes.append(WorkerProcess(name, _celery_argv(spec, name, log_level, shards_in_flight), env))
        return processes
    threads = thread_limits(max(1, (os.cpu_count() or 1) // max(1, cpu_workers)))
    for index in range(cpu_workers):
        name = f"cpu{index}@{hostname}"
        env = {**base_env, **threads, "CUDA_VISIBLE_DEVICES": "", "RERANK_DEVICE": "cpu"}
        processes.append(WorkerProcess(name, _celery_argv(spec, name, log_level, shards_in_flight), env))
    return processes


def physical_device(index: int, inherited_devices: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES entry of the launcher's GPU ``index``.

    torch numbers only the GPUs the launcher may see: under an inherited ``CUDA_VISIBLE_DEVICES=2,3``
    (Slurm, say) its GPU 0 is physical GPU 2, and a child told ``0`` would land on a GPU the job was not
    given. Entries may also be UUIDs or MIG names; they are passed on as written."""
    if inherited_devices is None or not inherited_devices.strip():
        return str(index)
    entries = [entry.strip() for entry in inherited_devices.split(",") if entry.strip()]
    if index >= len(entries):
        raise ConfigError(
            f"GPU {index} is not among the {len(entries)} this launcher may use "
            f"(CUDA_VISIBLE_DEVICES={inherited_devices})"
        )
    return entries[index]


def thread_limits(threads: int) -> dict[str, str]:
    """Environment that caps a worker's OpenMP, MKL and tokenizer (Rayon) threads at ``threads``."""
    count = str(threads)
    return {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "RAYON_NUM_THREADS": count}


def plan_api_fleet(
    spec: ModelSpec, processes: int, concurrency: int, broker_url: str, hostname: str, log_level: str
) -> list[WorkerProcess]:
    """``processes`` worker processes for a hosted API, each running ``concurrency`` shards at once in
    threads and keeping up to ``concurrency`` HTTP requests in flight. No GPU is used or pinned."""
    env = {
        "RERANK_BROKER_URL": broker_url,
        "RERANK_WORKER_MODEL": str(spec),
        "RERANK_API_CONCURRENCY": str(concurrency),
        "CUDA_VISIBLE_DEVICES": "",
        "RERANK_DEVICE": "cpu",
    }
    names = [f"api{index}@{hostname}" for index in range(processes)]
    return [WorkerProcess(name, _celery_argv(spec, name, log_level, concurrency), env) for name in names]


def _celery_argv(spec: ModelSpec, name: str, log_level: str, concurrency: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--queues={spec.queue}",
        f"--hostname={name}",
        f"--loglevel={log_level}",
        "--task-events",
        "--without-gossip",
        "--without-mingle",
    ]


class Fleet:
    """Runs the planned processes until they exit or the launcher is told to stop.

    SIGINT/SIGTERM to the launcher are passed on as SIGTERM (Celery's warm shutdown: finish the current
    shard, then exit). A worker that exits cleanly on its own (someone sent it SIGTERM) is retired, and
    so is one that could not start (its log says why); one that dies (OOM killer, SIGKILL, a crash) is
    started again, at most ``MAX_RESTARTS_PER_MINUTE`` times a minute; its shard comes back through the
    lease reaper."""

    MAX_RESTARTS_PER_MINUTE = 10

    def __init__(self, processes: list[WorkerProcess]) -> None:
        self.processes = processes
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._restarts: dict[str, list[float]] = {process.name: [] for process in processes}
        self._stopping = False

    def start(self) -> None:
        for process in self.processes:
            self._spawn(process)

    def _spawn(self, process: WorkerProcess) -> None:
        child = subprocess.Popen(process.argv, env={**os.environ, **process.env})
        self._children[process.name] = child
        log.info("started %s (pid %d)", process.name, child.pid)

    def stop(self, *_: object) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Supervise the children until all have exited; returns the worst exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                running = [process for process in self.processes if self._supervise(process)]
                if not running:
                    break
                time.sleep(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        codes = [child.returncode for child in self._children.values()]
        clean = all(code in (0, -signal.SIGTERM) for code in codes)
        return 0 if clean else max((abs(code) for code in codes), default=0)

    def _supervise(self, process: WorkerProcess) -> bool:
        """Reap or restart one child; True while it (or its replacement) runs."""
        code = self._children[process.name].poll()
        if code is None:
            return True
        if self._stopping or code == 0:
            return False
        if code == STARTUP_FAILED_EXIT:
            log.error("%s could not start (its log above says why); not restarting it", process.name)
            return False
        now = time.monotonic()
        recent = [moment for moment in self._restarts[process.name] if now - moment < 60]
        if len(recent) >= self.MAX_RESTARTS_PER_MINUTE:
            log.error(
                "%s died %d times within a minute (exit %s); not restarting it",
                process.name,
                len(recent),
                code,
            )
            self._restarts[process.name] = recent
            return False
        log.warning("%s exited with %s; restarting it", process.name, code)
        self._restarts[process.name] = [*recent, now]
        self._spawn(process)
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d; asking workers to finish their current shard and exit", signum)
        self.stop()
