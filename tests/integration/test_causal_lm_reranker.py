"""The causal-LM yes/no reranker (kind ``causal-lm``) on a tiny Qwen3 model: its scores against P(yes)
computed directly with transformers, one pair at a time without padding, and against the same model
served the way vLLM serves it, through the ``vllm-score`` API kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import ConfigError, ModelLoadError, ModelSpecError
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.model_factory import build_tiny_qwen3_reranker
from testkit.model_server import VllmModelServer
from worker.backends import load_reranker
from worker.backends.api.reranker import ApiReranker
from worker.backends.base import Reranker

TOLERANCE = 1e-4
# The tiny model has 1024 positions, so with RERANK_MAX_LENGTH unset a prompt holds 1024 tokens.
CONTEXT = 1024
# A small budget: one call runs many batches of different widths.
TOKEN_BUDGET = 512

# The prompts as Qwen3-Reranker's model card and mxbai-rerank-v2's reference code write them.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_SUFFIX = (
    "\nYou are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your "
    "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def qwen3_prompt(query: str, document: str, instruction: str = QWEN3_INSTRUCTION) -> str:
    return f"{QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}{QWEN3_SUFFIX}"


def mxbai_prompt(query: str, document: str, instruction: str | None = None) -> str:
    head = f"instruction: {instruction}\n" if instruction else ""
    return f"{MXBAI_PREFIX}{head}query: {query}\ndocument: {document}{MXBAI_SUFFIX}"


def make_pairs() -> list[tuple[str, str]]:
    """A few dozen pairs from a few bytes to past the model's context, with duplicates and unicode."""
    rng = np.random.default_rng(7)
    words = ["cat", "yes", "no", "river", "über", "東京", "passport", "engine", "🚀", "notebook", "bread"]
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(6)]
    pairs = [
        (queries[index % len(queries)], " ".join(rng.choice(words, size=int(rng.integers(0, 80)))))
        for index in range(34)
    ]
    long_document = " ".join(f"paragraph {index} about mountains" for index in range(80))  # ~2,400 bytes
    pairs += [(queries[0], long_document), (queries[1], long_document + " and rivers"), ("", "no query")]
    pairs.append(pairs[3])  # a duplicate
    return pairs


PAIRS = make_pairs()
QUERIES = [query for query, _ in PAIRS]
TEXTS = [text for _, text in PAIRS]


class Reference:
    """P(label yes) over {yes, no} computed directly with transformers: the whole prompt string tokenized
    in one call, one pair at a time, no padding. A prompt longer than ``max_length`` loses the tokens just
    before its suffix (the end of the document)."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def token(self, label: str) -> int:
        ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, label
        token: int = ids[0]
        return token

    def scores(
        self, prompts: list[str], suffix: str, yes: str, no: str, max_length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, prompt lengths and whether each prompt was cut."""
        suffix_length = len(self.tokenizer(suffix, add_special_tokens=False)["input_ids"])
        labels = [self.token(no), self.token(yes)]
        scores, lengths, cut = [], [], []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            cut.append(len(ids) > max_length)
            if len(ids) > max_length:
                ids = ids[: max_length - suffix_length] + ids[-suffix_length:]
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1, labels]
            scores.append(torch.log_softmax(logits, dim=0)[1].exp().item())
            lengths.append(len(ids))
        return np.array(scores), np.array(lengths), np.array(cut)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("tiny-qwen3"), seed=5)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Reference:
    return Reference(model_dir)


def cpu_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"device": "cpu", "dtype": "float32", "token_budget": TOKEN_BUDGET}
    return Settings(**(values | overrides))


def load_local(model_dir: Path, options: str = "", **settings: Any) -> Reranker:
    return load_reranker(ModelSpec.parse(f"causal-lm:{model_dir}{options}"), cpu_settings(**settings))


