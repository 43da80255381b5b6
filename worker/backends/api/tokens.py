"""Token counts before sending, for rate limits and for usage the provider does not report.

No provider's tokenizer is available offline, so a request is estimated at one token per four
characters of each text, rounded up (the usual rule of thumb for English with BPE and WordPiece
vocabularies). ``TokenCalibration`` then reconciles the estimate with what the provider reports: once
answers show that the provider counts more than the estimate, later estimates are scaled up by the
observed ratio, so the fleet's token budget is not overrun by an optimistic guess. It never scales
down, so the limiter errs on the side of the provider's limit.
"""

from __future__ import annotations

import math
import threading

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens of ``text``: ``ceil(characters / 4)``, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class TokenCalibration:
    """The running ratio of reported to estimated tokens, used to scale later estimates (never below 1)."""

    def __init__(self) -> None:
        self._estimated = 0
        self._reported = 0
        self._lock = threading.Lock()

    def observe(self, estimated: int, reported: int) -> None:
        with self._lock:
            self._estimated += estimated
            self._reported += reported

    @property
    def factor(self) -> float:
        with self._lock:
            if self._estimated == 0:
                return 1.0
            return max(1.0, self._reported / self._estimated)

    def scale(self, estimated: int) -> int:
        return math.ceil(estimated * self.factor)
