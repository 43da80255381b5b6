from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ModelSpecError
from core.model_spec import ModelSpec
from testkit.model_factory import build_tiny_cross_encoder, build_tiny_embedding_model


def test_explicit_kinds() -> None:
    spec = ModelSpec.parse("flag:BAAI/bge-reranker-v2-m3")
    assert (spec.kind, spec.name, str(spec)) == (
        "flag",
        "BAAI/bge-reranker-v2-m3",
        "flag:BAAI/bge-reranker-v2-m3",
    )
    assert ModelSpec.parse("cross-encoder/ms-marco-MiniLM-L6-v2").kind == "cross-encoder"


def test_packaged_minilm_is_an_offline_embedding_model() -> None:
    spec = ModelSpec.parse("all-MiniLM-L6-v2")
    assert spec.kind == "embedding"
    assert (Path(spec.resolve_path()) / "config.json").is_file()


def test_local_directories_are_detected(tmp_path: Path) -> None:
    cross = build_tiny_cross_encoder(tmp_path / "ce")
    bi = build_tiny_embedding_model(tmp_path / "bi")
    assert ModelSpec.parse(str(cross)).kind == "cross-encoder"
    assert ModelSpec.parse(str(bi)).kind == "embedding"


def test_queues_differ_per_model_and_are_stable() -> None:
    a = ModelSpec.parse("cross-encoder:org/a")
    assert a.queue == ModelSpec.parse("cross-encoder:org/a").queue
    assert a.queue != ModelSpec.parse("flag:org/a").queue
    assert a.queue.startswith("rerank.cross-encoder.a.")


@pytest.mark.parametrize("text", ["", "bogus:model", "flag:"])
def test_bad_specs_are_refused(text: str) -> None:
    with pytest.raises(ModelSpecError):
        ModelSpec.parse(text)


def test_options_follow_the_model_and_are_checked() -> None:
    spec = ModelSpec.parse("llm-judge:gpt-4o-mini?num_classes=4")
    assert (spec.name, spec.options, spec.int_option("num_classes", 2)) == (
        "gpt-4o-mini",
        (("num_classes", "4"),),
        4,
    )
    assert str(spec) == "llm-judge:gpt-4o-mini?num_classes=4"
    assert ModelSpec.parse(str(spec)) == spec
    assert spec.queue != ModelSpec.parse("llm-judge:gpt-4o-mini").queue
    with pytest.raises(ModelSpecError, match="has no option 'bogus'"):
        ModelSpec.parse("llm-judge:gpt-4o-mini?bogus=1")
    with pytest.raises(ModelSpecError, match="must be an integer >= 2"):
        ModelSpec.parse("llm-judge:m?num_classes=1").int_option("num_classes", 2)
    with pytest.raises(ModelSpecError, match="name=value"):
        ModelSpec.parse("llm-judge:m?num_classes")


def test_a_multi_label_classifier_directory_is_detected(tmp_path: Path) -> None:
    from testkit.model_factory import build_tiny_classifier

    classifier = build_tiny_classifier(tmp_path / "graded", num_labels=4)
    assert ModelSpec.parse(str(classifier)).kind == "classifier"
    assert ModelSpec.parse(f"{classifier}?label=2").options == (("label", "2"),)
