"""Shadow scoring through real workers: the corpus scored by the production model and, on its own queue,
by a second model; the production output is the first's alone, the shadow's lives under the run, its usage
counts as the shadow's, and --wait ends with the comparison of the two."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage.ledger import Ledger
from testkit import corpora
from testkit.checks import assert_output_matches, reference_scores
from testkit.fleet import local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(600)


def test_a_shadow_model_scores_the_same_shards_beside_production(redis_url: str, tmp_path: Path) -> None:
    production_dir = build_tiny_cross_encoder(tmp_path / "production", seed=1)
    shadow_dir = build_tiny_cross_encoder(tmp_path / "shadow", seed=2)
    production, shadow = f"cross-encoder:{production_dir}", f"cross-encoder:{shadow_dir}"
    corpus = corpora.long_corpus(n_queries=40, docs_per_query=10, seed=9, integer_ids=False)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix)
    fleets = [
        start_fleet(model, 1, env, redis_url, prefix, tmp_path / f"workers-{name}.log")
        for name, model in (("production", production), ("shadow", shadow))
    ]
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        out = tmp_path / "scores.parquet"
        args = [str(corpus_path), "--model", production, "--shadow", shadow, "--wait", "--out", str(out)]
        result = run_script("submit.py", *args, "--shard-pairs", "100", "--timeout", "240", env=env)
        assert result.returncode == 0, result.stderr + "".join(fleet.log()[-2000:] for fleet in fleets)
        run_id = result.stdout.strip().splitlines()[-1]

        # Production: the first model's scores alone.
        assert_output_matches(corpus, pq.read_table(out), reference_scores(production_dir, corpus))
        assert pq.read_table(tmp_path / "data" / "runs" / run_id).num_rows == 400
        [shadow_run] = ledger.shadow_runs(run_id)
        assert (shadow_run.model, shadow_run.shadow_of, shadow_run.status) == (shadow, run_id, "completed")
        shadow_dir_scores = tmp_path / "data" / "runs" / run_id / "_shadow" / shadow_run.run_id
        assert_output_matches(corpus, pq.read_table(shadow_dir_scores), reference_scores(shadow_dir, corpus))
        assert f"shadow: run {shadow_run.run_id} scores the same 400 pairs with {shadow}" in result.stderr
        assert f"production {run_id} (A) against its shadow {shadow_run.run_id} (B):" in result.stderr
        assert "pairs_common" in result.stderr and "spearman" in result.stderr

        # Each pair scored once per model; the shadow's usage is reported as the shadow's.
        assert ledger.usage_totals(run_id).pairs == ledger.usage_totals(shadow_run.run_id).pairs == 400
        cost = run_script("cost.py", "--by", "role", "--by", "model", "--format", "csv", env=env)
        rows = {
            (row["role"], row["model"]): int(row["pairs"]) for row in csv.DictReader(io.StringIO(cost.stdout))
        }
        assert rows == {("production", production): 400, ("shadow", shadow): 400}
        status = run_script("status.py", run_id, env=env)
        assert f"run {shadow_run.run_id}: {shadow}, completed" in status.stdout
        scores = pq.read_table(out)
        assert not np.isnan(scores["score"].to_numpy()).any()
    finally:
        for fleet in fleets:
            fleet.stop()
        ledger.dispose()
        delete_prefixed(redis_url, prefix)
