"""scripts/metrics.py's own failures; its metrics during a run are checked in test_canary.py."""

from __future__ import annotations

import socket
from pathlib import Path

from testkit.fleet import clean_env, run_script


def test_a_taken_port_exits_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = clean_env(data_dir=str(tmp_path / "data"), metrics_port=str(taken.getsockname()[1]))
        result = run_script("metrics.py", env=env, timeout=60)
    assert result.returncode == 3 and "cannot listen on 127.0.0.1:" in result.stderr
