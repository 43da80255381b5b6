"""The one configuration object, read from ``RERANK_*`` environment variables.

Most settings are fields written out below. The three settings of each API kind (``RERANK_<KIND>_BASE_URL``,
``RERANK_<KIND>_API_KEY``, ``RERANK_<KIND>_API_KEY_FILE``) are derived from the API kinds of ``core.kinds``,
so a new provider gets them from its registry entry alone; code reads them through the typed
``Settings.api(kind)``, never by building attribute names.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError, ModelSpecError
from core.kinds import API_KINDS, API_KINDS_TABLE, ApiKind

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
Compile = Literal["auto", "on", "off"]
BatchInvariant = Literal["auto", "on", "off"]

ENV_PREFIX = "RERANK_"
ApiSetting = Literal["base_url", "path", "api_key", "api_key_file"]


def api_field_name(kind: str, setting: ApiSetting) -> str:
    """The settings field of one API kind's setting, e.g. ``openai_rerank_api_key``."""
    return f"{kind.replace('-', '_')}_{setting}"


def api_variable(kind: str, setting: ApiSetting) -> str:
    """The environment variable of one API kind's setting, e.g. ``RERANK_OPENAI_RERANK_API_KEY``."""
    return ENV_PREFIX + api_field_name(kind, setting).upper()


def api_settings_fields(kinds: Iterable[ApiKind]) -> dict[str, Any]:
    """The four settings fields of each API kind, for ``pydantic.create_model``: the base URL (its
    registry default), the endpoint path (unset: the provider's own), the key (a ``SecretStr``) and the
    file that holds the key."""
    fields: dict[str, Any] = {}
    for entry in kinds:
        api = f"{entry.kind} API ({entry.summary})"
        fields[api_field_name(entry.kind, "base_url")] = (
            str,
            Field(
                default=entry.base_url, description=f"Base URL of the {api}; the endpoint path is appended."
            ),
        )
        fields[api_field_name(entry.kind, "path")] = (
            str | None,
            Field(
                default=None,
                description=f"Endpoint path of the {api} after the base URL, for servers that serve its "
                "shape elsewhere (unset: the API's own path).",
            ),
        )
        fields[api_field_name(entry.kind, "api_key")] = (
            SecretStr | None,
            Field(default=None, description=f"API key for the {api} (never logged or stored)."),
        )
        fields[api_field_name(entry.kind, "api_key_file")] = (
            Path | None,
            Field(
                default=None, description=f"File holding the API key for the {api}, instead of the variable."
            ),
        )
    return fields


class ApiEndpoint(BaseModel):
    """Where and how one API kind is reached: its base URL, its key or key file as the settings give them
    (reading the file is the worker's job), and whether the API needs a key at all."""

    model_config = ConfigDict(frozen=True)

    kind: str
    base_url: str
    path: str | None
    api_key: SecretStr | None
    api_key_file: Path | None
    requires_key: bool

    def variable(self, setting: ApiSetting) -> str:
        """The environment variable that sets ``setting`` of this kind, for messages."""
        return api_variable(self.kind, setting)


# At run time Settings' base holds the fields of every API kind, built from the registry; type checkers see
# plain BaseSettings, since those fields are reached through the typed Settings.api(kind) only.
if TYPE_CHECKING:
    _ApiKindSettings = BaseSettings
else:
    _ApiKindSettings = create_model(
        "_ApiKindSettings", __base__=BaseSettings, **api_settings_fields(API_KINDS_TABLE)
    )


