"""Which ``Provider`` speaks for each API model kind: the ``provider`` column of ``core.kinds``, each
built with its registry entry (kind, default base URL, key requirement, request limits) and, for a
worker, the model spec it serves (its options)."""

from __future__ import annotations

from core.errors import ConfigError, ModelSpecError
from core.kinds import API_KINDS, ApiKind, resolve
from core.model_spec import ModelSpec
from worker.backends.api.provider import Provider


def build_provider(entry: ApiKind, spec: ModelSpec | None = None) -> Provider:
    """The provider ``entry`` names, built with ``entry`` and ``spec``. Raises ``ConfigError`` when the
    reference does not name a ``Provider`` class, ``ModelSpecError`` for a bad option of ``spec``."""
    provider_class = resolve(entry.kind, "provider", entry.provider)
    if not (isinstance(provider_class, type) and issubclass(provider_class, Provider)):
        raise ConfigError(
            f"API kind {entry.kind!r}: {entry.provider!r} is not a Provider subclass; fix its entry in "
            "core/kinds.py"
        )
    return provider_class(entry, spec)


# Each kind's provider built from its entry alone: its path, score meaning and defaults.
PROVIDERS: dict[str, Provider] = {kind: build_provider(entry) for kind, entry in API_KINDS.items()}


def provider_for(spec: ModelSpec) -> Provider:
    """The provider that serves ``spec``, built with its options."""
    entry = API_KINDS.get(spec.kind)
    if entry is None:
        raise ModelSpecError(
            f"no API provider for model kind {spec.kind!r}; use one of {', '.join(PROVIDERS)}"
        )
    return build_provider(entry, spec)
