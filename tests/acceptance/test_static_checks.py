"""scripts/check.sh, the static checks CI runs before the tests, passes on the tree as it is: ruff, the
import directions and mypy on the product packages."""

from __future__ import annotations

import subprocess

from testkit.fleet import REPO


def test_static_checks_pass() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check.sh")], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Success: no issues found" in result.stdout
