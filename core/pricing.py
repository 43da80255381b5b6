"""The price table: what API usage (and, for a later issue, GPU time) costs, by date.

``core/prices.toml`` (or ``RERANK_PRICES_PATH``) lists ``[[api]]`` entries, each for one provider and
model (``"*"`` for every model of the provider) from a ``since`` date on, priced per million tokens, per
million generated tokens and/or per search unit; and ``[[gpu]]`` entries priced per GPU-hour. A request
is priced with the entry in force on the day (UTC) it was sent: the one with the latest ``since`` not
after that day. No entry: the cost is unknown (NULL in the ledger), never guessed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError

DEFAULT_PRICES_PATH = Path(__file__).resolve().parent / "prices.toml"  # shipped as package data


@dataclass(frozen=True)
class ApiPrice:
    provider: str
    model: str
    since: date
    usd_per_million_tokens: float = 0.0
    usd_per_million_output_tokens: float | None = None  # None: output tokens cost as other tokens
    usd_per_search_unit: float = 0.0

    def cost(self, tokens: int, output_tokens: int, search_units: int) -> float:
        output_rate = self.usd_per_million_output_tokens
        if output_rate is None:
            output_rate = self.usd_per_million_tokens
        input_tokens = tokens - output_tokens
        return (
            input_tokens * self.usd_per_million_tokens / 1e6
            + output_tokens * output_rate / 1e6
            + search_units * self.usd_per_search_unit
        )


@dataclass(frozen=True)
class GpuHourPrice:
    gpu: str
    since: date
    usd_per_hour: float


@dataclass(frozen=True)
class PriceTable:
    api: tuple[ApiPrice, ...]
    gpu: tuple[GpuHourPrice, ...]

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """Read and check a price file; raises ``ConfigError`` naming the entry that is wrong."""
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"price table {path}: cannot read it: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"price table {path}: not valid TOML: {exc}") from None
        unknown = set(raw) - {"api", "gpu"}
        if unknown:
            raise ConfigError(
                f"price table {path}: unknown sections {sorted(unknown)}; use [[api]] and [[gpu]]"
            )
        api = tuple(_api_price(path, entry) for entry in _entries(path, raw, "api"))
        gpu = tuple(_gpu_price(path, entry) for entry in _entries(path, raw, "gpu"))
        return cls(api=api, gpu=gpu)

    def api_price(self, provider: str, model: str, on: date) -> ApiPrice | None:
        """The entry in force on ``on`` for this model, else for the provider's ``"*"``."""
        for wanted in (model, "*"):
            candidates = [
                price
                for price in self.api
                if price.provider == provider and price.model == wanted and price.since <= on
            ]
            if candidates:
                return max(candidates, key=lambda price: price.since)
        return None

    def gpu_hour_price(self, device: str, on: date) -> GpuHourPrice | None:
        """The GPU-hour price in force on ``on`` for ``device`` (as the ledger records it, e.g.
        "cuda:NVIDIA H100 80GB HBM3"): an entry whose ``gpu`` the device name contains, else ``"*"``."""
        if not device.startswith("cuda"):
            return None
        name = device.lower()
        for matches in (lambda gpu: gpu != "*" and gpu.lower() in name, lambda gpu: gpu == "*"):
            candidates = [price for price in self.gpu if matches(price.gpu) and price.since <= on]
            if candidates:
                return max(candidates, key=lambda price: price.since)
        return None

    def api_cost(
        self, provider: str, model: str, on: date, tokens: int, output_tokens: int, search_units: int
    ) -> float | None:
        price = self.api_price(provider, model, on)
        return None if price is None else price.cost(tokens, output_tokens, search_units)


def load_price_table(path: Path | None) -> PriceTable:
    """The configured table, or the project's own ``core/prices.toml``."""
    return PriceTable.load(path.expanduser() if path is not None else DEFAULT_PRICES_PATH)


def _entries(path: Path, raw: dict[str, Any], section: str) -> list[dict[str, Any]]:
    entries = raw.get(section, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"price table {path}: write each {section} price as a [[{section}]] table")
    return entries


_API_FIELDS = {"provider", "model", "since", "usd_per_million_tokens", "usd_per_million_output_tokens"}
_API_FIELDS |= {"usd_per_search_unit"}


def _api_price(path: Path, entry: dict[str, Any]) -> ApiPrice:
    where = f"price table {path}: [[api]] {entry.get('provider')}/{entry.get('model')}"
    _check_fields(where, entry, _API_FIELDS, {"provider", "model", "since"})
    rates = {key: _rate(where, key, entry[key]) for key in _API_FIELDS & set(entry) if key.startswith("usd_")}
    if not rates:
        raise ConfigError(f"{where}: give a usd_per_million_tokens or usd_per_search_unit price")
    return ApiPrice(
        provider=str(entry["provider"]),
        model=str(entry["model"]),
        since=_date(where, entry["since"]),
        **rates,
    )


def _gpu_price(path: Path, entry: dict[str, Any]) -> GpuHourPrice:
    where = f"price table {path}: [[gpu]] {entry.get('gpu')}"
    _check_fields(where, entry, {"gpu", "since", "usd_per_hour"}, {"gpu", "since", "usd_per_hour"})
    return GpuHourPrice(
        gpu=str(entry["gpu"]),
        since=_date(where, entry["since"]),
        usd_per_hour=_rate(where, "usd_per_hour", entry["usd_per_hour"]),
    )


def _check_fields(where: str, entry: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    if missing := required - set(entry):
        raise ConfigError(f"{where}: missing {sorted(missing)}")
    if unknown := set(entry) - allowed:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")


def _rate(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: {key} must be a number of US dollars >= 0, got {value!r}")
    return float(value)


def _date(where: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise ConfigError(f"{where}: since must be a TOML date like 2025-01-31, got {value!r}")
