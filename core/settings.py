"""The one configuration object, read from ``RERANK_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
Compile = Literal["auto", "on", "off"]


def _base_url(api: str, default: str) -> Any:
    return Field(default=default, description=f"Base URL of the {api}; the endpoint path is appended.")


def _api_key(api: str) -> Any:
    return Field(default=None, description=f"API key for the {api} (never logged or stored).")


def _api_key_file(api: str) -> Any:
    return Field(
        default=None, description=f"File holding the API key for the {api}, instead of the variable."
    )


class Settings(BaseSettings):
    """Every setting of bulk-rerank. Each field is read from ``RERANK_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="RERANK_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("data"),
        description="Where runs, shard files, the embedded Redis and the default SQLite ledger live.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Redis URL of the Celery broker. Unset: an embedded redis-server under the data dir.",
    )
    ledger_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger. Unset: SQLite at <data_dir>/ledger.db.",
    )
    redis_key_prefix: str = Field(
        default="rerank:",
        description="Prefix of every Redis key bulk-rerank writes (queues, heartbeats).",
    )
    shard_pairs: int = Field(default=2000, ge=1, description="Target number of pairs per shard.")
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
    token_budget: int | None = Field(
        default=None,
        ge=64,
        description="Padded tokens per batch for local models. Unset: chosen per device.",
    )
    max_length: int | None = Field(
        default=None, ge=8, description="Truncate pairs to this many tokens. Unset: the model's own limit."
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
    cohere_base_url: str = _base_url("Cohere API", "https://api.cohere.com")
    cohere_api_key: SecretStr | None = _api_key("Cohere API")
    cohere_api_key_file: Path | None = _api_key_file("Cohere API")
    jina_base_url: str = _base_url("Jina API", "https://api.jina.ai")
    jina_api_key: SecretStr | None = _api_key("Jina API")
    jina_api_key_file: Path | None = _api_key_file("Jina API")
    voyage_base_url: str = _base_url("Voyage API", "https://api.voyageai.com")
    voyage_api_key: SecretStr | None = _api_key("Voyage API")
    voyage_api_key_file: Path | None = _api_key_file("Voyage API")
    tei_base_url: str = _base_url("text-embeddings-inference server", "http://127.0.0.1:8080")
    tei_api_key: SecretStr | None = _api_key("text-embeddings-inference server")
    tei_api_key_file: Path | None = _api_key_file("text-embeddings-inference server")
    openai_rerank_base_url: str = _base_url("OpenAI-compatible /v1/rerank server", "http://127.0.0.1:8000")
    openai_rerank_api_key: SecretStr | None = _api_key("OpenAI-compatible /v1/rerank server")
    openai_rerank_api_key_file: Path | None = _api_key_file("OpenAI-compatible /v1/rerank server")
    vllm_score_base_url: str = _base_url("vLLM server (/score)", "http://127.0.0.1:8000")
    vllm_score_api_key: SecretStr | None = _api_key("vLLM server (/score)")
    vllm_score_api_key_file: Path | None = _api_key_file("vLLM server (/score)")
    nim_base_url: str = _base_url("NVIDIA NIM ranking server", "http://127.0.0.1:8000")
    nim_api_key: SecretStr | None = _api_key("NVIDIA NIM ranking server")
    nim_api_key_file: Path | None = _api_key_file("NVIDIA NIM ranking server")
    llm_judge_base_url: str = _base_url("OpenAI-compatible chat completions API", "https://api.openai.com")
    llm_judge_api_key: SecretStr | None = _api_key("OpenAI-compatible chat completions API")
    llm_judge_api_key_file: Path | None = _api_key_file("OpenAI-compatible chat completions API")

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
    progress_event_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds between a running shard's progress events (pairs done of total, shown in "
        "Flower); 0: one after every batch.",
    )

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
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def runs_dir(self) -> Path:
        return self.resolved_data_dir / "runs"

    def api_field(self, kind: str, field: str) -> Any:
        """``<kind>_<field>`` for an API kind, e.g. ``api_field("openai-rerank", "base_url")``."""
        return getattr(self, f"{kind.replace('-', '_')}_{field}")

    @property
    def resolved_ledger_url(self) -> str:
        if self.ledger_url:
            return self.ledger_url
        return f"sqlite:///{self.resolved_data_dir / 'ledger.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
