"""Batch shapes that make a pair's score independent of the batch it lands in.

In bf16 every matrix multiply rounds its float32 sums to 8 significant bits, and oneDNN chooses how to
block a multiply's reduction by the shapes it is given: the same pair, batched with other neighbours
(another padded length, another row count), can come out a rounding step apart, and six layers
amplify that to ~1e-2 in the score. With ``FixedShapes`` a batch is padded to a length that depends only
on its pairs' own lengths (the next multiple of ``length_step``: batches never mix such buckets), and to
the full row count the token budget gives that length (copies of its last row, whose results are
dropped), so every multiply a pair goes through has the same shape in any composition. Padding rows only
to a multiple of ``row_step`` pads far less and was enough on AVX512-BF16 without AMX; with AMX, oneDNN
split the reduction of a small multiply differently by its row count, and only whole-bucket shapes kept
scores identical. The load-time calibration measures which holds on the machine at hand
(``calibration.composition_drift``); without it, batches get full rows. The padding this costs (the
last batch of each length bucket in a call) shows in the benchmark's padded-per-real token ratio, next
to the largest change of a score between two compositions measured on the machine it runs on.

A bucket that holds a single pair in a call (the long ones, sparse in a shard) would still run it as
``row_step`` rows, or as the bucket's full rows; with ``single_rows`` such a batch runs as the one row
it holds. A compiled model then needs a graph of its own for one row, and whether that graph scores a
pair as the batched one does is measured too (``calibration``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FixedShapes:
    length_step: int = 16
    row_step: int = 2
    # Pad every batch to the full row count of its bucket, not just to a multiple of ``row_step``.
    full_rows: bool = True
    # A batch of one pair runs as one row, however the batches of more are padded.
    single_rows: bool = False

    def width(self, longest: int) -> int:
        """The padded length of a batch whose longest item has ``longest`` tokens."""
        return -(-max(int(longest), 1) // self.length_step) * self.length_step

    def rows(self, width: int, budget: int) -> int:
        """Rows of a full batch of ``width`` under ``budget`` padded tokens (at least one step)."""
        return max(self.row_step, budget // width // self.row_step * self.row_step)

    def padded_rows(self, rows: np.ndarray, width: int, budget: int) -> np.ndarray:
        """``rows`` of a batch of ``width`` followed by copies of its last one, up to the full row count
        under ``budget`` (every batch of a length bucket has the same shape, however many of its rows are
        real), or without ``full_rows`` up to a multiple of ``row_step``; with ``single_rows``, a batch of
        one stays one row."""
        if self.single_rows and len(rows) == 1:
            return rows
        missing = self.rows(width, budget) - len(rows) if self.full_rows else -len(rows) % self.row_step
        return np.concatenate([rows, np.repeat(rows[-1:], missing)]) if missing > 0 else rows

    def describe(self) -> str:
        rows = "full rows per length" if self.full_rows else f"rows in steps of {self.row_step}"
        single = ", a single pair as one row" if self.single_rows else ""
        return f"fixed: lengths in steps of {self.length_step}, {rows}{single}"
