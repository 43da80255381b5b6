"""A real HTTP server on loopback that serves a local model the way vLLM serves it, for tests that hold an
API kind against a local backend on the same weights.

vLLM serves a causal-LM yes/no reranker (Qwen3-Reranker, mxbai-rerank-v2) converted to a classifier
whose one score is P(yes) over {yes, no} at the prompt's last position, and answers ``POST /score``
(``{model, text_1, text_2}``) with ``data[{index, score, object}]`` and ``usage``. This server loads the
weights with transformers and computes each pair alone: the whole prompt string (``yes_no_prompts``)
tokenized in one call, no padding, the [no, yes] logits of the last position. Like vLLM it refuses a
prompt longer than the model's context instead of cutting it.

The serving itself, a table of routes, is ``vllm_server.VllmServer``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from testkit.api_dialects import BadRequestError
from testkit.vllm_server import VllmServer
from worker.backends.local.yes_no_prompts import QWEN3, PromptTemplate


class YesNoScorer:
    """A causal-LM yes/no reranker on the CPU in float32: P(yes) over {yes, no} of one prompt at a time."""

    def __init__(self, model_dir: Path, template: PromptTemplate, instruction: str | None) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32, local_files_only=True
        ).eval()
        self.template = template
        self.instruction = instruction or template.default_instruction
        self.labels = [self._single_token(template.no_token), self._single_token(template.yes_token)]
        self.context: int = self.model.config.max_position_embeddings
        # The server answers on several threads; the model runs one pair at a time.
        self._lock = threading.Lock()

    def prompt_ids(self, query: str, document: str) -> list[int]:
        prompt = self.template.prompt(query, document, self.instruction)
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids

    def probability(self, ids: list[int]) -> float:
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1, self.labels]
            return float(torch.log_softmax(logits.double(), dim=0)[1].exp())

    def _single_token(self, label: str) -> int:
        ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"label {label!r} is {len(ids)} tokens of the served tokenizer, not one")
        token: int = ids[0]
        return token


class VllmModelServer(VllmServer):
    """``model_dir`` served as ``served_name`` on ``127.0.0.1:<port>``; use it as a context manager."""

    def __init__(
        self,
        model_dir: Path,
        served_name: str,
        template: PromptTemplate = QWEN3,
        instruction: str | None = None,
    ) -> None:
        super().__init__(served_name, {"/score": self.score})
        self.scorer = YesNoScorer(model_dir, template, instruction)
        self.requests = 0
        self._count_lock = threading.Lock()

    # -- routes -----------------------------------------------------------------------------------

    def score(self, payload: Any) -> Any:
        """vLLM's ``/score``: text_1 one query (or one per text_2), text_2 one document or a list."""
        payload = self.check_model(payload)
        queries = _texts(payload, "text_1")
        documents = _texts(payload, "text_2")
        if len(queries) == 1:
            queries = queries * len(documents)
        if len(queries) != len(documents):
            raise BadRequestError(400, "text_1 must be one text or as many texts as text_2")
        prompts = [self.scorer.prompt_ids(query, doc) for query, doc in zip(queries, documents, strict=True)]
        for ids in prompts:
            if len(ids) > self.scorer.context:
                raise BadRequestError(
                    400,
                    f"This model's maximum context length is {self.scorer.context} tokens. However, you "
                    f"requested {len(ids)} tokens in the input for score. Please reduce the length of the "
                    "input.",
                )
        data = [
            {"index": index, "object": "score", "score": self.scorer.probability(ids)}
            for index, ids in enumerate(prompts)
        ]
        tokens = sum(map(len, prompts))
        with self._count_lock:
            self.requests += 1
            request_id = f"score-{self.requests}"
        return {
            "id": request_id,
            "object": "list",
            "created": int(time.time()),
            "model": self.served_name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }


def _texts(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    raise BadRequestError(400, f"{key} must be a string or a non-empty list of strings")
