"""--fail-if: parsing the conditions and deciding which ones a comparison crosses."""

from __future__ import annotations

import math

import pytest

from core.errors import ConfigError
from producer.thresholds import crossed, parse_thresholds

KNOWN = ("spearman", "top10", "top1_changed", "truncated_b")


def test_conditions_name_the_failing_side_of_each_limit() -> None:
    thresholds = parse_thresholds("spearman<0.98, top10<=0.95,top1_changed>0.05", KNOWN)
    assert [str(t) for t in thresholds] == ["spearman<0.98", "top10<=0.95", "top1_changed>0.05"]
    assert crossed(thresholds, {"spearman": 0.99, "top10": 0.96, "top1_changed": 0.01}) == []
    assert crossed(thresholds, {"spearman": 0.97, "top10": 0.95, "top1_changed": 0.01}) == [
        "spearman = 0.97 (spearman<0.98)",
        "top10 = 0.95 (top10<=0.95)",
    ]


def test_an_undefined_metric_fails_its_guard() -> None:
    thresholds = parse_thresholds("spearman<0.98,truncated_b>0.1", KNOWN)
    assert crossed(thresholds, {"spearman": math.nan, "truncated_b": None}) == [
        "spearman = undefined (spearman<0.98)",
        "truncated_b = undefined (truncated_b>0.1)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spearmn<0.9", "unknown metric 'spearmn'; known: spearman, top10"),
        ("spearman=0.9", "write METRIC<VALUE or METRIC>VALUE"),
        ("spearman<abc", "write METRIC<VALUE"),
        ("spearman<1.2.3", "'1.2.3' is not a number"),
        (" , ", "no condition given"),
    ],
)
def test_bad_conditions_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_thresholds(text, KNOWN)
