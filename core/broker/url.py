"""Redis URL helpers shared by the broker, presence beats and scripts."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis


def redact(url: str) -> str:
    """``url`` with any password replaced, safe for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def is_reachable(url: str, timeout_s: float = 2.0) -> bool:
    try:
        client = connect(url, timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False
