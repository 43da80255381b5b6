"""Every script in scripts/ runs under some test; the benchmarks run end to end in their smoke modes and
print figures that add up."""

from __future__ import annotations

import re

import pytest

from testkit.fleet import clean_env, run_script


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
