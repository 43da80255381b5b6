"""A fleet-wide budget of requests and tokens per window for one (provider, API key), kept in Redis.

Why our own limiter rather than a library: the maintained Redis limiters for Python (``limits``,
``redis-rate-limiters``, ...) count one unit per hit at the moment of the hit. We need three things
they do not offer together: (1) a request weighs its estimated tokens and is re-weighed with the
count the provider reports once it answers; (2) a request holds its place from the moment it is sent
until one window after its answer arrived, so that however the network delays requests, no window
of the provider's clock ever sees more than the limit (a request is received somewhere between our
send and our receipt of its answer; counting it until ``answer + window`` covers every window that
can contain its arrival); (3) a 429 pauses the whole budget, for every worker on every machine, for
as long as the provider asked.

The state is a sliding log: a sorted set of request ids scored by the time each stops counting
(``sent + lease`` while in flight, ``answered + window`` after), a hash of their tokens, a running
token total and a pause deadline. Each operation is one Lua script, so checking and taking budget is
atomic across the fleet, and time is Redis's own clock, so machines' clocks need not agree.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass

import redis

_EXPIRE_OLD = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], member) or '0')
    redis.call('HDEL', KEYS[2], member)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('DECRBY', KEYS[3], freed)
end
local function keep(ttl)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""

# KEYS: log, tokens, total, pause. ARGV: id, tokens, max requests (0: none), max tokens (0: none),
# lease ms, key ttl ms. Returns {1, 0} when admitted, else {0, ms to wait}.
_ACQUIRE = (
    _EXPIRE_OLD
    + """
local pause_until = tonumber(redis.call('GET', KEYS[4]) or '0')
if pause_until > now then return {0, pause_until - now} end
local need = tonumber(ARGV[2])
local max_requests = tonumber(ARGV[3])
local max_tokens = tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local wait = 0
if max_requests > 0 and count + 1 > max_requests then
  local freeing = redis.call('ZRANGE', KEYS[1], count - max_requests, count - max_requests, 'WITHSCORES')
  wait = tonumber(freeing[2]) - now
end
if max_tokens > 0 and total + need > max_tokens then
  local excess = total + need - max_tokens
  local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local freed = 0
  local frees_in = 50  -- the log and the total disagree (never expected): look again shortly
  for i = 1, #entries, 2 do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], entries[i]) or '0')
    if freed >= excess then
      frees_in = tonumber(entries[i + 1]) - now
      break
    end
  end
  wait = math.max(wait, frees_in)
end
if wait > 0 then return {0, wait} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], need)
redis.call('INCRBY', KEYS[3], need)
keep(tonumber(ARGV[6]))
return {1, 0}
"""
)

# KEYS as above. ARGV: id, tokens as reported, window ms, key ttl ms.
_RELEASE = (
    _EXPIRE_OLD
    + """
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - before)
keep(tonumber(ARGV[4]))
return 1
"""
)

# KEYS as above. ARGV: pause ms, key ttl ms. Pauses never shorten one already set.
_PAUSE = (
    _EXPIRE_OLD
    + """
local pause_until = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now + tonumber(ARGV[1]))
redis.call('SET', KEYS[4], pause_until)
keep(tonumber(ARGV[2]))
return pause_until - now
"""
)

# Waiting on a request still in flight: its place frees when it is answered, so look again soon.
MAX_POLL_S = 0.25


class CancelledError(Exception):
    """Raised to a request still waiting (for budget or a retry) once its shard attempt has failed."""


@dataclass(frozen=True)
class RateLimits:
    requests_per_window: int | None
    tokens_per_window: int | None
    window_s: float


class FleetRateLimiter:
    """The shared budget of one (provider, key). Thread-safe; one per worker process."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        provider: str,
        fingerprint: str,
        limits: RateLimits,
        lease_s: float,
    ) -> None:
        base = f"{prefix}ratelimit:{provider}:{fingerprint}"
        self.keys = [f"{base}:log", f"{base}:tokens", f"{base}:total", f"{base}:pause"]
        self.limits = limits
        self._window_ms = int(limits.window_s * 1000)
        self._lease_ms = int(lease_s * 1000)
        self._ttl_ms = self._lease_ms + self._window_ms + 60_000
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._pause = client.register_script(_PAUSE)

    def acquire(self, tokens: int, cancelled: threading.Event | None = None) -> str:
        """Wait until the fleet's budget has room for one request of ``tokens``, take it, and return
        the id to ``release`` once the request is answered (or has failed)."""
        if self.limits.tokens_per_window is not None:
            tokens = min(tokens, self.limits.tokens_per_window)
        lease = secrets.token_hex(8)
        args: list[str | int] = [
            lease,
            tokens,
            self.limits.requests_per_window or 0,
            self.limits.tokens_per_window or 0,
            self._lease_ms,
            self._ttl_ms,
        ]
        while True:
            if cancelled is not None and cancelled.is_set():
                raise CancelledError
            admitted, wait_ms = self._acquire(keys=self.keys, args=args)
            if admitted:
                return lease
            # Wake just after the place frees; a little jitter spreads the fleet's retries.
            delay = min(int(wait_ms) / 1000, MAX_POLL_S) + random.uniform(0.001, 0.01)
            if cancelled is not None:
                cancelled.wait(delay)
            else:
                time.sleep(delay)

    def release(self, lease: str, tokens: int) -> None:
        """The request is over: it counts ``tokens`` (the provider's count where known) until one window
        from now."""
        self._release(keys=self.keys, args=[lease, tokens, self._window_ms, self._ttl_ms])

    def pause(self, seconds: float) -> float:
        """Stop the whole fleet sending with this key for ``seconds`` (a 429's Retry-After). Returns the
        seconds left on the pause, which may be longer if another worker set a longer one."""
        left_ms = self._pause(keys=self.keys, args=[max(1, int(seconds * 1000)), self._ttl_ms])
        return int(left_ms) / 1000
