"""How a request proves who sends it. ``RequestAuth`` is what the sender needs; ``Credentials`` is the
API-key kind of it: a key read from ``RERANK_<PROVIDER>_API_KEY`` or the file
``RERANK_<PROVIDER>_API_KEY_FILE``, held as a ``SecretStr``, named elsewhere only by a hash, and scrubbed
from any text that leaves the worker. (AWS request signing is ``aws_auth.AwsSignature``.)"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr

from core.errors import ConfigError
from core.settings import ApiEndpoint

REDACTED = "[redacted]"


class RequestAuth(Protocol):
    """Where requests of one API kind go and how they are authenticated."""

    @property
    def endpoint_url(self) -> str:
        """The URL every request is posted to."""
        ...

    @property
    def fingerprint(self) -> str:
        """Names the fleet's shared rate-limit budget in Redis without revealing any secret."""
        ...

    def headers(self, url: str, body: bytes) -> dict[str, str]:
        """The authentication headers of a request of ``body`` to ``url``."""
        ...

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        ...


def endpoint_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True)
class Credentials:
    """The key of one provider (or None for servers without one), the base URL it is used with and the
    endpoint path (the provider's own unless ``RERANK_<KIND>_PATH`` sets one)."""

    kind: str
    base_url: str
    key: SecretStr | None
    path: str = ""

    @property
    def endpoint_url(self) -> str:
        return endpoint_url(self.base_url, self.path)

    @property
    def fingerprint(self) -> str:
        """Names the rate-limit budget in Redis: a hash of the key, or of the URL for keyless servers,
        so two keys (or two servers) get two budgets and the key itself is never written."""
        material = self.key.get_secret_value() if self.key is not None else f"no key at {self.base_url}"
        return hashlib.sha256(f"{self.kind}\0{material}".encode()).hexdigest()[:20]

    def headers(self, url: str = "", body: bytes = b"") -> dict[str, str]:
        if self.key is None:
            return {}
        return {"Authorization": f"Bearer {self.key.get_secret_value()}"}

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``[redacted]``."""
        if self.key is None:
            return text
        secret = self.key.get_secret_value()
        return text.replace(secret, REDACTED) if secret else text


def load_credentials(endpoint: ApiEndpoint, path: str = "") -> Credentials:
    """The key of ``endpoint`` from its variable or its file, for requests to ``path`` after its base
    URL. Raises ``ConfigError`` when both are set, the file cannot be read or is
    empty, or the API requires a key and none is set."""
    variable, file_variable = endpoint.variable("api_key"), endpoint.variable("api_key_file")
    key = endpoint.api_key
    key_file = endpoint.api_key_file
    if key is not None and key_file is not None:
        raise ConfigError(f"both {variable} and {file_variable} are set; keep one")
    if key_file is not None:
        try:
            content = key_file.expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{file_variable}: cannot read {key_file}: {exc.strerror}") from None
        if not content:
            raise ConfigError(f"{file_variable}: {key_file} is empty")
        key = SecretStr(content)
    if key is not None and not key.get_secret_value().strip():
        key = None
    if key is None and endpoint.requires_key:
        raise ConfigError(f"the {endpoint.kind} API needs a key: set {variable} or {file_variable}")
    return Credentials(kind=endpoint.kind, base_url=endpoint.base_url, key=key, path=path)
