"""A broker across machines: Redis over TLS (rediss://), its password read from a file, never shown."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from testkit import corpora
from testkit.fleet import local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import new_prefix, tls_redis


def test_a_run_through_a_tls_broker_whose_password_comes_from_a_file(tmp_path: Path) -> None:
    model = build_tiny_cross_encoder(tmp_path / "model", seed=4)
    spec = f"cross-encoder:{model}"
    with tls_redis(tmp_path / "tls") as broker:
        password_file = tmp_path / "broker-password"
        password_file.write_text(broker.password + "\n")
        prefix = new_prefix()
        env = local_worker_env(tmp_path, broker.url, prefix, broker_password_file=str(password_file))
        fleet = start_fleet(spec, 1, env, broker.url_with_password, prefix, tmp_path / "workers.log")
        try:
            corpus = corpora.write(corpora.long_corpus(8, 5, seed=2), tmp_path / "corpus.parquet")
            out = tmp_path / "scores.parquet"
            result = run_script(
                "submit.py",
                str(corpus),
                "--model",
                spec,
                "--wait",
                "--out",
                str(out),
                "--timeout",
                "120",
                env=env,
            )
            assert result.returncode == 0, result.stderr + fleet.log()[-3000:]
            assert pq.read_table(out).num_rows == 40
            status = run_script("status.py", env=env)
            assert "broker: rediss://127.0.0.1:" in status.stdout, status.stdout
            for text in (result.stderr, result.stdout, status.stdout, status.stderr, fleet.log()):
                assert broker.password not in text
        finally:
            fleet.stop()