class Settings(_ApiKindSettings):
    """Every setting of bulk-rerank. Each field is read from ``RERANK_<FIELD>`` (case-insensitive); the
    fields of the API kinds come from the registry (``api_settings_fields``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: str = Field(
        default="data",
        description="Where runs live (shard inputs, shard scores): a local directory or a storage URI: "
        "s3://bucket/prefix, gs://bucket/prefix, or any fsspec protocol (az://, abfs://, ...).",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Local directory of the embedded Redis and the default SQLite ledger. Unset: the data "
        "dir when it is local, else ./data.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store (http(s)://host:port) for s3:// locations. Unset: "
        "AWS S3. Credentials come from the AWS_* variables, a profile or an instance role.",
    )
    s3_region: str | None = Field(default=None, description="Region of s3:// locations. Unset: the SDK's.")
    broker_url: str | None = Field(
        default=None,
        description="Redis URL of the Celery broker (redis:// or rediss:// for TLS). Unset: an embedded "
        "redis-server under the state dir, on loopback only.",
    )
    broker_password_file: Path | None = Field(
        default=None,
        description="File holding the broker's password, put into RERANK_BROKER_URL when it has none.",
    )
    ledger_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger (postgresql+psycopg://...?sslmode=verify-full across "
        "machines). Unset: SQLite at <state dir>/ledger.db.",
    )
    ledger_password_file: Path | None = Field(
        default=None,
        description="File holding the ledger database's password, put into RERANK_LEDGER_URL when it has "
        "none.",
    )
    redis_key_prefix: str = Field(
        default="rerank:",
        description="Prefix of every Redis key bulk-rerank writes (queues, heartbeats).",
    )
    shard_pairs: int = Field(
        default=2000,
        ge=1,
        description="Target number of pairs per shard. Unset, shards are sized in device-seconds "
        "(RERANK_SHARD_DEVICE_SECONDS) once the ledger has measured the model, and hold this many pairs "
        "until then.",
    )
    shard_device_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Device-seconds of scoring per shard when RERANK_SHARD_PAIRS and --shard-pairs are "
        "unset: pairs per shard = this x the pairs per device-second of the model's latest successful "
        "attempts in the ledger (within 100-200,000 pairs).",
    )
    visibility_timeout_s: int = Field(
        default=6 * 3600,
        ge=60,
        description="Seconds before Redis hands an unacknowledged shard to another worker; "
        "must exceed the longest a shard can take.",
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts per shard before it is marked failed.")
    lease_s: float = Field(
        default=60.0,
        ge=1,
        description="Seconds a shard attempt's lease lasts without renewal (renewed every third of it); "
        "a worker that dies mid-shard loses its shard to another after this long.",
    )
    stranded_s: float = Field(
        default=300.0,
        ge=1,
        description="Seconds a shard may stay queued, with its queue in Redis empty, before a worker's "
        "reaper sends it again (its message was lost with a host before any attempt leased it).",
    )
    device: Device = Field(default="auto", description="Device for local models: auto, cpu or cuda.")
    dtype: Dtype = Field(
        default="auto",
        description="Compute dtype for local models. auto: bf16/fp16 on CUDA, bf16 on CPUs with AMX or "
        "AVX512-BF16, else float32.",
    )
    compile: Compile = Field(
        default="auto",
        description="Compile cross-encoders with TorchInductor when the model loads. auto: on CPUs with "
        "AVX-512 (on AVX2 eager float32 is as fast), falling back to eager PyTorch (with a warning) where "
        "it cannot compile; on: everywhere, failing the load if it cannot; off: never.",
    )
    batch_invariant: BatchInvariant = Field(
        default="auto",
        description="Pad local models' batches to fixed shapes (lengths in steps of 16, an even row count) "
        "so that a pair's score does not depend on the batch it lands in. auto: in bf16/fp16, where it "
        "otherwise does by up to ~1e-2 (float32 stays within ~2e-6 without it); on; off.",
    )
    calibrate: bool = Field(
        default=True,
        description="Measure at model load which token budget, and whether compiling, scores fastest "
        "on this machine (a few seconds, plus a compile where one is tried), for what RERANK_TOKEN_BUDGET "
        "and RERANK_COMPILE leave open; cached per model and machine kind under the state dir. "
        "false: the fixed defaults.",
    )
    token_budget: int | None = Field(
        default=None,
        ge=64,
        description="Padded tokens per batch for local models. Unset: chosen per device.",
    )
    tokenizer_processes: int | None = Field(
        default=None,
        ge=0,
        description="Helper processes that tokenize local models' pairs beside the worker process, each a "
        "slice of a chunk (same ids). Unset: on a GPU the worker's CPU threads but one, on a CPU none "
        "(the model uses the cores). 0: tokenize in the worker process.",
    )
    max_length: int | None = Field(
        default=None, ge=8, description="Truncate pairs to this many tokens. Unset: the model's own limit."
    )
    shards_in_flight: int = Field(
        default=2,
        ge=1,
        description="Shards one local-model worker process holds at once: while one is scored on the "
        "device, the next is leased and read and the last is written and published. 1: one at a time.",
    )
    canary_path: str | None = Field(
        default=None,
        description="A corpus of a few fixed pairs that submit.py adds to every run (as --canary does); "
        "its scores are compared with the canary's previous run of the same model once the run finishes.",
    )
    canary_fail_if: str = Field(
        default="spearman<0.99,top10<0.95,max_abs_diff>0.01",
        description="The compare.py conditions under which the canary has drifted, marking the run "
        "completed_with_drift.",
    )
    daily_budgets_usd: dict[str, float] = Field(
        default={},
        description="Per-day API spending limits (USD, UTC days) by model (kind:name) or provider (the "
        'kind), as JSON, e.g. {"cohere": 50}: a run meeting one pauses (paused_budget) like one meeting '
        "its --max-cost-usd.",
    )
    truncation_warning: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="submit.py warns when more than this share of a sample of the run's pairs is longer "
        "than the model's limit (cross-encoders whose tokenizer is on the submitting machine).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow models to run code from their repository when loading."
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, description="Seconds between a worker's liveness beats in Redis."
    )
    worker_model: str | None = Field(
        default=None,
        description="The model a worker process hosts (set by scripts/workers.py from --model).",
    )
    log_level: str = Field(default="INFO", description="Log level of scripts and workers.")

    # -- API workers (hosted rerank APIs) ----------------------------------------------------------
    # Rate limits are per (provider, API key) and shared by every worker of the fleet through Redis.
    api_concurrency: int = Field(
        default=8,
        ge=1,
        description="HTTP requests one API worker process keeps in flight (set by scripts/workers.py "
        "from --concurrency).",
    )
    api_requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Requests the whole fleet may send per rate window with one API key. Unset: no "
        "request limit (the provider's 429s are still obeyed).",
    )
    api_tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Tokens the whole fleet may send per rate window with one API key. Unset: no "
        "token limit.",
    )
    api_rate_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Length in seconds of the window the *_per_minute limits count over (60: per minute).",
    )
    api_max_documents: int | None = Field(
        default=None, ge=1, description="Documents per API request. Unset: the provider's default."
    )
    api_max_tokens_per_document: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per document: sent to Cohere as max_tokens_per_doc, and the most one "
        "document counts in token estimates (APIs truncate longer ones). Unset: the provider's default.",
    )
    api_timeout_s: float = Field(default=60.0, gt=0, description="Seconds before an API request times out.")
    api_max_retries: int = Field(
        default=6,
        ge=0,
        description="Retries of one API request after a 429, a 5xx, a timeout or a malformed answer "
        "before the shard attempt fails.",
    )
    api_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Cap in seconds of the exponential backoff between API retries."
    )
    prices_path: Path | None = Field(
        default=None,
        description="The price table (TOML) that turns API usage into cost. Unset: core/prices.toml "
        "of this project.",
    )
    # The base URL, key and key file of each API kind are fields of _ApiKindSettings, from core.kinds.
    # -- Monitoring: Flower and shard progress events ----------------------------------------------
    flower_user: str = Field(
        default="admin", description="User name of Flower's basic auth (scripts/flower.py)."
    )
    flower_password: SecretStr | None = Field(
        default=None,
        description="Password of Flower's basic auth; scripts/flower.py refuses to start without one.",
    )
    flower_address: str = Field(
        default="127.0.0.1",
        description="Address Flower listens on (0.0.0.0: every interface, e.g. inside a container).",
    )
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Port Flower listens on.")
    metrics_address: str = Field(
        default="127.0.0.1",
        description="Address scripts/metrics.py (runs as Prometheus metrics) listens on.",
    )
    metrics_port: int = Field(default=9808, ge=1, le=65535, description="Port scripts/metrics.py listens on.")
    metrics_window_hours: float = Field(
        default=48.0,
        gt=0,
        description="scripts/metrics.py serves the runs created in this many last hours, and every run "
        "still queued or running.",
    )
    progress_event_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds between a running shard's progress events (pairs done of total, shown in "
        "Flower); 0: one after every batch.",
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("flower_user")
    @classmethod
    def _user_fits_basic_auth(cls, value: str) -> str:
        if not value or ":" in value:
            raise ValueError("must be a non-empty user name without ':' (HTTP basic auth splits on it)")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("must be a non-empty string without spaces, e.g. 'rerank:'")
        return value

    @property
    def data_is_local(self) -> bool:
        return "://" not in self.data_dir or self.data_dir.startswith("file://")

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.expanduser().resolve()
        local = self.data_dir.removeprefix("file://") if self.data_is_local else "data"
        return Path(local).expanduser().resolve()

    def api(self, kind: str) -> ApiEndpoint:
        """The base URL and key settings of API ``kind``. Raises ``ModelSpecError`` for a kind that is
        not an API kind of ``core.kinds``."""
        entry = API_KINDS.get(kind)
        if entry is None:
            raise ModelSpecError(f"{kind!r} is not an API kind; use one of {', '.join(API_KINDS)}")
        return ApiEndpoint(
            kind=kind,
            base_url=getattr(self, api_field_name(kind, "base_url")),
            path=getattr(self, api_field_name(kind, "path")),
            api_key=getattr(self, api_field_name(kind, "api_key")),
            api_key_file=getattr(self, api_field_name(kind, "api_key_file")),
            requires_key=entry.requires_key,
        )

    @property
    def resolved_ledger_url(self) -> str:
        """The ledger's URL, with the password from ``ledger_password_file`` when one is set."""
        if not self.ledger_url:
            return f"sqlite:///{self.resolved_state_dir / 'ledger.db'}"
        return with_password(self.ledger_url, self.ledger_password_file, "RERANK_LEDGER_PASSWORD_FILE")

    @property
    def resolved_broker_url(self) -> str | None:
        """The configured broker URL, with the password from ``broker_password_file``; None: embedded."""
        if self.broker_url is None:
            return None
        return with_password(self.broker_url, self.broker_password_file, "RERANK_BROKER_PASSWORD_FILE")


def with_password(url: str, password_file: Path | None, setting: str) -> str:
    """``url`` with the password read from ``password_file`` put in, unless the URL already has one."""
    if password_file is None:
        return url
    parts = urlsplit(url)
    if parts.password:
        return url
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {password_file}: {exc.strerror}") from None
    if not password:
        raise ConfigError(f"{setting}: {password_file} is empty")
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
