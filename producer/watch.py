"""Following a run from the ledger: shards and pairs done, pairs/s and ETA, as a rich progress bar
redrawn in place on a terminal, or as one plain line every few seconds in logs and pipes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from producer.terminal import terminal_console
from storage.ledger import Ledger, RunProgress

BAR_WIDTH = 24
PLAIN_LINE_EVERY_S = 5.0


def render_progress(progress: RunProgress, pairs_per_s: float) -> str:
    """The plain progress line that logs and pipes get."""
    fraction = progress.pairs_done / progress.pairs_total if progress.pairs_total else 1.0
    filled = round(fraction * BAR_WIDTH)
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
        f"{_shards(progress)} | "
        f"{progress.pairs_done:,}/{progress.pairs_total:,} pairs | {pairs_per_s:,.0f} pairs/s | "
        f"ETA {_eta(progress, pairs_per_s)}"
    )


def _shards(progress: RunProgress) -> str:
    failed = f", {progress.shards_failed} failed" if progress.shards_failed else ""
    return f"{progress.shards_done}/{progress.shards_total} shards{failed}"


def _eta(progress: RunProgress, pairs_per_s: float) -> str:
    remaining = progress.pairs_total - progress.pairs_done
    return _duration(remaining / pairs_per_s) if pairs_per_s > 0 and remaining > 0 else "--"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressDisplay(Protocol):
    def show(self, progress: RunProgress, pairs_per_s: float) -> None:
        """The run's progress as of the latest poll."""
        ...

    def __enter__(self) -> ProgressDisplay: ...

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None: ...


class PlainLines:
    """A plain line every ``PLAIN_LINE_EVERY_S`` seconds and one when the run is finished, for logs
    and pipes (what cron logs and tests read)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last_line_at = 0.0

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        return None

    def show(self, progress: RunProgress, pairs_per_s: float) -> None:
        if progress.finished or time.monotonic() - self._last_line_at >= PLAIN_LINE_EVERY_S:
            self._stream.write(render_progress(progress, pairs_per_s) + "\n")
            self._stream.flush()
            self._last_line_at = time.monotonic()


class LiveBar:
    """A rich progress bar of the run's pairs, with its shards, pairs/s and ETA, redrawn in place."""

    def __init__(self, console: Console, run_id: str) -> None:
        self._run_id = run_id
        self._bar = Progress(
            TextColumn("[bold]run {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[shards]}"),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} pairs"),
            TextColumn("[cyan]{task.fields[rate]:,.0f} pairs/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> LiveBar:
        self._bar.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._bar.stop()

    def show(self, progress: RunProgress, pairs_per_s: float) -> None:
        shards, eta = _shards(progress), _eta(progress, pairs_per_s)
        if self._task is None:
            self._task = self._bar.add_task(
                self._run_id, total=max(progress.pairs_total, 1), shards=shards, rate=pairs_per_s, eta=eta
            )
        self._bar.update(self._task, completed=progress.pairs_done, shards=shards, rate=pairs_per_s, eta=eta)
        self._bar.refresh()


def wait_for_run(
    ledger: Ledger,
    run_id: str,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    stream: TextIO = sys.stderr,
    on_poll: Callable[[RunProgress], None] | None = None,
) -> RunProgress:
    """Poll the ledger until every shard is done or failed (or ``timeout_s`` passes) and show
    progress on ``stream``: a live bar on a terminal, one line every few seconds otherwise."""
    console = terminal_console(stream)
    display: ProgressDisplay = PlainLines(stream) if console is None else LiveBar(console, run_id)
    started = time.monotonic()
    first = ledger.progress(run_id)
    with display:
        while True:
            progress = ledger.progress(run_id)
            elapsed = time.monotonic() - started
            rate = (progress.pairs_done - first.pairs_done) / elapsed if elapsed > 0 else 0.0
            display.show(progress, rate)
            if on_poll is not None:
                on_poll(progress)
            if progress.finished or progress.paused or (timeout_s is not None and elapsed >= timeout_s):
                return progress
            time.sleep(poll_s)
