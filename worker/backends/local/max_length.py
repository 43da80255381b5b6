"""``RERANK_MAX_LENGTH`` against what a model can take."""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError
from core.settings import Settings


def configured_max_length(settings: Settings, config: Any, model: str) -> int | None:
    """``RERANK_MAX_LENGTH``, or None where it is unset. Raises ``ConfigError`` naming ``model`` (e.g.
    "cross-encoder 'org/name'") when it exceeds the positions the model's ``config`` declares."""
    if settings.max_length is None:
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and settings.max_length > positions:
        raise ConfigError(
            f"RERANK_MAX_LENGTH={settings.max_length} exceeds the {positions} positions of {model}; lower "
            "it or leave it unset to use the model's own limit"
        )
    return settings.max_length
