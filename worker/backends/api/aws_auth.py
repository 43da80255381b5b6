"""AWS Signature Version 4 for APIs on AWS (Bedrock): every request is signed by botocore's ``SigV4Auth``
with credentials from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared files, container and instance roles), refreshed by
botocore when they expire. The region comes from the same chain (``AWS_REGION``, ``AWS_DEFAULT_REGION``,
the profile's ``region``); a ``{region}`` in the base URL is filled in with it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError
from core.settings import ApiEndpoint
from worker.backends.api.credentials import REDACTED, endpoint_url


@dataclass(frozen=True)
class AwsSignature:
    """Signs requests for ``service`` in ``region`` with the chain's credentials (``botocore``'s
    ``Credentials``, which refresh themselves for roles)."""

    kind: str
    service: str
    region: str
    base_url: str
    path: str
    model: str
    credentials: Any

    @property
    def endpoint_url(self) -> str:
        return endpoint_url(self.base_url.replace("{region}", self.region), self.path)

    @property
    def fingerprint(self) -> str:
        """One budget per identity, region and model: Bedrock's quotas are per account, region and model.
        A long-term key is named by its access key id; temporary credentials (a role, a session) change
        their key id as they rotate, so they are named by where they come from (botocore's ``method``,
        e.g. ``container-role``), which every worker of the fleet shares. No secret enters the hash."""
        frozen = self.credentials.get_frozen_credentials()
        identity = frozen.access_key if frozen.token is None else f"temporary via {self.credentials.method}"
        material = f"{self.kind}\0{identity}\0{self.region}\0{self.model}"
        return hashlib.sha256(material.encode()).hexdigest()[:20]

    def headers(self, url: str, body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(self.credentials.get_frozen_credentials(), self.service, self.region).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}

    def scrub(self, text: str) -> str:
        frozen = self.credentials.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token, frozen.access_key):
            if secret:
                text = text.replace(secret, REDACTED)
        return text


def load_aws_signature(endpoint: ApiEndpoint, service: str, path: str, model: str) -> AwsSignature:
    """Signing for ``endpoint`` with the AWS chain's credentials and region. Raises ``ConfigError`` when
    the chain has no credentials or no region, naming the variables that set them."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.Session()
    try:
        credentials = session.get_credentials()
        region = os.environ.get("AWS_REGION") or session.get_config_variable("region")
    except BotoCoreError as exc:
        raise ConfigError(
            f"the {endpoint.kind} API signs with AWS credentials, which cannot be read: {exc}"
        ) from None
    if credentials is None:
        raise ConfigError(
            f"the {endpoint.kind} API signs requests with AWS credentials and the AWS chain has none: set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE, or run "
            "with a role"
        )
    if not region:
        raise ConfigError(
            f"the {endpoint.kind} API needs an AWS region: set AWS_REGION or AWS_DEFAULT_REGION, or a "
            "region in the AWS profile"
        )
    return AwsSignature(endpoint.kind, service, region, endpoint.base_url, path, model, credentials)
