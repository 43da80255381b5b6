"""A broker and a ledger across machines: Redis over TLS (rediss://) and PostgreSQL over TLS
(``sslmode=verify-full``), their passwords read from files, never shown."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy.exc import OperationalError

from storage.ledger import Ledger
from testkit import corpora
from testkit.fleet import local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import new_prefix, postgres_schema, tls_redis
from testkit.tls_postgres import tls_postgres_relay

LEDGER_PASSWORD = "ledger-password-from-a-file"  # the suite's server trusts loopback: any password does


def test_a_run_through_a_tls_broker_and_a_tls_ledger_whose_passwords_come_from_files(tmp_path: Path) -> None:
    model = build_tiny_cross_encoder(tmp_path / "model", seed=4)
    spec = f"cross-encoder:{model}"
    with (
        tls_redis(tmp_path / "tls") as broker,
        postgres_schema() as plain_ledger_url,
        tls_postgres_relay(tmp_path / "tls-postgres", plain_ledger_url) as relay,
    ):
        password_file = tmp_path / "broker-password"
        password_file.write_text(broker.password + "\n")
        ledger_password_file = tmp_path / "ledger-password"
        ledger_password_file.write_text(LEDGER_PASSWORD + "\n")
        prefix = new_prefix()
        env = local_worker_env(
            tmp_path,
            broker.url,
            prefix,
            broker_password_file=str(password_file),
            ledger_url=relay.url(plain_ledger_url),
            ledger_password_file=str(ledger_password_file),
        )
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
                assert LEDGER_PASSWORD not in text
            # Every ledger connection (submit.py's, the workers', status.py's) went through TLS.
            assert relay.tls_sessions >= 3 and relay.refused_plaintext == 0
            with pytest.raises(OperationalError):  # the relay takes TLS only
                Ledger(relay.url(plain_ledger_url, sslmode="disable")).get_run("none")
            assert relay.refused_plaintext >= 1
        finally:
            fleet.stop()
