"""Every script in scripts/ runs under some test; the benchmarks run end to end in their smoke modes and
print figures that add up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.fleet import REPO, SCRIPTS, clean_env, run_script

TESTS = REPO / "tests"


def test_every_script_is_run_by_a_test() -> None:
    """A new script comes with a test that runs it: some test names it as a string, as run_script takes
    it (a guard against forgetting one; what each run checks is up to its test)."""
    sources = "\n".join(path.read_text() for path in TESTS.rglob("*.py"))
    scripts = sorted(path.name for path in SCRIPTS.iterdir() if path.suffix in (".py", ".sh"))
    assert len(scripts) >= 11, scripts
    assert [name for name in scripts if f'"{name}"' not in sources] == []


def test_setup_sh_does_nothing_once_set_up() -> None:
    """The README's commands start with scripts/setup.sh, which must be safe to run again: once the
    environment matches pyproject.toml it changes nothing. Run where the tests use the .venv it makes."""
    venv = REPO / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip(f"these tests run in {sys.prefix}, not in the {venv} that scripts/setup.sh manages")
    stamps = sorted(venv.glob(".installed-*"))
    assert len(stamps) == 1, stamps
    stamped = stamps[0].stat().st_mtime_ns
    result = subprocess.run(
        ["bash", str(SCRIPTS / "setup.sh")], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    # A reinstall would have replaced the stamp of the installed pyproject.toml.
    assert sorted(venv.glob(".installed-*")) == stamps and stamps[0].stat().st_mtime_ns == stamped


def _figure(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return found


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_bench_incremental_smoke_rescores_only_the_changed_documents() -> None:
    result = run_script("bench_incremental.py", "--smoke", env=clean_env(), timeout=400)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    corpus = _figure(r"^corpus\s+([\d,]+) pairs, ([\d,]+) documents changed \(5%\)$", out)
    pairs, changed = _number(corpus[1]), _number(corpus[2])
    assert (pairs, changed) == (300, 15)
    full = _figure(r"^full run\s+([\d.]+)s\s+\(([\d,]+) pairs/s\)\s+([\d,]+) pairs scored$", out)
    full_seconds = float(full[1])
    assert full_seconds > 0 and _number(full[3]) == pairs
    assert _number(full[2]) == pytest.approx(pairs / full_seconds, rel=0.1, abs=1)
    incremental = _figure(
        r"^incremental \(--reuse\)\s+([\d.]+)s\s+= ([\d.]+)% of the full run\s+([\d,]+) pairs scored$", out
    )
    assert _number(incremental[3]) == changed  # only the changed documents went to the workers
    share = float(incremental[2]) / 100
    assert share == pytest.approx(float(incremental[1]) / full_seconds, rel=0.1, abs=0.002)
    rescored = _figure(r"^full re-score\s+([\d.]+)s\s+([\d,]+) pairs scored$", out)
    assert float(rescored[1]) > 0 and _number(rescored[2]) == pairs
    assert re.search(r"^only changed rescored\s+yes \(15 scored, 15 changed\)$", out, re.MULTILINE)
    assert re.search(r"^output identical\s+yes ", out, re.MULTILINE)
    assert "not judged in a smoke run" in out


def test_bench_api_smoke_keeps_under_the_limit_and_scores_every_pair_once() -> None:
    result = run_script("bench_api.py", "--smoke", env=clean_env(), timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    _figure(r"^2 workers x 2 in flight, limits 10 requests and ([\d,]+) tokens per 2s window", out)
    scored = _figure(r"^([\d,]+) requests scored in ([\d.]+)s; (\d+) full windows from the first:$", out)
    # 200 pairs at 5 documents a request; 40 requests at 10 a window need at least 3 windows.
    assert _number(scored[1]) == 40 and int(scored[3]) >= 3
    assert float(scored[2]) >= 3 * 2.0
    windows = re.findall(r"^  window \d+:\s+(\d+) requests \(\s*([\d.]+)% of limit\)", out, re.MULTILINE)
    assert len(windows) == int(scored[3])
    for requests, share in windows:
        assert 0 < int(requests) <= 10 and float(share) == pytest.approx(int(requests) * 10)
    achieved = _figure(r"^achieved: ([\d.]+)% of the request limit .*lowest window ([\d.]+)%\)", out)
    assert 50 <= float(achieved[1]) <= 100 and float(achieved[2]) <= float(achieved[1])
    busiest = _figure(r"busiest 2s span: (\d+) requests, .*over the limit: (\d+); 429s sent: (\d+)$", out)
    assert int(busiest[1]) <= 10 and (busiest[2], busiest[3]) == ("0", "0")
    pairs = "pairs: 200 in the corpus, 200 in the output, 200 scored by the server"
    assert f"{pairs}: every pair scored exactly once" in out


def test_bench_cascade_smoke_saves_api_cost_with_a_local_first_stage() -> None:
    result = run_script("bench_cascade.py", "--smoke", env=clean_env(), timeout=400)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert re.search(
        r"^CPU: .+; 40 queries x 20 documents = 800 pairs; API voyage:rerank-2.5$", out, re.MULTILINE
    )
    full = _figure(
        r"^every pair with the API \(run \S+\): 800 pairs, (\d+) requests, ([\d,]+) tokens, \$([\d.]+)$", out
    )
    cascade = _figure(
        r"^cascade \(run \S+\): stage 1 800 pairs on the local model; stage 2 \(run \S+\) the top 5 a query, "
        r"200 pairs, (\d+) requests, ([\d,]+) tokens, \$([\d.]+)$",
        out,
    )
    assert 0 < _number(cascade[2]) < _number(full[2]) and 0 < float(cascade[3]) < float(full[3])
    saved = _figure(r"^API cost saved by the cascade: \$([\d.]+) \(([\d.]+)%\); priced by the ledger$", out)
    assert float(saved[1]) == pytest.approx(float(full[3]) - float(cascade[3]), abs=2e-6)
    assert float(saved[2]) == pytest.approx(100 * (1 - float(cascade[3]) / float(full[3])), abs=0.06)


def test_bench_submit_smoke_times_the_producer_on_each_corpus() -> None:
    result = run_script("bench_submit.py", "--smoke", "--files", "3", "--s3", env=clean_env(), timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    _figure(r"^machine\s+CPU .+ \(family .+\), \d+ usable CPUs; ", out)
    rows = re.findall(
        r"^(local disk|S3 endpoint)\s+([\d,]+)\s+3 contiguous\s+(\d+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)$",
        out,
        re.MULTILINE,
    )
    assert [(row[0], _number(row[1])) for row in rows] == [
        ("local disk", 3_000),
        ("S3 endpoint", 3_000),
        ("local disk", 30_000),
        ("S3 endpoint", 30_000),
    ]
    for _, pairs, shards, seconds, pairs_per_s, peak_mib in rows:
        assert int(shards) >= 1 and float(seconds) > 0 and 50 < _number(peak_mib) < 4096
        assert _number(pairs_per_s) == pytest.approx(_number(pairs) / float(seconds), rel=0.05, abs=1)
    assert out.count("not judged in a smoke run") == 5
    assert "pairs from S3 within 2x of local disk" in out


def test_bench_smoke_runs_every_step_and_its_figures_add_up(tmp_path: Path) -> None:
    figures_path = tmp_path / "bench.json"
    result = run_script(
        "bench.py",
        "--smoke",
        "--no-peers",  # the same contenders whether or not a full run installed the peers here before
        "--cache-dir",
        str(tmp_path / "models"),
        "--json",
        str(figures_path),
        env=clean_env(),
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    figures = json.loads(figures_path.read_text())
    assert figures["mode"] == "smoke"
    model = figures["tiny"]
    assert model["pairs"] == 60 and 10 < model["tokens_per_pair"] < 512 and model["model_gflop"] > 0
    assert model["tokenizer_pairs_per_s"] > 0 and "ours' tokenizer alone" in out
    rows = model["contenders"]
    assert {row["kind"] for row in rows} == {"ours", "sentence-transformers", "flagembedding"}
    for row in rows:
        assert row["pairs"] == 60 and row["pairs_per_s"] > 0 and row["load_seconds"] > 0
        assert row["pairs_per_s"] == pytest.approx(60 / row["seconds"])
        assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > 0
    [reference] = [row for row in rows if row["kind"] == "sentence-transformers"]
    assert reference["dtype"] == "float32" and reference["agreement"] is None
    # Every other float32 run scores the same pairs with the same model as the reference: they agree.
    # (On CPU that is ours at float32 and FlagReranker; on CUDA FlagReranker runs in fp16.)
    float32 = [row for row in rows if row is not reference and row["dtype"] == "float32"]
    assert "ours" in {row["kind"] for row in float32}
    for row in float32:
        agreement = row["agreement"]
        assert agreement["spearman_min"] > 0.999 and agreement["top_k_same"] == 1.0, row["label"]
        assert agreement["max_abs_diff"] < 1e-4, row["label"]
    assert all(gflops > 0 for gflops in figures["matmul_peak_gflops"].values())
    pipeline = figures["pipeline"]
    assert pipeline["run"]["pairs"] == 60 and pipeline["run"]["shards"] == 2
    assert pipeline["run"]["wall_seconds"] > pipeline["run"]["ledger_wall_seconds"] > 0
    assert pipeline["in_process_pairs_per_s"] > 0 and 0 < pipeline["wall_ratio"] < pipeline["ledger_ratio"]
    # The worker ran with the tuning ours calibrated before the rounds, read from the cache handed to it.
    [worker_device] = pipeline["run"]["devices"]
    assert worker_device.startswith("cpu ") and " budget " in worker_device
    assert worker_device.endswith("(cached)")
    assert "pipeline vs in-process: not judged in a smoke run" in out
    assert re.search(r"^benchmark took \d+s$", out, re.MULTILINE)


def test_bench_machinery_smoke_feeds_a_null_scorer_through_the_pipeline(tmp_path: Path) -> None:
    figures_file = tmp_path / "machinery.json"
    arguments = ("--smoke", "--json", str(figures_file), "--device-pairs-per-s", "20000")
    result = run_script("bench_machinery.py", *arguments, env=clean_env(), timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    machine = r"^CPU .+ \(family .+\), \d+ usable; one worker process hosting null:machinery$"
    assert re.search(machine, out, re.MULTILINE)
    [line] = re.findall(r"^\s+sqlite: 2,000 pairs in 4 shards; .*$", out, re.MULTILINE)
    assert "pairs/s; the worker process" in line and "ms per shard: lease " in line
    assert re.search(r"^target: >= 50,000 pairs/s per worker process: [\d,]+ \((met|MISSED)\)$", out, re.M)
    figures = json.loads(figures_file.read_text())["figures"]["sqlite"]
    assert (figures["pairs"], figures["shards"]) == (2_000, 4)
    assert figures["pairs_per_s"] >= figures["end_to_end_pairs_per_s"] > 0
    # Every phase of a shard was timed in the worker and logged; together they fit in its time per shard.
    phases = figures["phases_ms_per_shard"]
    assert set(phases) == {"lease", "read", "score", "write", "ledger", "settle", "celery"}
    assert all(ms > 0 for phase, ms in phases.items() if phase != "celery")
    assert sum(phases.values()) == pytest.approx(figures["worker_ms_per_shard"])
    # On a simulated device (0.1 s for the 2,000 pairs, one call at a time) 1 and 2 shards in flight.
    simulated = r"on a simulated device of 20,000 pairs/s: 1 shard\(s\) in flight [\d,]+ pairs/s, "
    assert re.search(simulated + "device busy", out)
    device = json.loads(figures_file.read_text())["simulated_device"]
    assert device["pairs_per_s"] == 20_000 and set(device["sqlite"]) == {"1", "2"}
    for values in device["sqlite"].values():
        # The device can go no faster than its rate, and it was busy for its 0.1 s in the worker's span.
        assert 0 < values["pairs_per_s"] <= 20_000 * 1.01
        assert 0 < values["device_busy_share"] <= 1.01
        # Attempts in flight together are charged each instant once: their wall time fits in the span.
        assert 0 < values["charged_wall_seconds"] <= values["worker_span_seconds"] * 1.02 + 0.01
