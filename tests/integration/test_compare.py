"""scripts/compare.py on real runs: the same corpus scored by real workers in float32 and in bf16, the
figures checked against scipy on the same pairs, the guard's exit codes, the PNG, and bad input; and the
runs' per-pair provenance (tokens, truncated) against the tokenizer, with a limit many documents pass."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from testkit import corpora
from testkit.checks import reference_scores
from testkit.fleet import local_worker_env, run_script, run_scripts_at_once, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(600)
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[dict]:
    """One corpus scored twice by the same model, by a float32 worker and then by a bf16 one, with pairs
    truncated at 64 tokens (the corpus' documents run to 120 words)."""
    root = tmp_path_factory.mktemp("compare")
    model_dir = build_tiny_cross_encoder(root / "tiny-ce", seed=11)
    corpus = corpora.long_corpus(n_queries=60, docs_per_query=12, seed=12, integer_ids=False)
    corpus_path = corpora.write(corpus, root / "corpus.parquet")
    prefix = new_prefix()
    model = f"cross-encoder:{model_dir}"
    runs, submit_logs = {}, {}
    try:
        for dtype in ("float32", "bfloat16"):
            env = local_worker_env(root, redis_url, prefix, dtype=dtype, max_length=str(MAX_LENGTH))
            fleet = start_fleet(model, 1, env, redis_url, prefix, root / f"workers-{dtype}.log")
            try:
                result = run_script(
                    "submit.py", str(corpus_path), "--model", model, "--wait", "--timeout", "240", env=env
                )
            finally:
                fleet.stop()
            assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
            runs[dtype] = result.stdout.strip().splitlines()[-1]
            submit_logs[dtype] = result.stderr
        yield {
            "root": root,
            "env": env,
            "corpus": corpus,
            "runs": runs,
            "data": root / "data",
            "model_dir": model_dir,
            "submit_logs": submit_logs,
        }
    finally:
        delete_prefixed(redis_url, prefix)


def _run_scores(data: Path, run_id: str) -> pa.Table:
    return pq.read_table(data / "runs" / run_id).sort_by([("query_id", "ascending"), ("doc_id", "ascending")])


def test_figures_equal_scipy_on_the_pairs_both_runs_scored(two_runs: dict) -> None:
    fp32, bf16 = two_runs["runs"]["float32"], two_runs["runs"]["bfloat16"]
    result = run_script("compare.py", fp32, bf16, "--format", "json", env=two_runs["env"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["a"]["label"] == fp32 and report["b"]["model"].startswith("cross-encoder:")
    metrics = report["metrics"]

    a, b = _run_scores(two_runs["data"], fp32), _run_scores(two_runs["data"], bf16)
    assert a["doc_id"].equals(b["doc_id"])
    queries = a["query_id"].to_numpy(zero_copy_only=False)
    score_a, score_b = a["score"].to_numpy().astype(np.float64), b["score"].to_numpy().astype(np.float64)
    spearman, kendall, top5, top1_changed = [], [], [], []
    for query in np.unique(queries):
        mine = queries == query
        spearman.append(stats.spearmanr(score_a[mine], score_b[mine]).statistic)
        kendall.append(stats.kendalltau(score_a[mine], score_b[mine]).statistic)
        best_a = set(np.argsort(-score_a[mine], kind="stable")[:5])
        best_b = set(np.argsort(-score_b[mine], kind="stable")[:5])
        top5.append(len(best_a & best_b) / 5)
        top1_changed.append(np.argmax(score_a[mine]) != np.argmax(score_b[mine]))

    assert (metrics["pairs_common"], metrics["only_a"], metrics["only_b"], metrics["queries"]) == (
        720,
        0,
        0,
        60,
    )
    assert metrics["spearman"] == pytest.approx(np.mean(spearman), abs=1e-9)
    assert metrics["spearman_min"] == pytest.approx(np.min(spearman), abs=1e-9)
    assert metrics["kendall"] == pytest.approx(np.mean(kendall), abs=1e-9)
    assert metrics["top5"] == pytest.approx(np.mean(top5), abs=1e-9)
    assert metrics["top1_changed"] == pytest.approx(np.mean(top1_changed), abs=1e-9)
    assert metrics["ks"] == pytest.approx(stats.ks_2samp(score_a, score_b).statistic, abs=1e-9)
    assert metrics["max_abs_diff"] == pytest.approx(np.abs(score_a - score_b).max(), abs=1e-7)
    # bf16 moved the scores (so this compared two different score sets) but kept the order close.
    assert 0 < metrics["max_abs_diff"] < 0.5 and metrics["spearman"] > 0.9


def test_the_guard_passes_a_run_against_itself_and_fails_a_swapped_model(
    two_runs: dict, tmp_path: Path
) -> None:
    fp32 = two_runs["runs"]["float32"]
    guard = "spearman<0.98,top10<0.95"
    same = run_script("compare.py", fp32, fp32, "--fail-if", guard, env=two_runs["env"])
    assert same.returncode == 0, same.stderr
    assert "FAIL" not in same.stderr and "spearman" in same.stdout

    # The same pairs scored by another model (other weights), as a scores file.
    corpus = two_runs["corpus"]
    other = build_tiny_cross_encoder(tmp_path / "other-ce", seed=99)
    swapped = tmp_path / "swapped.parquet"
    pq.write_table(
        pa.table(
            {
                "query_id": corpus["query_id"],
                "doc_id": corpus["doc_id"],
                "score": reference_scores(other, corpus),
            }
        ),
        swapped,
    )
    different = run_script("compare.py", fp32, str(swapped), "--fail-if", guard, env=two_runs["env"])
    assert different.returncode == 1, different.stdout + different.stderr
    assert "FAIL: spearman = " in different.stderr and "(spearman<0.98)" in different.stderr


def test_plot_draws_both_histograms(two_runs: dict, tmp_path: Path) -> None:
    from matplotlib import image

    plot = tmp_path / "drift.png"
    runs = two_runs["runs"]
    result = run_script(
        "compare.py", runs["float32"], runs["bfloat16"], "--plot", str(plot), env=two_runs["env"]
    )
    assert result.returncode == 0, result.stderr
    pixels = (image.imread(plot)[:, :, :3] * 255).round()
    height, width, _ = pixels.shape
    assert width > 800 and height > 300

    def has_colour(rgb: tuple[float, ...]) -> bool:
        return bool((np.abs(pixels - np.array(rgb)).max(axis=2) <= 3).any())

    # A's bars in translucent blue, B's in translucent orange, over white and over each other.
    assert has_colour((131.8, 180.2, 213.8)) or has_colour((132, 180, 214)), "no bar of A"
    assert has_colour((255, 184.6, 122.5)) or has_colour((255, 185, 122)), "no bar of B"


def test_bad_input_exits_2_with_the_reason(two_runs: dict, tmp_path: Path) -> None:
    env, fp32 = two_runs["env"], two_runs["runs"]["float32"]
    no_scores = tmp_path / "no-scores.parquet"
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["d"], "value": [1.0]}), no_scores)
    cases = [
        ((fp32, "no-such-run"), "no-such-run: not a run id in the ledger"),
        ((fp32, str(tmp_path / "missing.parquet")), "missing.parquet: no such scores file"),
        ((fp32, str(no_scores)), "no column score; a scores file has query_id, doc_id and score"),
        ((fp32, fp32, "--fail-if", "spearman=1"), "write METRIC<VALUE or METRIC>VALUE"),
        ((fp32, fp32, "--fail-if", "top20<0.9"), "unknown metric 'top20'"),
    ]
    results = run_scripts_at_once([("compare.py", args, env) for args, _ in cases])
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_each_pair_records_its_tokens_and_truncation_as_the_tokenizer_says(two_runs: dict) -> None:
    from transformers import AutoTokenizer

    fp32 = two_runs["runs"]["float32"]
    scores = _run_scores(two_runs["data"], fp32)
    corpus = two_runs["corpus"].sort_by([("query_id", "ascending"), ("doc_id", "ascending")])
    tokenizer = AutoTokenizer.from_pretrained(str(two_runs["model_dir"]))
    queries, texts = corpus["query"].to_pylist(), corpus["text"].to_pylist()
    cut = tokenizer(queries, texts, truncation="longest_first", max_length=MAX_LENGTH)["input_ids"]
    whole = tokenizer(queries, texts)["input_ids"]
    truncated = [len(ids) > MAX_LENGTH for ids in whole]
    assert scores["tokens"].to_pylist() == [len(ids) for ids in cut]
    assert scores["truncated"].to_pylist() == truncated
    assert 0.1 < np.mean(truncated) < 0.9  # the check saw both kinds of pair

    # The run's rate: in the ledger (status.py), in compare.py, and sampled at submit time.
    status = run_script("status.py", fp32, env=two_runs["env"])
    expected = rf"truncated\s+{sum(truncated)} of 720 scored pairs \({np.mean(truncated):.1%}\)"
    assert re.search(expected, status.stdout), status.stdout
    report = json.loads(run_script("compare.py", fp32, fp32, "--format", "json", env=two_runs["env"]).stdout)
    assert report["metrics"]["truncated_a"] == pytest.approx(np.mean(truncated))
    submit_log = two_runs["submit_logs"]["float32"]
    warning = re.search(
        r"warning: (\d+) of (\d+) sampled pairs \(.*\) are longer than the model's limit of 64", submit_log
    )
    assert warning is not None, submit_log
    assert (int(warning[1]), int(warning[2])) == (sum(truncated), 720)  # 720 pairs < the sample's 2,000
    assert "RERANK_MAX_LENGTH" in submit_log
