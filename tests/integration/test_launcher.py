"""A worker that cannot load its model exits with the start-up failure code and is not restarted (the
fleet's plan itself is tested in tests/unit/test_fleet_plan.py)."""

from __future__ import annotations

from pathlib import Path

from testkit.fleet import local_worker_env, run_script
from worker.fleet.launcher import STARTUP_FAILED_EXIT


def test_a_worker_that_cannot_load_its_model_exits_and_is_not_restarted(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    env = local_worker_env(tmp_path, redis_url, redis_prefix)
    launched = run_script(
        "workers.py", "--model", f"cross-encoder:{not_a_model}", "--cpu", "1", env=env, timeout=120
    )
    log = launched.stdout + launched.stderr
    assert launched.returncode == STARTUP_FAILED_EXIT, log
    assert f"worker could not start: ModelLoadError: cannot load cross-encoder '{not_a_model}'" in log
    assert "cpu0@" in log and "could not start (its log above says why); not restarting it" in log
    assert " ready." not in log and log.count("started cpu0@") == 1
