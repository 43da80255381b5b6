"""Run the real command-line entry points as subprocesses, the way users do."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psutil
import redis

from core.broker.presence import live_workers
from core.broker.url import connect
from core.model_spec import ModelSpec
from storage.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def clean_env(**rerank: str) -> dict[str, str]:
    """The current environment without any RERANK_* variable, plus ``rerank`` (keys without prefix).
    Models are neither compiled nor calibrated unless ``rerank`` says so (see tests/conftest.py)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env["RERANK_COMPILE"] = "off"
    env["RERANK_CALIBRATE"] = "false"
    env.update({f"RERANK_{key.upper()}": value for key, value in rerank.items()})
    return env


def local_worker_env(root: Path, redis_url: str, prefix: str, **rerank: str) -> dict[str, str]:
    """The environment of a test fleet of local-model workers: its own data dir and Redis key prefix,
    float32 scoring (parity checks, unless ``rerank`` sets ``dtype``) and fast liveness beats."""
    settings = {"data_dir": str(root / "data"), "broker_url": redis_url, "redis_key_prefix": prefix}
    return clean_env(**{**settings, "dtype": "float32", "heartbeat_s": "1", **rerank})


def load_script(name: str) -> ModuleType:
    """``scripts/NAME`` as a module, without running its ``main`` (to read its parser, say)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def run_script(
    name: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_scripts_at_once(
    calls: Sequence[tuple[str, Sequence[str], dict[str, str]]], timeout: float = 300
) -> list[subprocess.CompletedProcess[str]]:
    """``run_script(name, *args, env=env)`` for each call, all at once: for checks that each start a
    script (mostly its imports) and need not wait for one another. Results in the order of ``calls``."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [
            pool.submit(run_script, name, *args, env=env, timeout=timeout) for name, args, env in calls
        ]
        return [future.result() for future in futures]


@dataclass
class Fleet:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_process(self, hostname: str) -> psutil.Process:
        """The worker process named ``hostname`` (e.g. ``cpu1@host``) that the launcher runs now."""
        for child in psutil.Process(self.process.pid).children():
            try:
                if f"--hostname={hostname}" in child.cmdline():
                    return child
            except psutil.Error:  # a worker that just died, not yet reaped by the launcher
                continue
        raise AssertionError(f"no worker process named {hostname}")

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_fleet(
    model: str,
    cpu: int,
    env: dict[str, str],
    broker_url: str,
    prefix: str,
    log_path: Path,
    timeout: float = 180,
) -> Fleet:
    """Start ``scripts/workers.py --cpu N`` and wait until all N workers have loaded the model."""
    args = ["--model", model, "--cpu", str(cpu)]
    return start_workers(args, ModelSpec.parse(model), cpu, env, broker_url, prefix, log_path, timeout)


def start_workers(
    args: list[str],
    spec: ModelSpec,
    expected: int,
    env: dict[str, str],
    broker_url: str,
    prefix: str,
    log_path: Path,
    timeout: float = 180,
    wrapper: Sequence[str] = (),
) -> Fleet:
    """Start ``scripts/workers.py ARGS`` and wait until ``expected`` workers serve ``spec``'s queue.
    ``wrapper`` runs it through a command (``ip netns exec NAME``, say)."""
    log_file = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(
        [*wrapper, sys.executable, str(SCRIPTS / "workers.py"), *args],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    fleet = Fleet(process, log_path)
    queue = spec.queue
    deadline = time.monotonic() + timeout
    while len(live := live_workers(broker_url, prefix, queue)) < expected:
        if process.poll() is not None or time.monotonic() > deadline:
            fleet.stop()
            raise RuntimeError(
                f"{expected} workers did not come up on {queue}; live: {live}; "
                f"{_redis_keys(broker_url)} keys in the test database\n{fleet.log()[-12000:]}"
            )
        time.sleep(0.2)
    return fleet


def _redis_keys(broker_url: str) -> int | str:
    try:
        client = connect(broker_url)
        try:
            return int(client.dbsize())
        finally:
            client.close()
    except redis.RedisError as error:
        return f"unknown ({error})"


def wait_finished(ledger: Ledger, run_id: str, timeout_s: float = 180) -> None:
    """Wait until the ledger says the run is finished; fail the caller after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ledger.progress(run_id).finished:
        assert time.monotonic() < deadline, f"run {run_id} did not finish: {ledger.progress(run_id)}"
        time.sleep(0.3)
