"""Real HTTP servers on loopback that speak the rerank APIs' request and answer shapes, for tests and
scripts/bench_api.py.

Each server speaks one provider's dialect (testkit/api_dialects.py): it checks the request's shape
strictly (a wrong field is a 400 or 422, as the real API would answer), scores every pair
deterministically, answers in shuffled order and counts tokens its own way. It enforces a requests
and a tokens limit over a sliding window (429 with Retry-After when exceeded), and records every
request it received. Faults (500s, slow answers, malformed JSON, 429s, 400s) are injected on
demand with ``inject``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testkit.api_dialects import PATHS, BadRequestError, answer
from testkit.loopback import serve_posts
from testkit.provider_dialects import PROVIDER_DIALECTS, AwsIdentity, check_sigv4


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour: ``kind`` is "status" (answer ``status``), "slow" (wait ``seconds``
    first), "malformed" (a 200 that is not JSON), "429" (with Retry-After ``seconds``) or "reject" (a
    400). The error bodies of "status" and "reject" echo the caller's Authorization header."""

    kind: str
    status: int = 500
    seconds: float = 0.0


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    status: int
    documents: int
    tokens: int  # as this server counts them (0 for requests it did not score)


@dataclass
class FakeRerankServer:
    """A provider on ``127.0.0.1:<port>``; ``limit_requests``/``limit_tokens`` apply per ``window_s``."""

    flavor: str
    api_key: str | None = None
    aws: AwsIdentity | None = None  # requests must be SigV4-signed with these credentials instead
    limit_requests: int | None = None
    limit_tokens: int | None = None
    window_s: float = 60.0
    token_scale: float = 1.0
    latency_s: float = 0.0
    retry_after_grace_s: float = 0.25
    received: list[Received] = field(default_factory=list)
    early_after_429: int = 0  # requests that arrived while an injected 429's Retry-After still ran
    over_limit: int = 0  # requests that arrived with the window already full: the client broke the limit
    _faults: deque[Fault] = field(default_factory=deque)
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _paused: tuple[float, float] | None = None  # (429 sent at, retry allowed from)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def path(self) -> str:
        """The one path this provider answers on."""
        return PROVIDER_DIALECTS[self.flavor][0] if self.flavor in PROVIDER_DIALECTS else PATHS[self.flavor]

    def start(self) -> FakeRerankServer:
        self._httpd = serve_posts(self._handle, f"fake-{self.flavor}")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def inject(self, fault: Fault, count: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * count)

    # -- what the server saw ----------------------------------------------------------------------

    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(request.status for request in self.received)

    def scored(self) -> list[Received]:
        with self._lock:
            return [request for request in self.received if request.status == 200]

    def busiest_window(self) -> tuple[int, int]:
        """The most requests and the most tokens it scored in any ``window_s`` long span."""
        scored = sorted(self.scored(), key=lambda request: request.at)
        most_requests = most_tokens = tokens = start = 0
        for end, request in enumerate(scored):
            tokens += request.tokens
            while scored[start].at <= request.at - self.window_s:
                tokens -= scored[start].tokens
                start += 1
            most_requests = max(most_requests, end - start + 1)
            most_tokens = max(most_tokens, tokens)
        return most_requests, most_tokens

    # -- serving ----------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        authorization = handler.headers.get("Authorization", "")
        with self._lock:
            if (
                self._paused is not None
                and self._paused[0] + self.retry_after_grace_s < arrived < self._paused[1]
            ):
                self.early_after_429 += 1
            fault = self._faults.popleft() if self._faults else None
        try:
            if handler.path != self.path:
                raise BadRequestError(404, f"no route {handler.path}")
            if self.aws is not None:
                headers = {name.lower(): value for name, value in handler.headers.items()}
                check_sigv4(self.aws, handler.path, headers, raw)
            elif self.api_key is not None and authorization != f"Bearer {self.api_key}":
                raise BadRequestError(401, "invalid api token")
            if fault is not None and fault.kind != "slow":
                self._answer_fault(handler, fault, arrived, authorization)
                return
            payload = json.loads(raw)
            if self.flavor in PROVIDER_DIALECTS:
                body, tokens, documents = PROVIDER_DIALECTS[self.flavor][1](payload, self.token_scale)
            else:
                body, tokens, documents = answer(self.flavor, payload, self.token_scale)
        except BadRequestError as exc:
            self._send(handler, exc.status, {"message": str(exc)}, arrived, 0)
            return
        except (ValueError, KeyError, TypeError) as exc:
            self._send(handler, 400, {"message": f"invalid request: {exc}"}, arrived, 0)
            return
        retry_in = self._take_budget(arrived, tokens)
        if retry_in is not None:
            headers = {"Retry-After": str(max(1, math.ceil(retry_in)))}
            self._send(handler, 429, {"message": "rate limit exceeded"}, arrived, 0, headers=headers)
            return
        delay = self.latency_s + (fault.seconds if fault is not None else 0.0)
        self._send(handler, 200, body, arrived, tokens, documents=documents, delay_s=delay)

    def _take_budget(self, arrived: float, tokens: int) -> float | None:
        """Count the request in the sliding window, or return the seconds until it would fit."""
        with self._lock:
            while self._window and self._window[0][0] <= arrived - self.window_s:
                self._window.popleft()
            used = sum(counted for _, counted in self._window)
            full = self.limit_requests is not None and len(self._window) + 1 > self.limit_requests
            too_many_tokens = self.limit_tokens is not None and used + tokens > self.limit_tokens
            if full or too_many_tokens:
                self.over_limit += 1
                return self._window[0][0] + self.window_s - arrived if self._window else self.window_s
            self._window.append((arrived, tokens))
            return None

    def _answer_fault(self, handler: BaseHTTPRequestHandler, fault: Fault, arrived: float, auth: str) -> None:
        if fault.kind == "status":
            # Echoes the caller's credentials, as careless APIs do: the worker must scrub its logs.
            self._send(handler, fault.status, {"message": f"injected failure for {auth}"}, arrived, 0)
        elif fault.kind == "malformed":
            self._send_raw(handler, 200, b'{"results": [{"index": 0, "relev', {}, arrived, 0, 0)
        elif fault.kind == "429":
            with self._lock:
                self._paused = (arrived, arrived + fault.seconds)
            headers = {"Retry-After": f"{fault.seconds:g}"}
            self._send(handler, 429, {"message": "slow down"}, arrived, 0, headers=headers)
        elif fault.kind == "reject":
            self._send(handler, 400, {"message": f"bad request from {auth}"}, arrived, 0)
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        arrived: float,
        tokens: int,
        headers: dict[str, str] | None = None,
        documents: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        data = json.dumps(body).encode()
        self._send_raw(handler, status, data, headers or {}, arrived, tokens, documents, delay_s)

    def _send_raw(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        headers: dict[str, str],
        arrived: float,
        tokens: int,
        documents: int,
        delay_s: float = 0.0,
    ) -> None:
        """Record the request as answered, wait ``delay_s`` (a slow server), then answer."""
        with self._lock:
            self.received.append(Received(arrived, status, documents, tokens if status == 200 else 0))
        if delay_s:
            time.sleep(delay_s)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)


@contextmanager
def running(server: FakeRerankServer) -> Iterator[FakeRerankServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
