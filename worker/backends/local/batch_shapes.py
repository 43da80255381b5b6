"""Batch shapes that make a pair's score independent of the batch it lands in.

In bf16 every matrix multiply rounds its float32 sums to 8 significant bits, and oneDNN chooses how to
block a multiply's reduction by the shapes it is given: the same pair, batched with other neighbours
(another padded length, another row count), can come out a rounding step apart, and six layers
amplify that to ~1e-2 in the score. With ``FixedShapes`` a batch is padded to a length that depends only
on its pairs' own lengths (the next multiple of ``length_step``: batches never mix such buckets), and to
a row count that is a multiple of ``row_step`` (a copy of its last row, whose result is dropped), so the
multiplies a pair goes through are blocked the same way in any composition. Which steps suffice was
found by measurement (an odd row count alone still moved scores); the benchmark measures it again on
every machine it runs on.
``scripts/bench.py`` prints the largest change of a score between two compositions, and what the
padding costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FixedShapes:
    length_step: int = 16
    row_step: int = 2

    def width(self, longest: int) -> int:
        """The padded length of a batch whose longest item has ``longest`` tokens."""
        return -(-max(int(longest), 1) // self.length_step) * self.length_step

    def padded_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` followed by copies of its last one, up to a multiple of ``row_step``."""
        missing = -len(rows) % self.row_step
        return np.concatenate([rows, np.repeat(rows[-1:], missing)]) if missing else rows

    def describe(self) -> str:
        return f"fixed: lengths in steps of {self.length_step}, rows in steps of {self.row_step}"
