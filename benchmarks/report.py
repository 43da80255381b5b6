"""Tables and verdict lines of the benchmark, as plain text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.agreement import TOP_K, Agreement
from benchmarks.contender import ContenderRun
from benchmarks.oom_demo import OomDemo

MIB = 1024 * 1024


@dataclass(frozen=True)
class ContenderRow:
    label: str
    run: ContenderRun
    tokens: int
    agreement: Agreement | None  # None for the reference itself

    @property
    def pairs_per_s(self) -> float:
        return self.run.pairs / self.run.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.run.seconds


def contender_table(rows: Sequence[ContenderRow], ours_pairs_per_s: float) -> str:
    header = (
        f"{'contender':<44} {'dtype':<9} {'pairs/s':>8} {'tokens/s':>9} {'ours is':>8} {'load s':>7} "
        f"{'RSS base/peak MiB':>18} {'GPU MiB':>8}  {'Spearman mean/min':<18} {f'top-{TOP_K} same':>11} "
        f"{'max |diff|':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        run = row.run
        gpu = "-" if run.gpu_peak_bytes is None else f"{run.gpu_peak_bytes / MIB:.0f}"
        if row.agreement is None:
            agreement = f"{'(float32 reference)':<18} {'':>11} {'':>10}"
        else:
            agreement = (
                f"{row.agreement.spearman_mean:.5f}/{row.agreement.spearman_min:.4f}{'':<4} "
                f"{row.agreement.top_k_same:>10.1%} {row.agreement.max_abs_diff:>10.2e}"
            )
        lines.append(
            f"{row.label:<44} {run.dtype:<9} {row.pairs_per_s:>8.{1 if row.pairs_per_s >= 10 else 2}f} "
            f"{row.tokens_per_s:>9.0f} "
            f"{ours_pairs_per_s / row.pairs_per_s:>7.2f}x {run.load_seconds:>7.1f} "
            f"{f'{run.baseline_rss_bytes / MIB:.0f} / {run.peak_rss_bytes / MIB:.0f}':>18} {gpu:>8}  "
            f"{agreement}"
        )
    return "\n".join(lines)


def oom_lines(demo: OomDemo) -> list[str]:
    if demo.skipped is not None:
        return [f"out-of-memory adaptation: skipped: {demo.skipped}"]
    lines = [
        f"out-of-memory adaptation: GPU memory capped at {demo.memory_cap_bytes / MIB:.0f} MiB, "
        f"{demo.pairs} pairs in {demo.seconds:.1f}s, {demo.oom_retries} out-of-memory retries; "
        "token budget over time:"
    ]
    lines += [f"  {point.seconds:8.2f}s  {point.budget:>9}  {point.reason}" for point in demo.history]
    return lines


def verdict(name: str, value: str, met: bool) -> str:
    return f"  {name:<58} {value:>14}  {'met' if met else 'MISSED'}"
