"""A real HTTP server on loopback that serves a sequence classifier the way vLLM's ``POST /classify``
does, for tests that hold the ``vllm-classify`` API kind against the local ``classifier`` kind on the same
weights.

Request ``{model, input}`` with ``input`` a text or a list of texts; answer ``data[{index, label, probs,
num_classes}]`` (``probs``: the softmax over the model's labels, ``label`` the most likely one's name) and
``usage``. The server loads the weights with transformers and runs each text alone, tokenized as a single
sequence with the model's special tokens and no padding; like vLLM it refuses a text longer than the
model's context instead of cutting it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from testkit.api_dialects import BadRequestError
from testkit.vllm_server import VllmServer


class ClassifyServer(VllmServer):
    """``POST /classify`` for the classifier in ``model_dir`` on ``127.0.0.1:<port>``, on the CPU in
    float32. ``requests`` counts the requests it answered with 200."""

    def __init__(self, model_dir: Path, served_model: str = "tiny") -> None:
        super().__init__(served_model, {"/classify": self.answer})
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), dtype=torch.float32, local_files_only=True
        ).eval()
        self.context: int = self.model.config.max_position_embeddings
        self.requests = 0
        # The server answers on several threads; the model runs one text at once.
        self._lock = threading.Lock()

    def probabilities(self, text: str) -> tuple[list[float], int]:
        """The label probabilities of ``text`` and the tokens it took."""
        ids: list[int] = self.tokenizer(text)["input_ids"]
        if len(ids) > self.context:
            raise BadRequestError(400, f"input of {len(ids)} tokens exceeds the model's {self.context}")
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return torch.softmax(logits.float(), dim=0).tolist(), len(ids)

    def answer(self, payload: Any) -> dict[str, Any]:
        texts = self.check_model(payload).get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
            raise BadRequestError(400, "input must be a string or a non-empty list of strings")
        labels = self.model.config.id2label
        data, tokens = [], 0
        for index, text in enumerate(texts):
            probs, used = self.probabilities(text)
            tokens += used
            best = max(range(len(probs)), key=probs.__getitem__)
            data.append({"index": index, "label": labels[best], "probs": probs, "num_classes": len(probs)})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        with self._lock:
            self.requests += 1
            request_id = f"classify-{self.requests}"
        return {
            "id": request_id,
            "object": "list",
            "created": 0,
            "model": self.served_name,
            "data": data,
            "usage": usage,
        }
