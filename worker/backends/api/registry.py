"""Which ``Provider`` speaks for each API model kind: the ``provider`` column of ``core.kinds``."""

from __future__ import annotations

import importlib

from core.errors import ModelSpecError
from core.kinds import API_KINDS
from worker.backends.api.provider import Provider


def _instantiate(reference: str) -> Provider:
    module_name, _, class_name = reference.partition(":")
    provider: Provider = getattr(importlib.import_module(module_name), class_name)()
    return provider


PROVIDERS: dict[str, Provider] = {kind: _instantiate(entry.provider) for kind, entry in API_KINDS.items()}


def provider_for(kind: str) -> Provider:
    try:
        return PROVIDERS[kind]
    except KeyError:
        raise ModelSpecError(
            f"no API provider for model kind {kind!r}; use one of {', '.join(PROVIDERS)}"
        ) from None
