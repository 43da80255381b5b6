"""The producer at scale: ``scripts/submit.py`` without workers (validate, plan, write the shard inputs,
record the run, enqueue its shards) in a fresh process per corpus, timed from launch to exit, with the
process's peak resident memory from the kernel: its ``VmHWM``, read while it runs. (``wait4``'s
``ru_maxrss`` would not do: Linux carries the forking parent's peak over into the child at exec, and
the benchmark process may be large: it generates corpora and may host the S3 endpoint.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.producer_corpus import CorpusShape, write_corpus

REPO = Path(__file__).resolve().parent.parent
MODEL = "cross-encoder:bench/producer-scale"  # never loaded: no worker runs
MIB = 1 << 20
_RUN_LINE = re.compile(r"^run \S+: ([\d,]+) pairs of ([\d,]+) queries in (\d+) shard\(s\)", re.MULTILINE)


@dataclass(frozen=True)
class ProducerRun:
    """One ``submit.py`` run: its corpus, wall seconds and peak RSS, and what it recorded."""

    shape: CorpusShape
    store: str  # "local disk" or "S3 endpoint": where the corpus and the data dir were
    pairs: int
    queries: int
    shards: int
    seconds: float
    peak_rss_bytes: int

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MIB


def cached_corpus(shape: CorpusShape, scratch: Path) -> Path:
    """The corpus of ``shape`` under ``scratch``, generated on first use."""
    target = scratch / shape.name
    if not target.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        write_corpus(shape, target)
    return target


def run_producer(
    shape: CorpusShape, corpus: str, env: dict[str, str], shard_pairs: int | None, store: str = "local disk"
) -> ProducerRun:
    """Run ``submit.py CORPUS --model MODEL`` once, in a fresh process, and measure it; ``corpus`` is a
    local path or a URI."""
    command = [sys.executable, str(REPO / "scripts" / "submit.py"), str(corpus), "--model", MODEL]
    if shard_pairs:
        command += ["--shard-pairs", str(shard_pairs)]
    # Output goes to files: with pipes nobody would read while the parent waits in wait4.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        peak_rss_bytes = 0
        while process.poll() is None:
            peak_rss_bytes = max(peak_rss_bytes, _high_water_mark(process.pid))
            time.sleep(0.02)
        seconds = time.monotonic() - started
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"submit.py exited with {process.returncode} on {corpus}:\n{errors[-3000:]}")
    found = _RUN_LINE.search(errors)
    if found is None:
        raise RuntimeError(f"submit.py did not report its run:\n{errors[-3000:]}")
    pairs, queries, shards = (int(group.replace(",", "")) for group in found.groups())
    return ProducerRun(shape, store, pairs, queries, shards, seconds, peak_rss_bytes)


def _high_water_mark(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), in bytes; 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


_COLUMNS = (("store", "<12"), ("pairs", ">12"), ("files", ">5"), ("order", "<11"), ("shards", ">6"))
_COLUMNS += (("seconds", ">8"),)
_COLUMNS += (("pairs/s", ">9"), ("peak RSS MiB", ">12"))


def results_table(runs: list[ProducerRun]) -> list[str]:
    lines = [" ".join(f"{name:{spec}}" for name, spec in _COLUMNS)]
    for run in runs:
        values = (
            run.store,
            f"{run.pairs:,}",
            run.shape.files,
            "interleaved" if run.shape.interleaved else "contiguous",
            run.shards,
            f"{run.seconds:.1f}",
            f"{run.pairs_per_s:,.0f}",
            f"{run.peak_rss_mib:,.0f}",
        )
        lines.append(" ".join(f"{value:{spec}}" for value, (_, spec) in zip(values, _COLUMNS, strict=True)))
    return lines
