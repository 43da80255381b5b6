"""The README is the user's manual: its commands run, and it names every setting and flag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.kinds import API_KINDS, LOCAL_KINDS
from core.settings import Settings, api_field_name, api_variable
from testkit.fleet import REPO, clean_env, load_script, run_script
from worker.backends.api.registry import PROVIDERS

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


def readme_table(header_start: str) -> list[list[str]]:
    """The body rows, split into cells, of the one README table whose header starts with ``header_start``."""
    lines = README.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"{len(starts)} README tables start with {header_start!r}"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def leading_number(cell: str) -> str:
    """``1,000`` of ``1,000 (a note)``; a dash for a limit the API does not have."""
    match = re.match(r"[\d,]+|–", cell)
    assert match is not None, cell
    return match.group(0)


def test_the_api_table_lists_exactly_the_registry_kinds_with_their_paths_and_limits() -> None:
    rows = readme_table("| kind | API | request |")
    assert [row[0] for row in rows] == [f"`{kind}`" for kind in API_KINDS]
    for kind, _api, request, _score, documents, per_document, per_request, _usage in rows:
        entry = API_KINDS[kind.strip("`")]
        assert request.startswith(f"`POST {PROVIDERS[entry.kind].path}`"), (kind, request)
        limits = entry.limits
        assert leading_number(documents) == f"{limits.max_documents:,}", kind
        assert leading_number(per_document) == f"{limits.max_tokens_per_document:,}", kind
        cap = limits.max_tokens_per_request
        assert leading_number(per_request) == (f"{cap:,}" if cap else "–"), kind


def test_the_key_table_lists_exactly_the_registry_kinds_with_their_variables_and_defaults() -> None:
    rows = readme_table("| kind | key | base URL (default) |")
    assert [row[0] for row in rows] == [f"`{kind}`" for kind in API_KINDS]
    for kind, key, base_url, path_variable, key_variable, key_file_variable in rows:
        entry = API_KINDS[kind.strip("`")]
        if entry.aws_signing_service is not None:
            assert key == "none: AWS SigV4", kind
        else:
            assert key == ("required" if entry.requires_key else "optional"), kind
        assert base_url.startswith(f"`{api_variable(entry.kind, 'base_url')}` (`{entry.base_url}`"), kind
        assert path_variable == f"`{api_variable(entry.kind, 'path')}`", kind
        assert key_variable.startswith(f"`{api_variable(entry.kind, 'api_key')}`"), kind
        assert key_file_variable.startswith(f"`{api_variable(entry.kind, 'api_key_file')}`"), kind


def test_the_models_table_lists_exactly_the_registry_kinds() -> None:
    rows = readme_table("| kind | backend | score |")
    *local_rows, api_row = rows
    assert [row[0] for row in local_rows] == [f"`{kind}`" for kind in LOCAL_KINDS]
    assert api_row[0] == ", ".join(f"`{kind}`" for kind in API_KINDS)


def documented_default(value: object) -> str:
    """How the settings table writes a default: ``unset``, ``false``, ``60`` for 60.0, else as is."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    rows = readme_table("| variable | default | meaning |")
    *settings_rows, api_row = rows
    per_kind = {
        api_field_name(kind, setting)
        for kind in API_KINDS
        for setting in ("base_url", "path", "api_key", "api_key_file")
    }
    expected = {
        f"`RERANK_{name.upper()}`": documented_default(field.default)
        for name, field in Settings.model_fields.items()
        if name not in per_kind
    }
    assert {row[0]: row[1].strip("`") for row in settings_rows} == expected
    assert api_row[0] == "`RERANK_<KIND>_BASE_URL`, `_PATH`, `_API_KEY`, `_API_KEY_FILE`"


@pytest.mark.parametrize("script", ["submit.py", "workers.py", "compare.py", "fuse.py"])
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
