"""The nightly guard's conditions: ``--fail-if "spearman<0.98,top10<0.95"`` names the values of a
comparison's metrics that make it fail."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from core.errors import ConfigError

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Threshold:
    metric: str
    comparison: str
    limit: float

    def crossed_by(self, value: float | int | None) -> bool:
        """True when ``value`` meets the failing condition; an undefined value (no pairs in common, a
        truncation rate the outputs do not record) fails too, since it cannot show the night is fine."""
        if value is None or math.isnan(value):
            return True
        return _OPERATORS[self.comparison](float(value), self.limit)

    def __str__(self) -> str:
        return f"{self.metric}{self.comparison}{self.limit:g}"


def parse_thresholds(text: str, known_metrics: Collection[str]) -> list[Threshold]:
    """Comma-separated ``METRIC<VALUE`` / ``METRIC>VALUE`` (or ``<=``, ``>=``) conditions."""
    thresholds = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _CONDITION.match(part)
        if match is None:
            raise ConfigError(
                f"--fail-if {part.strip()!r}: write METRIC<VALUE or METRIC>VALUE, e.g. spearman<0.98"
            )
        metric, comparison, limit = match.groups()
        if metric not in known_metrics:
            raise ConfigError(
                f"--fail-if: unknown metric {metric!r}; known: {', '.join(sorted(known_metrics))}"
            )
        try:
            thresholds.append(Threshold(metric, comparison, float(limit)))
        except ValueError:
            raise ConfigError(f"--fail-if {part.strip()!r}: {limit!r} is not a number") from None
    if not thresholds:
        raise ConfigError("--fail-if: no condition given")
    return thresholds


def crossed(thresholds: Sequence[Threshold], metrics: Mapping[str, float | int | None]) -> list[str]:
    """One line per crossed threshold, naming the metric's value and the limit."""
    return [
        f"{threshold.metric} = {_shown(metrics[threshold.metric])} ({threshold})"
        for threshold in thresholds
        if threshold.crossed_by(metrics[threshold.metric])
    ]


def _shown(value: float | int | None) -> str:
    return (
        "undefined" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"
    )
