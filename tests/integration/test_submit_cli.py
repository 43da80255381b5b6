"""submit.py and workers.py as a user meets them: bad input is refused with exit code 2, a clear
message, and nothing enqueued, recorded or written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.broker.url import connect, is_reachable
from testkit import corpora
from testkit.fleet import clean_env, run_script, run_scripts_at_once

# tests/integration/test_api_config.py imports it from here
from testkit.fleet import load_script as _load_script


def _keys(redis_url: str, prefix: str) -> list[bytes]:
    return list(connect(redis_url).scan_iter(match=f"{prefix}*"))


def _bad_corpora(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    good = corpora.long_corpus(n_queries=5, docs_per_query=4, seed=9)
    cases: dict[str, tuple[pa.Table | bytes, list[str]]] = {
        "missing column": (good.drop_columns(["text"]), ["text", "missing"]),
        "mistyped column": (good.set_column(1, "query", pa.array(range(good.num_rows))), ["query", "type"]),
        "null text": (
            good.set_column(3, "text", pa.array([None, *good.column("text").to_pylist()[1:]])),
            ["text", "1 row"],
        ),
        "empty query": (good.set_column(1, "query", pa.array([""] * good.num_rows)), ["query", "20 rows"]),
        "duplicate pair": (pa.concat_tables([good, good.slice(0, 2)]), ["duplicate", "doc_id"]),
        "two texts for one query": (
            good.set_column(1, "query", pa.array([f"text {i}" for i in range(good.num_rows)])),
            ["query_id", "query"],
        ),
        "zero rows": (good.slice(0, 0), ["no rows"]),
        "not parquet": (b"query_id,query\n1,hello\n", ["parquet"]),
        "zero bytes": (b"", ["empty"]),
    }
    written = {}
    for name, (content, words) in cases.items():
        path = tmp / (name.replace(" ", "-") + ".parquet")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            pq.write_table(content, path)
        written[name] = (path, words)
    return written


def test_every_bad_corpus_exits_2_and_leaves_nothing(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Each corpus is submitted with a data dir and key prefix of its own, all at once."""
    cases = _bad_corpora(tmp_path)
    places = {
        name: (tmp_path / f"data-{index}", f"{redis_prefix}{index}:") for index, name in enumerate(cases)
    }
    calls = [
        (
            "submit.py",
            [str(path), "--model", "cross-encoder:some/model", "--wait"],
            clean_env(data_dir=str(places[name][0]), broker_url=redis_url, redis_key_prefix=places[name][1]),
        )
        for name, (path, _) in cases.items()
    ]
    for (name, (_, words)), result in zip(cases.items(), run_scripts_at_once(calls), strict=True):
        assert result.returncode == 2, (name, result.stderr)
        message = result.stderr.strip()
        assert message.startswith("error:") and "Traceback" not in message, (name, message)
        for word in words:
            assert word.lower() in message.lower(), (name, word, message)
        data_dir, prefix = places[name]
        assert not data_dir.exists(), f"{name}: something was written"
        assert _keys(redis_url, prefix) == [], f"{name}: something was enqueued"
    assert _keys(redis_url, redis_prefix) == []


def test_missing_file_and_bad_flags(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url=redis_url, redis_key_prefix=redis_prefix)
    corpus = str(corpora.write(corpora.long_corpus(2, 2), tmp_path / "corpus.parquet"))
    missing, no_model, out_without_wait, unknown_run, bad_kind, same_shadow, shadow_resume, missing_canary = (
        run_scripts_at_once(
            [
                ("submit.py", [str(tmp_path / "nope.parquet"), "--model", "cross-encoder:m"], env),
                ("submit.py", [str(tmp_path / "nope.parquet")], env),
                ("submit.py", ["x.parquet", "--model", "m", "--out", "o.parquet"], env),
                ("submit.py", ["--resume", "no-such-run"], env),
                ("submit.py", ["x.parquet", "--model", "bogus:thing"], env),
                ("submit.py", [corpus, "--model", "cross-encoder:m", "--shadow", "cross-encoder:m"], env),
                ("submit.py", ["--resume", "some-run", "--shadow", "cross-encoder:m"], env),
                (
                    "submit.py",
                    [corpus, "--model", "cross-encoder:m", "--canary", str(tmp_path / "no.parquet")],
                    env,
                ),
            ]
        )
    )
    assert same_shadow.returncode == 2 and "is the production model itself" in same_shadow.stderr
    assert shadow_resume.returncode == 2 and "--shadow starts with a new run" in shadow_resume.stderr
    assert missing_canary.returncode == 2 and "no.parquet" in missing_canary.stderr
    assert missing.returncode == 2 and "nope.parquet" in missing.stderr
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    assert out_without_wait.returncode == 2 and "--out needs --wait" in out_without_wait.stderr
    assert unknown_run.returncode == 2 and "no-such-run" in unknown_run.stderr
    assert bad_kind.returncode == 2 and "unknown kind 'bogus'" in bad_kind.stderr
    assert not (tmp_path / "data" / "runs").exists()


def test_unreachable_broker_exits_3(tmp_path: Path) -> None:
    corpus = corpora.write(corpora.long_corpus(3, 2), tmp_path / "c.parquet")
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url="redis://:secret@127.0.0.1:1/0")
    result = run_script("submit.py", str(corpus), "--model", "cross-encoder:m", env=env)
    assert result.returncode == 3
    assert "does not answer" in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "data" / "runs").exists()


@pytest.mark.parametrize("flag", ["all", "0"])
def test_gpus_without_a_gpu_is_a_clear_error(tmp_path: Path, flag: str) -> None:
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url="redis://127.0.0.1:1/0")
    result = run_script("workers.py", "--model", "cross-encoder:m", "--gpus", flag, env=env)
    assert result.returncode == 2
    assert "no CUDA GPU is visible" in result.stderr and "--cpu" in result.stderr


@pytest.mark.parametrize("script", ["submit.py", "workers.py"])
def test_help_describes_every_flag(script: str) -> None:
    parser = _load_script(script).build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    result = run_script(script, "--help", env=clean_env())
    assert result.returncode == 0 and "--model" in result.stdout


def test_the_embedded_broker_is_shown_by_status_and_stopped_on_request(tmp_path: Path) -> None:
    """submit.py starts the embedded Redis, which outlives it as a daemon; status.py shows it and
    --stop-broker stops it. submit.py names what keeps this setup to one machine."""
    env = clean_env(data_dir=str(tmp_path / "data"))
    corpus = corpora.write(corpora.long_corpus(3, 2), tmp_path / "corpus.parquet")
    submitted = run_script("submit.py", str(corpus), "--model", "cross-encoder:some-model", env=env)
    try:
        assert submitted.returncode == 0, submitted.stderr
        assert "workers on other machines cannot join this setup" in submitted.stderr
        assert "embedded Redis on 127.0.0.1" in submitted.stderr and "SQLite" in submitted.stderr
        url = (tmp_path / "data" / "redis" / "url").read_text().strip()

        status = run_script("status.py", env=env)
        assert f"broker: embedded Redis at {url} (pid " in status.stdout, status.stdout
        assert "--stop-broker" in status.stdout
    finally:
        stopped = run_script("status.py", "--stop-broker", env=env)
    assert stopped.returncode == 0 and "stopped the embedded Redis" in stopped.stdout, stopped.stderr
    assert not is_reachable(url)
    status = run_script("status.py", env=env)
    assert "broker: embedded Redis (not running" in status.stdout
