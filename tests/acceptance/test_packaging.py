"""The wheel a non-editable ``pip install`` builds ships every package and the price table.

Scripts run from the repository but import bulk-rerank from wherever it is installed, and the price
table is read from the installed ``core`` package, so a package or data file missing from the wheel
only shows on a plain install. The wheel is built from a copy of the tracked files (an in-tree build
would leave ``build/`` behind, and files there from an earlier build would end up in later wheels)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

from testkit.fleet import REPO


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
    ).stdout
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def _packages(files: list[str]) -> set[str]:
    """Every package the project's ``packages.find`` includes, from the tracked ``__init__.py`` files."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    return {
        str(Path(name).parent)
        for name in files
        if Path(name).name == "__init__.py" and Path(name).parts[0] in roots
    }


def _offline_build_flags() -> list[str]:
    """Build with this environment's setuptools when it is new enough, so no index is needed."""
    if importlib.util.find_spec("setuptools") is None:
        return []
    major = int(version("setuptools").split(".")[0])
    return ["--no-build-isolation"] if major >= 68 else []


def test_the_wheel_holds_every_package_and_the_price_table(tmp_path: Path) -> None:
    files = _tracked_files()
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *_offline_build_flags(),
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = wheels.glob("bulk_rerank-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped_prices = archive.read("core/prices.toml")

    assert shipped_prices == (REPO / "core" / "prices.toml").read_bytes()
    packages = _packages(files)
    assert {"core", "storage.ledger.migrations.versions", "worker.backends.local", "producer"} <= {
        package.replace("/", ".") for package in packages
    }
    missing = sorted(package for package in packages if f"{package}/__init__.py" not in names)
    assert missing == [], f"packages missing from the wheel: {missing}"
    modules = {name for name in files if name.endswith(".py") and str(Path(name).parent) in packages}
    assert sorted(modules - names) == [], "modules missing from the wheel"
    # Nothing outside the packages: no tests, scripts or benchmark outputs.
    top_levels = {name.split("/")[0] for name in names if not name.startswith("bulk_rerank-")}
    assert top_levels == {package.split("/")[0] for package in packages}
