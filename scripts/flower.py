"""Start Flower, Celery's web monitor, on the fleet's broker: the workers, every shard task with its
progress (pairs done of total, while it runs), the queues, and Prometheus metrics at /metrics.

Flower reads the same broker as the workers (RERANK_BROKER_URL, else the embedded Redis under the data
dir) with the same transport options, so it sees the keys under RERANK_REDIS_KEY_PREFIX. Its pages ask
for basic auth: RERANK_FLOWER_USER (default admin) and RERANK_FLOWER_PASSWORD, without which it does not
start (exit 2). It listens on RERANK_FLOWER_ADDRESS:RERANK_FLOWER_PORT (default 127.0.0.1:5555).
Exit codes: 0 stopped (SIGINT or SIGTERM); 2 bad settings; 3 broker unreachable.

Example:
  RERANK_FLOWER_PASSWORD=... python scripts/flower.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.broker import resolve_broker_url
from core.broker.celery_app import create_app
from core.broker.url import redact
from core.errors import BrokerError, ConfigError, RerankError
from core.settings import Settings, get_settings

EXIT_OK, EXIT_USAGE, EXIT_BROKER = 0, 2, 3
# The task list's columns: a shard's progress line is its result while it runs.
TASK_COLUMNS = "name,uuid,state,result,started,runtime,worker,retries"


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def basic_auth_credential(settings: Settings) -> str:
    """``user:password`` as Flower compares it with a request's basic auth."""
    if settings.flower_password is None or not settings.flower_password.get_secret_value():
        raise ConfigError(
            "RERANK_FLOWER_PASSWORD is not set: Flower shows the fleet and can stop its tasks, so it needs a "
            "password; set RERANK_FLOWER_PASSWORD (and RERANK_FLOWER_USER, default admin)"
        )
    return f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"


def flower_argv(settings: Settings) -> list[str]:
    """Flower's command line; it holds no secret (the credential is set on Flower's options directly,
    where no process listing or log shows it)."""
    return [
        "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
        f"--tasks_columns={TASK_COLUMNS}",
        # Settings come from RERANK_* only: never execute a flowerconfig.py found in the working directory.
        f"--conf={os.devnull}",
    ]


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s flower: %(message)s")
    try:
        credential = basic_auth_credential(settings)
        broker_url = resolve_broker_url(settings)
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BROKER if isinstance(exc, BrokerError) else EXIT_USAGE

    _unshadow_flower_package()
    from flower.options import options as flower_options

    flower_options.basic_auth = [credential]
    app = create_app(settings, broker_url)
    print(
        f"Flower on http://{settings.flower_address}:{settings.flower_port}/ (user {settings.flower_user}) "
        f"for {redact(broker_url)}, keys under {settings.redis_key_prefix!r}",
        file=sys.stderr,
        flush=True,
    )
    return app.start(flower_argv(settings)) or EXIT_OK


def _unshadow_flower_package() -> None:
    # Python puts this script's directory first on sys.path, where this file would answer
    # ``import flower`` instead of the Flower package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]


if __name__ == "__main__":
    sys.exit(main())
