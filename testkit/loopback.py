"""A real HTTP server on ``127.0.0.1`` (an OS-chosen port) for the tests' stand-ins of remote APIs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_posts(handle: Callable[[BaseHTTPRequestHandler], None], name: str) -> ThreadingHTTPServer:
    """A started server that answers every POST with ``handle(request)`` on a thread of its own and logs
    nothing; stop it with ``shutdown()`` and ``server_close()``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.02,), name=name, daemon=True).start()
    return httpd
