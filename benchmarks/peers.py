"""The accelerated peers' environment: sentence-transformers with its ONNX Runtime and OpenVINO backends.

Their packages (optimum-onnx, optimum-intel) pin transformers 4.x while the main install runs 5.x, so they
cannot share one environment. ``peers_python`` builds a virtual environment of their own under
``data/bench-peers/`` from the ``bench-peers`` dependency group of ``pyproject.toml`` (torch first, at the
main install's version, so pip keeps the same CPU or CUDA build), once per content of that group, and
returns its interpreter. The peer contenders run there; ours and the float32 reference stay in the main
environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from benchmarks.contender import REPO

GROUP = "bench-peers"
ROOT = REPO / "data" / "bench-peers"
INSTALL_TIMEOUT_S = 1800


def peer_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The ``bench-peers`` dependency group."""
    groups = tomllib.loads(pyproject.read_text())["dependency-groups"]
    return [str(requirement) for requirement in groups[GROUP]]


def torch_requirement() -> str:
    """TORCH_SPEC when set (as ``scripts/setup.sh`` reads it), else the main install's torch version."""
    import torch

    return os.environ.get("TORCH_SPEC") or f"torch=={torch.__version__.split('+')[0]}"


def environment_dir(requirements: list[str], torch_spec: str) -> Path:
    """Where the environment for these requirements lives: a new one whenever they change."""
    digest = hashlib.sha256("\n".join([torch_spec, *requirements]).encode()).hexdigest()[:12]
    return ROOT / f"venv-{digest}"


def installed_python(requirements: list[str] | None = None) -> Path | None:
    """The peers' interpreter when their environment is already installed, else None."""
    venv = environment_dir(requirements or peer_requirements(), torch_requirement())
    python = venv / "bin" / "python"
    return python if (venv / ".installed").is_file() and python.is_file() else None


def peers_python(log: Callable[[str], None]) -> Path:
    """The peers' interpreter, installing their environment first when needed (a few minutes, once).
    Raises ``RuntimeError`` naming the failing step when pip cannot install it (e.g. no package index)."""
    requirements = peer_requirements()
    found = installed_python(requirements)
    if found is not None:
        return found
    torch_spec = torch_requirement()
    venv = environment_dir(requirements, torch_spec)
    log(f"installing the ONNX/OpenVINO peers ({GROUP} group of pyproject.toml) into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        # torch first and pinned, so that the rest keeps its build instead of pulling another one.
        [str(python), "-m", "pip", "install", "--quiet", torch_spec],
        [str(python), "-m", "pip", "install", "--quiet", torch_spec, *requirements],
    ]
    for step in steps:
        completed = subprocess.run(
            step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if completed.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(
                f"installing the bench peers failed at `{' '.join(step[2:])}`:\n{completed.stderr[-2000:]}"
            )
    (venv / ".installed").write_text("\n".join([torch_spec, *requirements]) + "\n")
    return python
