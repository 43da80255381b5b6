"""The API part of the kinds registry: entries are checked when declared, and a provider is built from
its entry alone (the end-to-end proof is tests/integration/test_api_new_provider.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.kinds import API_KINDS, ApiKind, ProviderLimits
from worker.backends.api.registry import PROVIDERS, build_provider

LIMITS = ProviderLimits(max_documents=4, max_tokens_per_document=256)
PROVIDER_MODULE = """
from worker.backends.api.tei import TeiProvider


class AcmeProvider(TeiProvider):
    score_meaning = "score per text (Acme)"


class NotAProvider:
    pass
"""


def entry(**changes: object) -> ApiKind:
    fields: dict[str, object] = {
        "kind": "acme",
        "provider": "acme_unit_provider:AcmeProvider",
        "summary": "Acme rerank",
        "base_url": "https://acme.test",
        "limits": LIMITS,
        "score_scale": "probability",
        "requires_key": True,
    }
    return ApiKind(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"kind": "Acme"}, "lower-case letters and digits"),
        ({"kind": "acme_rerank"}, "lower-case letters and digits"),
        ({"kind": "acme-"}, "lower-case letters and digits"),
        ({"provider": "acme_unit_provider.AcmeProvider"}, "must be 'module:Class'"),
        ({"base_url": "acme.test"}, "must be an http"),
    ],
)
def test_a_bad_entry_is_refused_when_declared(changes: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        entry(**changes)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProviderLimits(max_documents=0, max_tokens_per_document=10)
    with pytest.raises(ValueError, match="at least 1"):
        ProviderLimits(max_documents=1, max_tokens_per_document=10, max_tokens_per_request=0)


def test_a_provider_is_built_from_its_entry_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_unit_provider.py").write_text(PROVIDER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = build_provider(entry())
    assert (provider.kind, provider.defaults, provider.requires_key) == ("acme", LIMITS, True)
    assert provider.path == "/rerank"
    with pytest.raises(ConfigError, match=r"'acme_unit_provider:NotAProvider' is not a Provider subclass"):
        build_provider(entry(provider="acme_unit_provider:NotAProvider"))
    with pytest.raises(ConfigError, match=r"names provider 'acme_missing:X', which cannot be imported"):
        build_provider(entry(provider="acme_missing:X"))


def test_every_registered_provider_speaks_for_its_own_entry() -> None:
    assert list(PROVIDERS) == list(API_KINDS)
    for kind, provider in PROVIDERS.items():
        assert provider.entry is API_KINDS[kind] and provider.kind == kind
