"""The README is the user's manual: its commands run, and it names every setting and flag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.settings import Settings
from testkit.fleet import REPO, clean_env, load_script, run_script

README = (REPO / "README.md").read_text()
DEMO_COMMAND = "bash scripts/setup.sh && .venv/bin/python scripts/demo.py"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest"


def test_readme_gives_the_two_commands_and_ci_runs_the_second() -> None:
    assert DEMO_COMMAND in README and TEST_COMMAND in README
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert TEST_COMMAND in ci_lines


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`RERANK_{name.upper()}`" in README, name


@pytest.mark.parametrize("script", ["submit.py", "workers.py"])
def test_every_flag_is_documented(script: str) -> None:
    parser = load_script(script).build_parser()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert re.search(rf"{re.escape(option)}\b", README), option


def test_demo_scores_the_example_with_the_embedded_broker(tmp_path: Path) -> None:
    """README's first command, without the setup step that the test run itself already needed; then
    status.py and cost.py, as the README goes on, read the demo's run from its ledger."""
    env = clean_env(data_dir=str(tmp_path / "data"))
    result = run_script("demo.py", env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "q1: how do I renew my passport" in out
    top_passport = out.split("q1: how do I renew my passport")[1].splitlines()[1]
    assert top_passport.strip().startswith("1.") and "passport" in top_passport.lower()
    top_sky = out.split("q4: why is the sky blue")[1].splitlines()[1]
    assert "scatter" in top_sky.lower()
    assert ": completed" in out and "25 scored of 25" in out
    # the embedded redis-server the demo started is stopped again
    assert not (tmp_path / "data" / "redis" / "url").exists()

    run_id = out.split("\nrun ", 1)[1].split(":", 1)[0]
    status = run_script("status.py", env=env)  # the latest run
    assert status.returncode == 0, status.stderr
    assert f"run {run_id}: completed" in status.stdout and "25 scored of 25" in status.stdout
    cost = run_script("cost.py", "--run", run_id, "--by", "model", "--format", "json", env=env)
    assert cost.returncode == 0, cost.stderr
    [row] = json.loads(cost.stdout)
    assert (row["model"], row["pairs"], row["requests"]) == ("embedding:all-MiniLM-L6-v2", 25, 0)


def test_readme_documents_every_ledger_column() -> None:
    from storage.ledger.schema import Base

    section = README.split("## The ledger", 1)[1].split("\n## ", 1)[0]
    for table in Base.metadata.sorted_tables:
        assert f"`{table.name}`" in section, table.name
        for column in table.columns:
            assert f"`{column.name}`" in section, f"{table.name}.{column.name}"
