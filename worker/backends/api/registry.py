"""Which ``Provider`` speaks for each API model kind: the ``provider`` column of ``core.kinds``, each
built with its registry entry (kind, default base URL, key requirement, request limits)."""

from __future__ import annotations

from core.errors import ConfigError, ModelSpecError
from core.kinds import API_KINDS, ApiKind, resolve
from worker.backends.api.provider import Provider


def build_provider(entry: ApiKind) -> Provider:
    """The provider ``entry`` names, built with ``entry``. Raises ``ConfigError`` when the reference does
    not name a ``Provider`` class."""
    provider_class = resolve(entry.kind, "provider", entry.provider)
    if not (isinstance(provider_class, type) and issubclass(provider_class, Provider)):
        raise ConfigError(
            f"API kind {entry.kind!r}: {entry.provider!r} is not a Provider subclass; fix its entry in "
            "core/kinds.py"
        )
    return provider_class(entry)


PROVIDERS: dict[str, Provider] = {kind: build_provider(entry) for kind, entry in API_KINDS.items()}


def provider_for(kind: str) -> Provider:
    try:
        return PROVIDERS[kind]
    except KeyError:
        raise ModelSpecError(
            f"no API provider for model kind {kind!r}; use one of {', '.join(PROVIDERS)}"
        ) from None
