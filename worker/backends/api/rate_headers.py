"""How long a provider asks us to wait, from the headers of a 429 (or 503) answer.

Understood, longest wins: ``Retry-After`` (seconds or an HTTP date, RFC 9110), ``retry-after-ms``,
and the OpenAI-style ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (durations such as
``1s``, ``250ms``, ``6m0s``), the latter only when the matching ``x-ratelimit-remaining-*`` is 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT_S = 3600.0


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait before the next request, or None when the headers do not say."""
    lowered = {key.lower(): value.strip() for key, value in headers.items()}
    waits: list[float] = []
    if "retry-after" in lowered:
        waits.extend(_retry_after(lowered["retry-after"], now or datetime.now(UTC)))
    if "retry-after-ms" in lowered:
        waits.extend(_number(lowered["retry-after-ms"], 0.001))
    for kind in ("requests", "tokens"):
        reset = lowered.get(f"x-ratelimit-reset-{kind}")
        if reset is not None and lowered.get(f"x-ratelimit-remaining-{kind}") == "0":
            waits.extend(_duration(reset))
    return min(max(waits), MAX_WAIT_S) if waits else None


def _retry_after(value: str, now: datetime) -> list[float]:
    seconds = _number(value, 1.0)
    if seconds:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return []
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return [max(0.0, (when - now).total_seconds())]


def _number(value: str, unit_seconds: float) -> list[float]:
    try:
        number = float(value)
    except ValueError:
        return []
    return [number * unit_seconds] if number >= 0 else []


def _duration(value: str) -> list[float]:
    plain = _number(value, 1.0)
    if plain:
        return plain
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return []
    return [sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)]
