"""Graded relevance: the expected grade, pair templates, and how /classify and judge answers become it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ModelSpecError
from core.graded_relevance import expected_grade, graded_scores
from core.kinds import API_KINDS
from core.model_spec import ModelSpec
from core.pair_template import pair_template
from worker.backends.api.llm_judge import graded_relevance, judge_messages
from worker.backends.api.provider import MalformedAnswerError
from worker.backends.api.registry import provider_for
from worker.backends.api.vllm_classify import VllmClassifyProvider


def test_the_expected_grade_is_scaled_to_one_and_normalised() -> None:
    probabilities = np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0.25, 0.25, 0.25, 0.25], [0, 2.0, 2.0, 0]])
    np.testing.assert_allclose(expected_grade(probabilities), [0, 1, 0.5, 0.5])
    np.testing.assert_allclose(graded_scores(probabilities, 1), [0, 0, 0.25, 2.0])
    with pytest.raises(ValueError, match="at least two classes"):
        expected_grade(np.ones((2, 1)))


def test_templates_are_presets_or_format_strings_with_both_fields() -> None:
    plain = pair_template(ModelSpec.parse("vllm-classify:m?template=plain"))
    assert plain is not None and plain.format("q", "d") == "query: q document: d"
    custom = pair_template(ModelSpec.parse("vllm-classify:m?template=Q {query} D {document}"))
    assert custom is not None and custom.format("{x}", "d") == "Q {x} D d"
    assert pair_template(ModelSpec.parse("vllm-classify:m")) is None
    for bad in ("{query}", "{query} {document} {extra}", "{query {document}"):
        with pytest.raises(ModelSpecError, match=r"template"):
            pair_template(ModelSpec.parse(f"vllm-classify:m?template={bad}"))


def classify_answer(rows: list[list[float]]) -> dict[str, object]:
    data = [
        {"index": i, "label": "x", "probs": probs, "num_classes": len(probs)} for i, probs in enumerate(rows)
    ]
    return {"data": data[::-1], "usage": {"prompt_tokens": 9, "total_tokens": 9}}


def test_a_classify_answer_becomes_the_expected_label_or_one_labels_probability() -> None:
    rows = [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]
    expected = VllmClassifyProvider(API_KINDS["vllm-classify"], ModelSpec.parse("vllm-classify:m"))
    answer = expected.parse(classify_answer(rows), 2)
    np.testing.assert_allclose(answer.scores, [2.0 / 3, 0.6 / 3], rtol=1e-6)
    assert answer.tokens == 9
    body = expected.body("m", "q", ["a", "b"], API_KINDS["vllm-classify"].limits)
    assert body == {"model": "m", "input": ["query: q document: a", "query: q document: b"]}
    third = provider_for(ModelSpec.parse("vllm-classify:m?label=3"))
    np.testing.assert_allclose(third.parse(classify_answer(rows), 2).scores, [0.4, 0.1], rtol=1e-6)
    out_of_range = provider_for(ModelSpec.parse("vllm-classify:m?label=4"))
    with pytest.raises(MalformedAnswerError, match=r"option label=4 is out of range: .* 4 labels"):
        out_of_range.parse(classify_answer(rows), 2)
    with pytest.raises(MalformedAnswerError, match="use the vllm-score kind"):
        expected.parse(classify_answer([[1.0], [1.0]]), 2)


def test_a_graded_judge_reads_only_the_digits_of_its_grades() -> None:
    top = [
        {"token": "3", "logprob": math.log(0.3)},
        {"token": " 3", "logprob": math.log(0.1)},
        {"token": "1", "logprob": math.log(0.2)},
        {"token": "4", "logprob": math.log(0.3)},  # past the top grade of four classes
        {"token": "Maybe", "logprob": math.log(0.1)},
    ]
    assert graded_relevance(top, 4) == pytest.approx((0.4 * 3 + 0.2 * 1) / 0.6 / 3)
    assert graded_relevance([{"token": "yes", "logprob": 0.0}], 4) is None
    assert "from 0 (not relevant) to 3" in judge_messages("q", "d", 4)[-1]["content"]
    assert "yes or no" in judge_messages("q", "d")[-1]["content"]
