"""The HTTP side of the tests' vLLM stand-ins (``model_server``, ``classify_server``): a real server on
``127.0.0.1:<port>`` whose POST routes are a table of path -> handler (a decoded JSON body in, a JSON
answer out), with vLLM's error shape for a request it refuses (``BadRequestError``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from testkit.api_dialects import BadRequestError
from testkit.loopback import serve_posts

Route = Callable[[Any], Any]


class VllmServer:
    """Serves ``routes`` as ``served_name``; use it as a context manager."""

    def __init__(self, served_name: str, routes: dict[str, Route]) -> None:
        self.served_name = served_name
        self.routes = routes
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        self._httpd = serve_posts(self._handle, f"vllm-{self.served_name}")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def check_model(self, payload: Any) -> dict[str, Any]:
        """``payload`` as a JSON object naming this server's model or none; else vLLM's refusal."""
        if not isinstance(payload, dict):
            raise BadRequestError(400, "the body must be a JSON object")
        model = payload.get("model")
        if model is not None and model != self.served_name:
            raise BadRequestError(404, f"The model `{model}` does not exist.")
        return payload

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        route = self.routes.get(handler.path)
        try:
            if route is None:
                raise BadRequestError(404, f"no route {handler.path}")
            body, status = route(json.loads(raw)), 200
        except BadRequestError as error:
            body, status = {"object": "error", "message": str(error), "code": error.status}, error.status
        except ValueError as error:  # the body is not JSON
            body, status = {"object": "error", "message": f"invalid request: {error}", "code": 400}, 400
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting
