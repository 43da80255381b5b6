"""scripts/cost.py answers cost-accounting questions from the ledger with the right totals."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.ledger import Ledger
from storage.ledger.schema import Run, Usage
from testkit.fleet import clean_env, run_script

NOV = datetime(2026, 11, 10, 12, tzinfo=UTC)
OCT = datetime(2026, 10, 5, 12, tzinfo=UTC)
PRICES = """
[[api]]
provider = "cohere"
model = "rerank-v3.5"
since = 2024-12-02
usd_per_search_unit = 0.002

[[gpu]]
gpu = "H100"
since = 2025-01-01
usd_per_hour = 2.5
"""


def _usage(run_id: str, when: datetime, index: int, **values: object) -> Usage:
    defaults: dict[str, object] = {
        "shard_id": 0,
        "attempt": 1,
        "worker": "w",
        "device": "cpu",
        "outcome": "ok",
        "pairs": 0,
        "tokens": 0,
        "requests": 0,
        "search_units": 0,
        "device_seconds": 0.0,
        "wall_seconds": 1.0,
    }
    return Usage(
        run_id=run_id, request_index=index, started_at=when, finished_at=when, **{**defaults, **values}
    )


def _ledger_with_known_usage(url: str) -> None:
    ledger = Ledger(url)
    ledger.create_schema()
    runs = {"api-run": "cohere:rerank-v3.5", "gpu-run": "cross-encoder:m", "old-run": "cross-encoder:m"}
    with ledger.session() as session, session.begin():
        for run_id, model in runs.items():
            session.add(
                Run(
                    run_id=run_id,
                    model=model,
                    queue="q",
                    corpus_path="/c",
                    status="completed",
                    n_shards=1,
                    n_pairs=1,
                    n_queries=1,
                    options={},
                    created_at=OCT,
                )
            )
        session.flush()
        session.add_all(
            [
                _usage("api-run", NOV, 0, model="cohere:rerank-v3.5", pairs=300),
                *(
                    _usage(
                        "api-run",
                        NOV,
                        i,
                        model="cohere:rerank-v3.5",
                        provider="cohere",
                        requests=1,
                        search_units=1,
                        tokens=0,
                        cost_usd=0.002,
                    )
                    for i in (1, 2, 3)
                ),
                _usage(
                    "api-run",
                    NOV,
                    4,
                    model="cohere:rerank-v3.5",
                    provider="cohere",
                    requests=1,
                    outcome="error",
                    cost_usd=0.0,
                ),
                # GPU hours are held time: a failed attempt's half hour, then 1.5 h of which 1.25 h busy.
                _usage(
                    "gpu-run",
                    NOV,
                    0,
                    model="cross-encoder:m",
                    device="cuda:NVIDIA H100 80GB HBM3",
                    outcome="error",
                    wall_seconds=1800.0,
                    worker="gpu0@h",
                ),
                _usage(
                    "gpu-run",
                    NOV,
                    0,
                    attempt=2,
                    model="cross-encoder:m",
                    device="cuda:NVIDIA H100 80GB HBM3",
                    pairs=1000,
                    tokens=50_000,
                    device_seconds=4500.0,
                    wall_seconds=5400.0,
                    worker="gpu0@h",
                ),
                _usage(
                    "old-run",
                    OCT,
                    0,
                    model="cross-encoder:m",
                    device="cuda:NVIDIA H100 80GB HBM3",
                    pairs=999,
                    device_seconds=3600.0,
                    wall_seconds=3600.0,
                ),
            ]
        )
    ledger.dispose()


@pytest.fixture
def env(fresh_ledger_url: str, tmp_path: Path) -> dict[str, str]:
    _ledger_with_known_usage(fresh_ledger_url)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    return clean_env(ledger_url=fresh_ledger_url, prices_path=str(prices), data_dir=str(tmp_path / "data"))


def test_cost_by_model_since_a_date(env: dict[str, str]) -> None:
    result = run_script("cost.py", "--by", "model", "--since", "2026-11-01", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {
        row["model"]: row
        for row in json.loads(result.stdout)
        if row["model"] in ("cohere:rerank-v3.5", "cross-encoder:m")
    }
    api, gpu = rows["cohere:rerank-v3.5"], rows["cross-encoder:m"]
    assert (api["requests"], api["search_units"], api["pairs"]) == (4, 3, 300)
    assert api["cost_usd"] == pytest.approx(0.006)
    assert api["cost_per_million_pairs"] == pytest.approx(20.0)
    assert (gpu["pairs"], gpu["tokens"], gpu["gpu_hours"]) == (1000, 50_000, pytest.approx(2.0))
    assert (gpu["gpu_busy_hours"], gpu["gpu_busy_share"]) == (pytest.approx(1.25), pytest.approx(0.625))
    assert gpu["cost_usd"] == pytest.approx(5.0)  # the October run is outside the range
    assert gpu["cost_per_million_pairs"] == pytest.approx(5000.0)


def test_cost_by_day_and_provider_as_csv_and_table(env: dict[str, str]) -> None:
    result = run_script(
        "cost.py", "--by", "day", "--by", "provider", "--run", "gpu-run", "--format", "csv", env=env
    )
    assert result.returncode == 0, result.stderr
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert (row["day"], row["provider"], float(row["gpu_hours"])) == ("2026-11-10", "local", 2.0)
    table = run_script("cost.py", "--by", "run", "--until", "2026-10-31", env=env)
    assert table.returncode == 0
    assert "old-run" in table.stdout and "gpu-run" not in table.stdout and "total" in table.stdout


def test_bad_flags_exit_2(env: dict[str, str]) -> None:
    assert run_script("cost.py", "--by", "colour", env=env).returncode == 2
    assert run_script("cost.py", "--since", "yesterday", env=env).returncode == 2
