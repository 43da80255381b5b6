"""Relevance from a model that grades a pair into C > 1 classes (0: not relevant, C - 1: the most).

The score is the expected grade scaled to [0, 1], ``sum(p_i * i) / (C - 1)`` with the probabilities
normalised to sum to 1, or, when one label is chosen, that label's probability. The local ``classifier``
kind, vLLM's ``/classify`` and the graded LLM judge all score this way.
"""

from __future__ import annotations

import numpy as np


def expected_grade(probabilities: np.ndarray) -> np.ndarray:
    """Per row of ``probabilities`` (pairs x classes, at least two classes, each row's sum > 0):
    the expected class index over the row normalised to sum 1, divided by the highest index."""
    classes = probabilities.shape[1]
    if classes < 2:
        raise ValueError(f"an expected grade needs at least two classes, got {classes}")
    rows = probabilities.astype(np.float64, copy=False)
    grades = np.arange(classes, dtype=np.float64)
    return (rows @ grades) / rows.sum(axis=1) / (classes - 1)


def graded_scores(probabilities: np.ndarray, label: int | None) -> np.ndarray:
    """``expected_grade``, or where ``label`` is set the probability of that class; float32."""
    if label is None:
        return expected_grade(probabilities).astype(np.float32)
    return probabilities[:, label].astype(np.float32)
