"""The import check is not toothless: a copy of the tree with one wrong-way import fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.fleet import REPO

PACKAGES = ("core", "storage", "worker", "producer", "tasks", "testkit", "benchmarks", "tests")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and their contracts, which passes the check as it is."""
    target = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    result = lint_imports(target)
    assert result.returncode == 0, result.stdout
    return target


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "wrong_import", "complaint"),
    [
        ("core/errors.py", "import storage.ledger", "core is not allowed to import storage"),
        ("storage/ledger/types.py", "import worker.runtime", "storage is not allowed to import worker"),
        ("worker/backends/base.py", "import worker.runtime", "worker.backends is not allowed to import"),
        ("producer/report.py", "import worker.runtime", "producer is not allowed to import worker"),
        ("storage/shards/scores.py", "import torch", "storage is not allowed to import torch"),
    ],
)
def test_a_wrong_way_import_fails_the_check(
    tree: Path, module: str, wrong_import: str, complaint: str
) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + f"\n{wrong_import}  # deliberately wrong\n")
    try:
        result = lint_imports(tree)
    finally:
        path.write_text(original)
    assert result.returncode == 1
    assert complaint in result.stdout
