from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.services import delete_prefixed, new_prefix, postgres_schema, redis_for_tests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Compiling costs ~10-30 s per model load; tests/integration/test_compiled.py covers the compiled path.
os.environ.setdefault("RERANK_COMPILE", "off")
# Calibrating costs a few seconds per model load; tests/unit/test_calibration.py covers it.
os.environ.setdefault("RERANK_CALIBRATE", "false")


TIERS = ("unit", "integration", "acceptance")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its tier, the folder it lives in (``-m unit`` and so on), and the
    tiers run fastest first, so that a whole run reports a broken unit long before the slow tiers end."""
    tests_dir = Path(__file__).parent
    tiers = {}
    for item in items:
        tier = item.path.relative_to(tests_dir).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one of tests/{{{','.join(TIERS)}}}")
        item.add_marker(tier)
        tiers[item.nodeid] = TIERS.index(tier)
    items.sort(key=lambda item: tiers[item.nodeid])  # stable: each tier keeps its own order


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_for_tests(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = new_prefix()
    yield prefix
    delete_prefixed(redis_url, prefix)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger database: a SQLite file, or a PostgreSQL schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    with postgres_schema() as url:
        yield url
