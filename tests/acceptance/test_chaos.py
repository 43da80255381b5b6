"""The chaos script, small: worker kills and a Redis restart lose and duplicate nothing."""

from __future__ import annotations

from testkit.fleet import clean_env, run_script


def test_chaos_run_loses_and_duplicates_nothing() -> None:
    result = run_script(
        "chaos.py",
        # 20 shards for 3 kills: the test model scores a shard in a fraction of a second, and the run
        # must still be going when the third kill comes (each kill waits for one or two more shards).
        "--pairs",
        "6000",
        "--kills",
        "3",
        "--workers",
        "2",
        "--shard-pairs",
        "300",
        "--seed",
        "1",
        # A run takes well under a minute: fail with the shards not done, long before the test's timeout.
        "--timeout",
        "240",
        env=clean_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    labels = (
        "kills survived",
        "redis restarts",
        "rows lost",
        "rows duplicated",
        "usage rows double-counted",
        "ledger consistent",
    )
    report = {
        label: line.removeprefix(label).split()[0]
        for line in result.stdout.splitlines()
        for label in labels
        if line.startswith(label)
    }
    assert report["kills survived"] == "3" and report["redis restarts"] == "1"
    assert report["rows lost"] == "0" and report["rows duplicated"] == "0"
    assert report["usage rows double-counted"] == "0" and report["ledger consistent"] == "yes"
    assert "verdict                   PASS" in result.stdout
