"""How busy the GPU was while something ran, sampled from ``nvidia-smi``.

``nvidia-smi``'s utilization is the share of its last sample period in which at least one kernel ran, so
the mean of samples taken every ``SAMPLE_MS`` over a run is the share of the run's wall time the GPU was
busy. The first and last samples straddle the run's edges; a run shorter than a few periods gets a
rough figure, which ``GpuBusy.samples`` tells.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SAMPLE_MS = 100


@dataclass(frozen=True)
class GpuBusy:
    samples: int
    mean_utilization: float  # 0..1 over the samples
    peak_memory_mib: float

    def line(self) -> str:
        return (
            f"GPU busy {self.mean_utilization:.0%} of the wall time (nvidia-smi utilization, {self.samples} "
            f"samples every {SAMPLE_MS} ms), peak memory {self.peak_memory_mib:.0f} MiB"
        )


def parse_samples(text: str) -> GpuBusy:
    """``utilization.gpu, memory.used`` lines (no header, no units) of GPU 0 as one figure."""
    utilizations, memories = [], []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            continue
        try:
            utilization, memory = float(fields[0]), float(fields[1])
        except ValueError:  # "[N/A]" or a partial last line
            continue
        utilizations.append(utilization)
        memories.append(memory)
    if not utilizations:
        return GpuBusy(0, float("nan"), float("nan"))
    return GpuBusy(len(utilizations), sum(utilizations) / len(utilizations) / 100.0, max(memories))


class GpuBusySampler:
    """Samples GPU ``index``'s utilization from entering to leaving; ``result`` after the block."""

    def __init__(self, index: int = 0, nvidia_smi: str | None = None) -> None:
        self.command = nvidia_smi or shutil.which("nvidia-smi")
        self.index = index
        self.result: GpuBusy | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output = Path(tempfile.mkstemp(prefix="gpu-busy-", suffix=".csv")[1])

    def __enter__(self) -> GpuBusySampler:
        if self.command is not None:
            with open(self._output, "wb") as output:
                self._process = subprocess.Popen(
                    [
                        self.command,
                        f"--id={self.index}",
                        "--query-gpu=utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                        f"--loop-ms={SAMPLE_MS}",
                    ],
                    stdout=output,
                    stderr=subprocess.DEVNULL,
                )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self.result = parse_samples(self._output.read_text(errors="replace"))
        self._output.unlink(missing_ok=True)
