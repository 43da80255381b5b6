"""A new API provider is one module plus one entry in ``core/kinds.py``, and nothing else.

The test writes a tiny provider module into a temporary directory and runs a fresh interpreter in which
``core.kinds`` is the project's own source with that one entry added (the file itself is not edited).
There the project must give the new kind, with no other change: its ``RERANK_ACME_*`` settings read from
the environment, its line in ``workers.py --help``, a parseable ``--model acme:NAME``, the key check, and
a reranker that scores real pairs over HTTP against a real server under the fleet's Redis rate limiter.
(The README's tables must then list it too: tests/acceptance/test_docs.py holds them to the registry.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from testkit.api_dialects import expected_score
from testkit.api_servers import FakeRerankServer, running
from testkit.fleet import REPO, clean_env
from tests.api_fixtures import API_KEY, pairs

PROVIDER_MODULE = '''"""Acme rerank: TEI's /rerank request and answer shapes."""

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, scores_by_index


class AcmeProvider(Provider):
    path = "/rerank"
    score_meaning = "score per text (Acme /rerank)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {"query": query, "texts": list(texts), "raw_scores": False}

    def parse(self, payload: Any, n_texts: int) -> Answer:
        return Answer(scores=scores_by_index(payload, n_texts, "score"))
'''

REGISTRY_LINE = (
    '    ApiKind("acme", "acme_rerank:AcmeProvider", "Acme rerank", "http://127.0.0.1:9", '
    'ProviderLimits(4, 256), "probability", requires_key=True),\n'
)
TABLE_START = "API_KINDS_TABLE: tuple[ApiKind, ...] = (\n"

DRIVER = '''"""Load core.kinds from the patched copy; report what the project derives for the kind "acme"."""

import importlib.util
import json
import sys
from pathlib import Path

repo, patched_kinds = Path(sys.argv[1]), Path(sys.argv[2])
import core

spec = importlib.util.spec_from_file_location("core.kinds", patched_kinds)
kinds = importlib.util.module_from_spec(spec)
sys.modules["core.kinds"] = kinds
spec.loader.exec_module(kinds)
core.kinds = kinds

from core.errors import ConfigError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends import load_reranker
from worker.backends.api import check_api_config

script = importlib.util.spec_from_file_location("workers_script", repo / "scripts" / "workers.py")
workers = importlib.util.module_from_spec(script)
script.loader.exec_module(workers)

settings = Settings()
endpoint = settings.api("acme")
model = ModelSpec.parse("acme:m1")
try:
    check_api_config(model, Settings(acme_api_key_file=None))
    missing_key = None
except ConfigError as exc:
    missing_key = str(exc)
queries, texts = json.loads(sys.argv[3])
reranker = load_reranker(model, settings)
try:
    result = reranker.score(queries, texts)
finally:
    reranker.close()
print(json.dumps({
    "fields": [name for name in Settings.model_fields if name.startswith("acme_")],
    "base_url": endpoint.base_url,
    "requires_key": endpoint.requires_key,
    "key_from_file": endpoint.api_key is None and endpoint.api_key_file is not None,
    "help": workers.build_parser().format_help(),
    "spec": [model.kind, model.is_api],
    "missing_key": missing_key,
    "scores": [float(score) for score in result.scores],
    "providers": sorted({record.provider for record in result.requests}),
    "describe": reranker.describe(),
}))
'''


def patched_kinds_source() -> str:
    """``core/kinds.py`` as it is, plus the one registry line of the new provider."""
    source = (REPO / "core" / "kinds.py").read_text()
    assert source.count(TABLE_START) == 1, "core/kinds.py no longer opens API_KINDS_TABLE as expected"
    return source.replace(TABLE_START, TABLE_START + REGISTRY_LINE)


def test_a_new_provider_is_one_module_and_one_registry_line(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    (tmp_path / "acme_rerank.py").write_text(PROVIDER_MODULE)
    (tmp_path / "kinds.py").write_text(patched_kinds_source())
    (tmp_path / "driver.py").write_text(DRIVER)
    key_file = tmp_path / "acme-key"
    key_file.write_text(API_KEY + "\n")
    queries, texts = pairs(n_queries=3, docs_per_query=5, seed=4)

    with running(FakeRerankServer("tei", api_key=API_KEY)) as server:
        env = clean_env(
            data_dir=str(tmp_path / "data"),
            broker_url=redis_url,
            redis_key_prefix=redis_prefix,
            acme_base_url=server.url,
            acme_api_key_file=str(key_file),
        )
        env["PYTHONPATH"] = f"{REPO}:{tmp_path}"
        argv = [str(REPO), str(tmp_path / "kinds.py"), json.dumps([queries, texts])]
        done = subprocess.run(
            [sys.executable, str(tmp_path / "driver.py"), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        statuses = server.statuses()

    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Settings: RERANK_ACME_BASE_URL, _PATH, _API_KEY, _API_KEY_FILE, read from the environment.
    assert report["fields"] == ["acme_base_url", "acme_path", "acme_api_key", "acme_api_key_file"]
    assert report["base_url"] == server.url and report["requires_key"] and report["key_from_file"]
    # Help: the kind, its key requirement, request size and variables with the registry's default URL.
    assert "  acme           Acme rerank; key required; 4 documents a request" in report["help"]
    assert "RERANK_ACME_BASE_URL (default http://127.0.0.1:9)" in report["help"]
    assert "RERANK_ACME_API_KEY or RERANK_ACME_API_KEY_FILE" in report["help"]
    # The model spec and the key check.
    assert report["spec"] == ["acme", True]
    assert (
        report["missing_key"]
        == "the acme API needs a key: set RERANK_ACME_API_KEY or RERANK_ACME_API_KEY_FILE"
    )
    # The loader: every pair scored over HTTP, 5 documents a query in requests of at most 4.
    assert report["scores"] == pytest.approx(
        [expected_score(query, text) for query, text in zip(queries, texts, strict=True)], abs=1e-6
    )
    assert statuses == Counter({200: 3 * 2}) and report["providers"] == ["acme"]
    assert report["describe"]["max_documents"] == "4"
    assert API_KEY not in done.stdout + done.stderr