@pytest.mark.parametrize("max_length", [None, 600])
def test_qwen3_scores_match_transformers(
    model_dir: Path, reference: Reference, max_length: int | None
) -> None:
    expected, lengths, cut = reference.scores(
        [qwen3_prompt(query, text) for query, text in PAIRS], QWEN3_SUFFIX, "yes", "no", max_length or CONTEXT
    )
    reranker = load_local(model_dir, max_length=max_length)

    result = reranker.score(QUERIES, TEXTS)

    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert result.pair_tokens is not None and result.truncated is not None
    np.testing.assert_array_equal(result.pair_tokens, lengths)
    np.testing.assert_array_equal(result.truncated, cut)
    assert 2 <= cut.sum() < len(PAIRS)  # some prompts were cut to fit, most were not
    assert result.tokens > 4 * TOKEN_BUDGET  # several batches ran
    # The random model is not degenerate: P(yes) spreads over the pairs.
    assert np.ptp(result.scores) > 0.3
    assert reranker.describe()["max_length"] == str(max_length or CONTEXT)


def test_mxbai_template_with_an_instruction(model_dir: Path, reference: Reference) -> None:
    instruction = "Find passages about travel"
    expected, _, _ = reference.scores(
        [mxbai_prompt(query, text, instruction) for query, text in PAIRS], MXBAI_SUFFIX, "1", "0", CONTEXT
    )
    reranker = load_local(model_dir, f"?template=mxbai&instruction={instruction}")

    result = reranker.score(QUERIES, TEXTS)

    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert np.ptp(result.scores) > 0.1
    assert reranker.describe()["template"] == "mxbai"


def test_label_options_choose_the_verdict_tokens(model_dir: Path, reference: Reference) -> None:
    pairs = PAIRS[:12]
    expected, _, _ = reference.scores(
        [qwen3_prompt(query, text, "rank") for query, text in pairs], QWEN3_SUFFIX, "1", "0", CONTEXT
    )
    reranker = load_local(model_dir, "?yes_token=1&no_token=0&instruction=rank")

    result = reranker.score([query for query, _ in pairs], [text for _, text in pairs])

    np.testing.assert_allclose(result.scores, expected, atol=TOLERANCE, rtol=0)
    assert np.ptp(result.scores) > 0.1


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ("?yes_token=maybe", ModelLoadError, "'maybe'"),
        ("?no_token=<|im_start|>x", ModelLoadError, "'<|im_start|>x'"),
        ("?yes_token=no", ModelLoadError, "same token"),
        ("?template=gemma", ModelSpecError, "'gemma'"),
    ],
)
def test_bad_options_fail_to_load_naming_the_problem(
    model_dir: Path, options: str, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named.replace("|", r"\|")):
        load_local(model_dir, options)


@pytest.mark.parametrize(("max_length", "named"), [(2048, "1024 positions"), (100, "no room for the pair")])
def test_a_max_length_the_model_cannot_take_is_refused(model_dir: Path, max_length: int, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_local(model_dir, max_length=max_length)


def test_vllm_score_api_agrees_with_the_local_backend(
    model_dir: Path, redis_url: str, redis_prefix: str
) -> None:
    # vLLM refuses prompts past the model's context instead of cutting them: only pairs that fit.
    local = load_local(model_dir).score(QUERIES, TEXTS)
    assert local.truncated is not None and local.pair_tokens is not None
    fits = ~local.truncated
    queries = [query for query, keep in zip(QUERIES, fits, strict=True) if keep]
    texts = [text for text, keep in zip(TEXTS, fits, strict=True) if keep]
    with VllmModelServer(model_dir, "tiny-qwen3") as server:
        settings = cpu_settings(
            broker_url=redis_url,
            redis_key_prefix=redis_prefix,
            vllm_score_base_url=server.url,
            api_max_documents=4,  # several requests per query
            api_backoff_max_s=0.05,
        )
        api = load_reranker(ModelSpec.parse("vllm-score:tiny-qwen3"), settings)
        assert isinstance(api, ApiReranker)
        try:
            served = api.score(queries, texts)
        finally:
            api.close()

    np.testing.assert_allclose(served.scores, local.scores[fits], atol=TOLERANCE, rtol=0)
    assert server.requests > len(set(queries))
    assert sum(record.tokens for record in served.requests) == int(local.pair_tokens[fits].sum())
