"""The pieces of scripts/bench.py on tiny shapes: agreement metrics, FLOP counts, the synthetic corpus,
model building with a fitted head, a contender run in its own process, the out-of-memory demo's loop
and the report. Timings are not tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from benchmarks.agreement import agreement
from benchmarks.contender import Contender, failure_line
from benchmarks.corpus import BenchCorpus, synthetic_corpus, whole_words
from benchmarks.flops import forward_flops
from benchmarks.gpu_busy import GpuBusySampler, parse_samples
from benchmarks.models import HEAD_LOGIT_STD, HEAD_SEED, TINY, ModelShape, build_model
from benchmarks.oom_demo import OomDemo, adapt_under_pressure
from benchmarks.peak import affordable_sizes
from benchmarks.report import ContenderRow, contender_table, oom_lines
from benchmarks.suite import (
    PLANS,
    parse_cpus,
    pipeline_size,
    print_targets,
    ready_or_left_out,
    utilization_line,
)
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.model_factory import bert_tokenizer, build_tiny_cross_encoder
from worker.backends import load_reranker
from worker.backends.local.batching import TokenBudgetBatcher


@pytest.fixture(scope="module")
def words() -> list[str]:
    return whole_words(bert_tokenizer())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("bench") / "tiny")


def test_spearman_of_single_queries() -> None:
    def rho(reference: list[float], scores: list[float]) -> float:
        return agreement(np.array(reference), np.array(scores), [slice(0, len(reference))]).spearman_mean

    assert rho([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert rho([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # Ranks (1, 2, 3, 4) against (1, 3, 2, 4): 1 - 6 * 2 / (4 * 15) = 0.8
    assert rho([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert rho([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 1.0
    assert rho([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0


def test_agreement_per_query() -> None:
    reference = np.arange(24, dtype=np.float64)
    scores = reference.copy()
    scores[[10, 11]] = scores[[11, 10]] + 0.5  # a swap inside the first query's top ten
    scores[12:24] = scores[12:24] * 2  # the second query keeps its order exactly
    queries = [slice(0, 12), slice(12, 24)]

    found = agreement(reference, scores, queries, top_k=10)

    assert found.spearman_min < 1.0 and found.spearman_mean < 1.0
    assert found.top_k_same == 1.0  # the swap does not change which ten are on top
    assert found.max_abs_diff == pytest.approx(23.0)
    assert agreement(reference, scores, queries, top_k=1).top_k_same == 0.5
    with pytest.raises(ValueError, match="scores for"):
        agreement(reference, scores[:5], queries)


def test_forward_flops_counts_projections_feed_forward_attention_and_head() -> None:
    shape = ModelShape("s", "s", "bert", layers=2, hidden=4, heads=1, intermediate=8, vocab=10, positions=8)

    flops = forward_flops(shape, np.array([3, 5]))

    per_layer = sum(8 * n * 16 + 4 * n * 4 * 8 + 4 * n * n * 4 for n in (3, 5))
    assert flops == 2 * per_layer + 2 * (2 * 16 + 2 * 4)


def test_synthetic_corpus_is_deterministic_and_shaped_like_reranking(
    words: list[str], tmp_path: Path
) -> None:
    corpus = synthetic_corpus(words, n_queries=40, docs_per_query=25, seed=3)

    assert corpus.texts == synthetic_corpus(words, n_queries=40, docs_per_query=25, seed=3).texts
    assert len(corpus) == 1000 and len(corpus.query_slices()) == 40
    query_words = [len(query.split()) for query in corpus.queries]
    assert min(query_words) >= 2 and max(query_words) <= 8
    doc_words = np.array([len(text.split()) for text in corpus.texts])
    assert 50 <= np.median(doc_words) <= 100 and doc_words.max() > 300
    assert set(np.round(corpus.relevance, 6)) > {0.0, 1.0}
    for query, text, relevance in zip(corpus.queries, corpus.texts, corpus.relevance, strict=True):
        if relevance == 1.0:
            assert set(query.split()) <= set(text.split())
    table = pq.read_table(corpus.write_parquet(tmp_path / "corpus.parquet"))
    assert table.column_names == ["query_id", "query", "doc_id", "text"]
    assert table.num_rows == 1000
    assert len(corpus.head(3)) == 75


def test_built_models_have_a_fitted_spread_head_and_are_cached(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    messages: list[str] = []
    built = build_model(TINY, tmp_path, head_pairs=64, log=messages.append)
    again = build_model(TINY, tmp_path, head_pairs=64, log=messages.append)

    assert again.path == built.path and len(messages) == 1
    assert "random weights" in built.description and "BERT WordPiece" in built.tokenizer_note
    head_corpus = synthetic_corpus(whole_words(bert_tokenizer()), 4, 16, seed=HEAD_SEED)
    model = CrossEncoder(str(built.path), device="cpu", activation_fn=torch.nn.Identity())
    logits = model.predict(head_corpus.pairs, show_progress_bar=False)
    assert float(np.std(logits)) == pytest.approx(HEAD_LOGIT_STD, rel=0.02)


# A contender runs one thread, this process two: float32 sums split differently between threads move a
# score by up to a few 1e-6 (1.01e-6 seen on an AMX Xeon, 1.43e-6 through the flag backend on a Zen 4; the
# bench measures 2.9e-6 across batch compositions in float32 on the Xeon).
THREADS_DRIFT = 5e-6


def test_a_contender_runs_in_its_own_process(tiny_dir: Path, words: list[str], tmp_path: Path) -> None:
    corpus = synthetic_corpus(words, n_queries=2, docs_per_query=10, seed=4)
    corpus_file = corpus.write_parquet(tmp_path / "corpus.parquet")

    # Uncompiled, like every test but tests/integration/test_compiled.py (compiling costs 10-30 s).
    contender = Contender("ours", tiny_dir, corpus_file, tmp_path, "cpu", "float32", [0], 300, "off")
    with contender:
        contender.score_once()
        contender.score_once(record=False, pairs=10)  # the pipeline's in-process side, on a head
        contender.score_once()
        run, scores = contender.finish()

    assert (run.kind, run.dtype, run.output, run.pairs, run.threads) == ("ours", "float32", "sigmoid", 20, 1)
    assert len(run.round_seconds) == 2 and run.seconds > 0 and len(scores) == 20
    assert run.peak_rss_bytes >= run.baseline_rss_bytes > 0
    assert run.gpu_peak_bytes is None
    assert run.padded_ratio is not None and run.padded_ratio >= 1.0
    in_process = load_reranker(
        ModelSpec.parse(f"cross-encoder:{tiny_dir}"), Settings(device="cpu", dtype="float32")
    ).score(corpus.queries, corpus.texts)
    np.testing.assert_allclose(scores, in_process.scores, atol=THREADS_DRIFT, rtol=0)


def test_ours_through_the_flag_backend_is_a_contender_of_its_own(
    tiny_dir: Path, words: list[str], tmp_path: Path
) -> None:
    corpus = synthetic_corpus(words, n_queries=1, docs_per_query=12, seed=5)
    corpus_file = corpus.write_parquet(tmp_path / "corpus.parquet")
    with Contender("ours-flag", tiny_dir, corpus_file, tmp_path, "cpu", "float32", [0], 300, "off") as flag:
        flag.score_once()
        run, scores = flag.finish()

    assert (run.kind, run.dtype, run.output) == ("ours-flag", "float32", "logit")
    in_process = load_reranker(
        ModelSpec.parse(f"flag:{tiny_dir}"), Settings(device="cpu", dtype="float32")
    ).score(corpus.queries, corpus.texts)
    np.testing.assert_allclose(scores, in_process.scores, atol=THREADS_DRIFT, rtol=0)


def test_gpu_busy_samples_are_averaged_and_unreadable_lines_skipped() -> None:
    busy = parse_samples("0, 500\n100, 1500\n[N/A], [N/A]\n50, 1200\n7")
    assert (busy.samples, busy.mean_utilization, busy.peak_memory_mib) == (3, 0.5, 1500.0)
    assert parse_samples("").samples == 0
    sampler = GpuBusySampler()
    sampler.command = None  # as on a machine without nvidia-smi: nothing sampled, no figure
    with sampler:
        pass
    assert sampler.result is None


def test_a_peer_that_fails_to_load_is_left_out_with_its_reason(tmp_path: Path) -> None:
    # An interpreter that exits at once stands in for a peer whose export fails: what is tested is the
    # bench's handling of a contender that stops before it is ready.
    corpus_file = tmp_path / "corpus.parquet"
    failing = Path("/bin/false")
    peer = Contender("st-onnx", tmp_path, corpus_file, tmp_path, "cpu", "auto", [0], 60, python=failing)
    contenders = {"peer": peer}
    left_out: dict[str, str] = {}

    ready_or_left_out(contenders, "peer", left_out)

    assert contenders == {}
    assert "stopped before 'ready'" in left_out["peer"]


def test_a_failure_is_named_by_its_exception_line_from_its_start() -> None:
    listing = ", ".join(f"model{index}" for index in range(200))
    log = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        f"ValueError: Unrecognized model in /tmp/m. Should have a `model_type` key: {listing}\n"
        "Exception ignored in atexit callback\n"
    )

    line = failure_line(log)

    assert line.startswith("ValueError: Unrecognized model in /tmp/m.")
    assert len(line) == 300 and line.endswith("...")
    assert failure_line("warming up\nstopped\n\n") == "stopped"
    assert failure_line("") == "no output"


def contender_figures(
    kind: str, dtype: str, pairs_per_s: float, spearman: float, top: float
) -> dict[str, Any]:
    agreement = {"spearman_mean": spearman, "top_k_same": top}
    return {"kind": kind, "dtype": dtype, "pairs_per_s": pairs_per_s, "agreement": agreement}


def test_the_fastest_contender_is_also_judged_among_those_that_keep_the_ranking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        contender_figures("ours", "float32", 54.0, 1.0, 1.0),
        {**contender_figures("sentence-transformers", "float32", 43.0, 1.0, 1.0), "agreement": None},
        contender_figures("flagembedding", "float32", 18.0, 1.0, 1.0),
        contender_figures("st-onnx-int8", "int8", 56.0, 0.93, 0.15),
        contender_figures("st-openvino", "float32", 51.0, 1.0, 1.0),
    ]
    for row in rows:
        row["ours_speedup"] = 54.0 / row["pairs_per_s"]
    model = {"contenders": rows, "mfu": {"float32": 0.89, "bfloat16": 100.0}}

    print_targets({"minilm-l6": model, "device": "cpu", "mode": "full"}, "minilm-l6", with_pipeline=False)

    lines = capsys.readouterr().out.splitlines()
    fastest = next(line for line in lines if "ours the fastest contender" in line)
    assert "(next: ONNX int8)" in fastest and fastest.endswith("MISSED")
    among = next(line for line in lines if "fastest of those meeting agreement" in line)
    assert "(next: OpenVINO)" in among and "1.06x" in among and among.endswith("met")
    assert ">= 1.5x the fastest ONNX/OpenVINO peer (ONNX int8)" in "\n".join(lines)


def test_ours_failing_to_load_stops_the_run(tmp_path: Path) -> None:
    corpus_file = tmp_path / "corpus.parquet"
    ours = Contender(
        "ours", tmp_path, corpus_file, tmp_path, "cpu", "float32", [0], 60, python=Path("/bin/false")
    )
    with ours, pytest.raises(RuntimeError, match="stopped before 'ready'"):
        ready_or_left_out({"ours": ours}, "ours", {})


def test_budget_shrinks_on_out_of_memory_and_grows_back(
    tiny_dir: Path, words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker: Any = load_reranker(
        ModelSpec.parse(f"cross-encoder:{tiny_dir}"), Settings(device="cpu", dtype="float32")
    )
    reranker.batcher = TokenBudgetBatcher(1 << 16, grow_after=2)
    model = reranker.path.model
    forward = model.forward

    def squeezed(**features: Any) -> Any:
        if features["input_ids"].numel() > 3000:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return forward(**features)

    monkeypatch.setattr(model, "forward", squeezed)
    corpus = synthetic_corpus(words, n_queries=8, docs_per_query=30, seed=6)

    pairs, seconds, history = adapt_under_pressure(
        reranker, corpus.queries, corpus.texts, shard_pairs=80, seconds=60
    )

    assert pairs == len(corpus) and seconds > 0
    reasons = [point.reason for point in history]
    assert reasons[0] == "start" and "oom" in reasons and "grow" in reasons
    assert history[0].seconds == 0 and [p.seconds for p in history] == sorted(p.seconds for p in history)
    assert min(point.budget for point in history) < history[0].budget
    text = "\n".join(oom_lines(OomDemo(None, 1 << 30, pairs, seconds, reranker.batcher.oom_count, history)))
    assert "1024 MiB" in text and " oom" in text and " grow" in text


def test_report_lines() -> None:
    from benchmarks.agreement import Agreement
    from benchmarks.contender import ContenderRun

    run = ContenderRun("ours", "float32", "sigmoid", 100, (2.5, 2.0, 3.0), 0.5, 2, 500 << 20, 900 << 20, None)
    rows = [
        ContenderRow("ours", run, tokens=10_000, agreement=Agreement(0.9995, 0.998, 1.0, 1e-6)),
        ContenderRow("reference", run, tokens=10_000, agreement=None),
    ]

    table = contender_table(rows, ours_pairs_per_s=50.0)

    assert "50.0" in table and "5000" in table and "1.00x" in table and "500 / 900" in table
    assert "0.99950/0.9980" in table and "100.0%" in table and "(float32 reference)" in table
    assert oom_lines(OomDemo(skipped="no CUDA device")) == [
        "out-of-memory adaptation: skipped: no CUDA device"
    ]
    assert parse_cpus("0-2,5") == [0, 1, 2, 5]
    reference = ContenderRun(
        "sentence-transformers", "float32", "sigmoid", 100, (5.0,), 0.5, 2, 500 << 20, 900 << 20, None
    )
    rows.append(ContenderRow("sentence-transformers CrossEncoder.predict", reference, 10_000, None))
    # 100 GFLOP in 2 s and in 5 s against a 100 GFLOP/s peak: 50% and 20%, so 5x at best.
    line = utilization_line(rows[::2], 100e9, {"float32": 100.0}, "float32")
    assert "ours float32 50%" in line and "CrossEncoder.predict float32 20%" in line and "5.0x" in line


def test_pipeline_corpus_is_sized_to_the_in_process_rate() -> None:
    full = PLANS[("full", "cpu")]
    assert full.pipeline_seconds is not None and full.shard_pairs == 2000
    assert pipeline_size(full, 15000, pairs_per_s=100.0) == 6000  # a minute at 100 pairs/s
    assert pipeline_size(full, 15000, pairs_per_s=10.0) == 3990  # about two shards at least
    assert pipeline_size(full, 15000, pairs_per_s=1000.0) == 15000  # never over the corpus
    assert pipeline_size(full, 15000, pairs_per_s=41.0) % 30 == 0  # whole queries
    assert pipeline_size(PLANS[("quick", "cpu")], 60, pairs_per_s=40.0) == 60


def test_matmul_peak_leaves_out_sizes_too_slow_for_the_dtype() -> None:
    # 2 * 2048^3 FLOP is 17 GFLOP: 0.17 s at 100 GFLOP/s, 14 s at an emulated 1.2 GFLOP/s.
    assert affordable_sizes((2048, 3072), 100.0) == [2048, 3072]
    assert affordable_sizes((2048, 3072), 40.0) == [2048]
    assert affordable_sizes((2048, 3072), 1.2) == []


def test_bench_corpus_slices_follow_query_ids() -> None:
    corpus = BenchCorpus(np.array([0, 0, 1, 2, 2, 2]), ["a"] * 6, ["t"] * 6, np.zeros(6))
    assert corpus.query_slices() == [slice(0, 2), slice(2, 3), slice(3, 6)]


def test_batch_composition_change_sees_a_score_that_depends_on_its_neighbours() -> None:
    from benchmarks.contender import batch_composition_change

    pairs = [(f"q{index % 3}", f"document {index}") for index in range(40)]

    def independent(batch: list[tuple[str, str]]) -> np.ndarray:
        return np.array([len(text) * 0.1 for _, text in batch])

    def neighbourly(batch: list[tuple[str, str]]) -> np.ndarray:
        return np.array([len(text) * 0.1 + 1e-3 * len(batch) for _, text in batch])

    assert batch_composition_change(independent, pairs) == 0.0
    assert batch_composition_change(neighbourly, pairs) == pytest.approx(1e-3 * 39, rel=0.05)


def test_the_peers_environment_follows_the_dependency_group(tmp_path: Path) -> None:
    from benchmarks import peers

    requirements = peers.peer_requirements()
    names = " ".join(requirements)
    assert "optimum-onnx" in names and "optimum-intel" in names and "sentence-transformers" in names
    first = peers.environment_dir(requirements, "torch==2.13.0")
    assert first == peers.environment_dir(list(requirements), "torch==2.13.0")
    assert first != peers.environment_dir([*requirements, "extra"], "torch==2.13.0")
    assert first != peers.environment_dir(requirements, "torch==2.12.0")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[dependency-groups]\nbench-peers = ["onnxruntime==1.0"]\n')
    assert peers.peer_requirements(pyproject) == ["onnxruntime==1.0"]
    assert peers.installed_python(["a-requirement-never-installed==0"]) is None
