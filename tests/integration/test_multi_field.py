"""Multi-field scoring through real workers: a title and a body scored as fields of one run equal the
weighted sum of the two single-field runs' scores (each normalized per query), a text both fields share
is scored once, and bad field flags exit 2."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.ledger import Ledger
from testkit import corpora
from testkit.fleet import clean_env, local_worker_env, run_script, run_scripts_at_once, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(600)


def corpus_with_titles() -> pa.Table:
    corpus = corpora.long_corpus(n_queries=30, docs_per_query=8, seed=6)
    rng = random.Random(6)
    titles = [
        text if rng.random() < 0.3 else f"title {rng.randint(0, 10**6)} {text[:15]}"
        for text in corpus["text"].to_pylist()
    ]
    return corpus.append_column("title", pa.array(titles))


def keyed(path: Path) -> dict[tuple, dict]:
    return {(row["query_id"], row["doc_id"]): row for row in pq.read_table(path).to_pylist()}


def minmax_by_query(rows: dict[tuple, dict], column: str) -> dict[tuple, float]:
    groups: dict[object, list[float]] = defaultdict(list)
    for (query_id, _), row in rows.items():
        groups[query_id].append(row[column])
    spans = {query_id: (min(values), max(values)) for query_id, values in groups.items()}
    result = {}
    for key, row in rows.items():
        low, high = spans[key[0]]
        result[key] = 1.0 if high == low else (row[column] - low) / (high - low)
    return result


def test_fields_scored_in_one_run_equal_the_weighted_single_field_runs(
    redis_url: str, tmp_path: Path
) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "model", seed=8)
    model = f"cross-encoder:{model_dir}"
    corpus = corpus_with_titles()
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix)
    fleet = start_fleet(model, 1, env, redis_url, prefix, tmp_path / "workers.log")
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        common = [str(corpus_path), "--model", model, "--wait", "--shard-pairs", "60"]
        outs = {name: tmp_path / f"{name}.parquet" for name in ("title", "body", "fields")}
        runs = {}
        for name, flags in (
            ("title", ["--text-column", "title"]),
            ("body", []),
            (
                "fields",
                [
                    *("--field", "title=title", "--field", "body=text"),
                    *("--field-weight", "title=0.3,body=0.7", "--field-normalize", "minmax"),
                ],
            ),
        ):
            result = run_script("submit.py", *common, *flags, "--out", str(outs[name]), env=env)
            assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
            runs[name] = result.stdout.strip().splitlines()[-1]

        title, body, fields = (keyed(outs[name]) for name in ("title", "body", "fields"))
        assert len(fields) == corpus.num_rows
        title_norm, body_norm = minmax_by_query(title, "score"), minmax_by_query(body, "score")
        for key, row in fields.items():
            assert row["score_title"] == pytest.approx(title[key]["score"], abs=1e-4)
            assert row["score_body"] == pytest.approx(body[key]["score"], abs=1e-4)
            assert row["score"] == pytest.approx(0.3 * title_norm[key] + 0.7 * body_norm[key], abs=1e-3)
            assert row["tokens"] == title[key]["tokens"] + body[key]["tokens"]

        # A title that is its body is one pair text: scored once.
        shared = [
            key for key, row in zip(title, corpus.to_pylist(), strict=False) if row["title"] == row["text"]
        ]
        same = {(r["query_id"], r["doc_id"]) for r in corpus.to_pylist() if r["title"] == r["text"]}
        assert same and shared is not None
        tokens = {name: ledger.usage_totals(run_id).tokens for name, run_id in runs.items()}
        saved = sum(body[key]["tokens"] for key in same)
        assert tokens["fields"] == tokens["title"] + tokens["body"] - saved
        run = ledger.get_run(runs["fields"])
        assert run is not None and run.options["fields"]["weights"] == [0.3, 0.7]
    finally:
        fleet.stop()
        ledger.dispose()
        delete_prefixed(redis_url, prefix)


def test_bad_fields_exit_2(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    corpus = str(corpora.write(corpus_with_titles(), tmp_path / "corpus.parquet"))
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url=redis_url, redis_key_prefix=redis_prefix)
    base = [corpus, "--model", "cross-encoder:m"]
    cases = {
        "unknown column": (
            ["--field", "title=title", "--field", "body=bodytext"],
            "no column 'bodytext' to score as a field",
        ),
        "one field": (["--field", "title=title"], "give two fields or more"),
        "weight not a number": (
            ["--field", "title=title", "--field", "body=text", "--field-weight", "title=big"],
            "the weight 'big' of title is not a number",
        ),
        "not a text column": (["--field", "a=title", "--field", "b=query_id"], "a field must be text"),
        "with reuse": (
            ["--field", "a=title", "--field", "b=text", "--reuse", "latest"],
            "--field cannot be combined with --reuse",
        ),
    }
    results = run_scripts_at_once([("submit.py", base + flags, env) for flags, _ in cases.values()])
    for (name, (_, message)), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    assert not (tmp_path / "data").exists()
