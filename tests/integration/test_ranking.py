"""Ranking recipes end to end: a corpus with first-stage columns scored by real workers, its --out file
normalized and fused as the recipe says (checked against a per-query computation in plain Python), the
recipe in the file's metadata and the ledger; bad recipes exit 2 before anything is written or enqueued."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.broker.url import connect
from storage.ledger import Ledger
from storage.shards.scores import METADATA_KEY
from testkit import corpora
from testkit.fleet import clean_env, local_worker_env, run_script, run_scripts_at_once, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(600)


def corpus_with_first_stage(seed: int) -> pa.Table:
    corpus = corpora.long_corpus(n_queries=30, docs_per_query=8, seed=seed)
    rng = random.Random(seed)
    n = corpus.num_rows
    bm25 = [round(rng.uniform(0, 30), 3) for _ in range(n)]
    distance = [None if rng.random() < 0.1 else round(rng.uniform(0, 1.5), 4) for _ in range(n)]
    return corpus.append_column("bm25_score", pa.array(bm25)).append_column(
        "dense_distance", pa.array(distance, pa.float32())
    )


def by_query(rows: list[dict]) -> dict[object, list[dict]]:
    groups: dict[object, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["query_id"]].append(row)
    return groups


def best_first(values: list[float | None]) -> list[int | None]:
    """1-based ranks, highest first, ties in order; None for no value."""
    present = sorted((i for i, v in enumerate(values) if v is not None), key=lambda i: -values[i])
    ranks: list[int | None] = [None] * len(values)
    for rank, i in enumerate(present, start=1):
        ranks[i] = rank
    return ranks


def minmax(values: list[float | None]) -> list[float | None]:
    present = [v for v in values if v is not None]
    low, high = min(present), max(present)
    return [None if v is None else (1.0 if high == low else (v - low) / (high - low)) for v in values]


def test_normalize_and_fuse_first_stage_scores_through_real_workers(redis_url: str, tmp_path: Path) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "model", seed=4)
    model = f"cross-encoder:{model_dir}"
    corpus = corpus_with_first_stage(seed=5)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet", row_group_size=64)
    first_stage = {
        (row["query_id"], row["doc_id"]): (row["bm25_score"], row["dense_distance"])
        for row in corpus.to_pylist()
    }
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix)
    fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        rrf_out, weighted_out = tmp_path / "rrf.parquet", tmp_path / "weighted.parquet"
        common = [str(corpus_path), "--model", model, "--wait", "--shard-pairs", "50", "--timeout", "240"]
        rrf = run_script(
            "submit.py",
            *common,
            "--out",
            str(rrf_out),
            "--normalize",
            "sigmoid",
            "--source",
            "bm25=bm25_score",
            "--source",
            "dense=dense_distance:cosine",
            "--fuse",
            "rrf",
            "--fusion-weights",
            "bm25=1,dense=2",
            env=env,
        )
        assert rrf.returncode == 0, rrf.stderr + fleet.log()[-3000:]
        weighted = run_script(
            "submit.py",
            *common,
            "--out",
            str(weighted_out),
            "--normalize",
            "percentile",
            "--normalize-over",
            "run",
            "--source",
            "bm25=bm25_score",
            "--source",
            "l2=dense_distance:l2",
            "--fuse",
            "weighted",
            "--rerank-weight",
            "0.7",
            env=env,
        )
        assert weighted.returncode == 0, weighted.stderr + fleet.log()[-3000:]

        # RRF, k = 60: the tiny cross-encoder's activation is a sigmoid, so its scores are probabilities
        # and normalized_score keeps them as they are.
        table = pq.read_table(rrf_out)
        metadata = json.loads(table.schema.metadata[METADATA_KEY])
        assert metadata["score_scale"] == "probability"
        assert "no sigmoid is applied" in metadata["columns"]["normalized_score"]
        assert metadata["ranking"]["fuse"] == "rrf" and metadata["ranking"]["weights"] == {
            "bm25": 1.0,
            "dense": 2.0,
        }
        rows = table.to_pylist()
        assert len(rows) == corpus.num_rows
        for row in rows:
            assert row["normalized_score"] == pytest.approx(row["score"])
            bm25, distance = first_stage[(row["query_id"], row["doc_id"])]
            assert (row["source_bm25"], row["source_dense"]) == (
                bm25,
                pytest.approx(distance) if distance else None,
            )
        for group in by_query(rows).values():
            rerank = best_first([r["score"] for r in group])
            bm25 = best_first([r["source_bm25"] for r in group])
            dense = best_first(
                [None if r["source_dense"] is None else (2 - r["source_dense"]) / 2 for r in group]
            )
            for i, row in enumerate(group):
                fused = (1 / (60 + bm25[i]) + (2 / (60 + dense[i]) if dense[i] else 0.0)) / 3
                assert row["final_score"] == pytest.approx(0.5 / (60 + rerank[i]) + 0.5 * fused)
            assert [r["final_rank"] for r in group] == best_first([r["final_score"] for r in group])

        # Weighted: the reranker's run-wide percentile, the sources' per-query minmax of -l2 and bm25.
        rows = pq.read_table(weighted_out).to_pylist()
        run_scores = sorted(r["score"] for r in rows)
        for row in rows:
            below = sum(s < row["score"] for s in run_scores)
            tied = sum(s == row["score"] for s in run_scores)
            assert row["normalized_score"] == pytest.approx((below + (tied - 1) / 2) / (len(run_scores) - 1))
        for group in by_query(rows).values():
            bm25 = minmax([r["source_bm25"] for r in group])
            l2 = minmax([None if r["source_l2"] is None else -r["source_l2"] for r in group])
            for i, row in enumerate(group):
                fused = (bm25[i] + (l2[i] or 0.0)) / 2
                assert row["final_score"] == pytest.approx(0.7 * row["normalized_score"] + 0.3 * fused)
            assert [r["final_rank"] for r in group] == best_first([r["final_score"] for r in group])

        # fuse.py: the two runs' outputs, by their run ids, fused by reciprocal rank.
        rrf_run, run_id = (result.stdout.strip().splitlines()[-1] for result in (rrf, weighted))
        fused_out = tmp_path / "fused.parquet"
        fuse = run_script(
            "fuse.py", f"a={rrf_run}", f"b={run_id}", "--fuse", "rrf", "--out", str(fused_out), env=env
        )
        assert fuse.returncode == 0, fuse.stderr
        assert f"wrote {corpus.num_rows} fused pairs of 30 queries" in fuse.stderr
        fused = pq.read_table(fused_out).to_pylist()
        for group in by_query(fused).values():
            ranks = best_first([r["score_a"] for r in group])
            assert [r["final_score"] for r in group] == pytest.approx([1 / (60 + rank) for rank in ranks])
        run = ledger.get_run(run_id)
        assert run is not None and run.options["ranking"]["normalize_over"] == "run"
        # The run's own shard files keep the model's scores alone.
        shard_files = pq.read_table(tmp_path / "data" / "runs" / run_id)
        assert "final_score" not in shard_files.column_names
        assert not math.isnan(sum(r["final_score"] for r in rows))
    finally:
        fleet.stop()
        ledger.dispose()
        delete_prefixed(redis_url, prefix)


def test_fuse_script_by_hand(tmp_path: Path) -> None:
    """Two scores files, one without a pair the other has: RRF with weights and weighted minmax fusion."""
    a = pa.table({"query_id": [1, 1, 1, 2], "doc_id": ["x", "y", "z", "w"], "score": [3.0, 1.0, 2.0, 0.5]})
    b = pa.table({"query_id": [1, 1, 2], "doc_id": ["y", "x", "w"], "score": [0.9, 0.1, 0.4]})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    env = clean_env(data_dir=str(tmp_path / "data"))
    files = [f"first={tmp_path / 'a.parquet'}", f"second={tmp_path / 'b.parquet'}"]
    rrf, weighted, bad_weight, one_input = run_scripts_at_once(
        [
            (
                "fuse.py",
                [
                    *files,
                    "--fuse",
                    "rrf",
                    "--rrf-k",
                    "10",
                    "--weights",
                    "second=3",
                    "--out",
                    str(tmp_path / "rrf.parquet"),
                ],
                env,
            ),
            ("fuse.py", [*files, "--fuse", "weighted", "--out", str(tmp_path / "weighted.parquet")], env),
            (
                "fuse.py",
                [*files, "--fuse", "rrf", "--weights", "second=lots", "--out", str(tmp_path / "x.parquet")],
                env,
            ),
            ("fuse.py", [files[0], "--fuse", "rrf", "--out", str(tmp_path / "x.parquet")], env),
        ]
    )
    assert rrf.returncode == 0 and weighted.returncode == 0, rrf.stderr + weighted.stderr
    rows = {(r["query_id"], r["doc_id"]): r for r in pq.read_table(tmp_path / "rrf.parquet").to_pylist()}
    # Query 1: a ranks x 1, z 2, y 3; b ranks y 1, x 2 and not z. Weights 1 and 3, k = 10.
    assert rows[(1, "x")]["final_score"] == pytest.approx((1 / 11 + 3 / 12) / 4)
    assert rows[(1, "y")]["final_score"] == pytest.approx((1 / 13 + 3 / 11) / 4)
    assert rows[(1, "z")]["final_score"] == pytest.approx((1 / 12) / 4)
    assert rows[(1, "z")]["score_second"] is None
    assert [rows[(1, d)]["final_rank"] for d in "xyz"] == [2, 1, 3]
    assert rows[(2, "w")]["final_rank"] == 1
    rows = {(r["query_id"], r["doc_id"]): r for r in pq.read_table(tmp_path / "weighted.parquet").to_pylist()}
    # minmax per query: a gives x 1, y 0, z .5; b gives y 1, x 0 (z none: 0).
    assert [rows[(1, d)]["final_score"] for d in "xyz"] == pytest.approx([0.5, 0.5, 0.25])
    metadata = json.loads(pq.read_schema(tmp_path / "weighted.parquet").metadata[METADATA_KEY])
    assert "minmax" in metadata["columns"]["final_score"] and metadata["fused"][0]["name"] == "first"
    assert bad_weight.returncode == 2 and "the weight 'lots' of second is not a number" in bad_weight.stderr
    assert one_input.returncode == 2 and "at least two" in one_input.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_bad_recipes_and_cascades_exit_2_before_anything_is_written(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    corpus = str(corpora.write(corpus_with_first_stage(seed=1), tmp_path / "corpus.parquet"))
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url=redis_url, redis_key_prefix=redis_prefix)
    base = [corpus, "--model", "cross-encoder:m"]
    cases = {
        "unknown column": (["--source", "bm25=bm_25", "--fuse", "rrf"], "no column 'bm_25'"),
        "weight not a number": (
            ["--source", "bm25=bm25_score", "--fuse", "rrf", "--fusion-weights", "bm25=high"],
            "the weight 'high' of bm25 is not a number",
        ),
        "rank fused by weight": (
            ["--source", "r=bm25_score:rank", "--fuse", "weighted"],
            "--fuse weighted cannot use the rank source r",
        ),
        "unknown metric": (["--source", "d=dense_distance:hamming"], "'hamming' is no metric"),
        "fuse without sources": (["--fuse", "rrf"], "--fuse rrf needs at least one --source"),
        "unknown normalization": (["--normalize", "softmax"], "invalid choice: 'softmax'"),
        "ranking on resume": (["--normalize", "minmax"], "take no ranking flags"),
        "cascade keeping nothing": (
            ["--then", "cross-encoder:other", "--top-k", "0"],
            "--top-k 0: a stage must keep at least 1 pair per query",
        ),
        "cascade without top-k": (["--then", "cross-encoder:other"], "each --then MODEL needs its --top-k K"),
        "cascade of one model": (
            ["--then", "cross-encoder:m", "--top-k", "3"],
            "follows a stage of the same model",
        ),
    }
    calls = [
        ("submit.py", (["--resume", "r1"] if name == "ranking on resume" else base) + flags, env)
        for name, (flags, _) in cases.items()
    ]
    for (name, (_, message)), result in zip(cases.items(), run_scripts_at_once(calls), strict=True):
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    assert not (tmp_path / "data").exists()
    assert list(connect(redis_url).scan_iter(match=f"{redis_prefix}*")) == []
