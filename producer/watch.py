"""Following a run from the ledger: a progress line with shards and pairs done, pairs/s and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from storage.ledger import Ledger, RunProgress

BAR_WIDTH = 24


def render_progress(progress: RunProgress, pairs_per_s: float) -> str:
    fraction = progress.pairs_done / progress.pairs_total if progress.pairs_total else 1.0
    filled = round(fraction * BAR_WIDTH)
    remaining = progress.pairs_total - progress.pairs_done
    eta = _duration(remaining / pairs_per_s) if pairs_per_s > 0 and remaining > 0 else "--"
    failed = f", {progress.shards_failed} failed" if progress.shards_failed else ""
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
        f"{progress.shards_done}/{progress.shards_total} shards{failed} | "
        f"{progress.pairs_done:,}/{progress.pairs_total:,} pairs | {pairs_per_s:,.0f} pairs/s | ETA {eta}"
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def wait_for_run(
    ledger: Ledger,
    run_id: str,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    stream: TextIO = sys.stderr,
    on_poll: Callable[[RunProgress], None] | None = None,
) -> RunProgress:
    """Poll the ledger until every shard is done or failed (or ``timeout_s`` passes) and show
    progress on ``stream``: redrawn in place on a terminal, one line every few seconds otherwise."""
    interactive = stream.isatty()
    started = time.monotonic()
    first = ledger.progress(run_id)
    last_line_at = 0.0
    while True:
        progress = ledger.progress(run_id)
        elapsed = time.monotonic() - started
        rate = (progress.pairs_done - first.pairs_done) / elapsed if elapsed > 0 else 0.0
        line = render_progress(progress, rate)
        if interactive:
            stream.write("\r" + line)
            stream.flush()
        elif progress.finished or time.monotonic() - last_line_at >= 5.0:
            stream.write(line + "\n")
            stream.flush()
            last_line_at = time.monotonic()
        if on_poll is not None:
            on_poll(progress)
        if progress.finished or (timeout_s is not None and elapsed >= timeout_s):
            if interactive:
                stream.write("\n")
            return progress
        time.sleep(poll_s)
