"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol (CDP) on a websocket.

Only the system's browser is used (Debian's ``chromium``, which scripts/setup.sh installs); nothing is
downloaded. Basic auth goes in an ``Authorization`` header that CDP adds to every request the page
makes, its scripts' requests included.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(RuntimeError):
    """Raised when the browser answers a DevTools command with an error, or not at all."""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise CdpError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


class HeadlessChromium:
    """One headless Chromium with one page, started with a fresh profile in ``profile_dir``."""

    def __init__(self, binary: str, profile_dir: Path, start_timeout_s: float = 30.0) -> None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(profile_dir.parent / "chromium.log", "wb")  # noqa: SIM115 - lives with the browser
        self._process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port(profile_dir / "DevToolsActivePort", start_timeout_s)
            self._socket = websocket.create_connection(
                self._page_socket_url(port), timeout=start_timeout_s, suppress_origin=True
            )
            self.command("Page.enable")
            self.command("Network.enable")
        except Exception:
            self.close()
            raise

    def _devtools_port(self, port_file: Path, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CdpError(f"chromium exited with {self._process.returncode}; see {self._log.name}")
            if port_file.is_file() and port_file.read_text().strip():
                return int(port_file.read_text().splitlines()[0])
            time.sleep(0.05)
        raise CdpError(f"chromium did not open its DevTools port within {timeout_s}s")

    @staticmethod
    def _page_socket_url(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        pages = [target for target in targets if target.get("type") == "page"]
        if not pages:
            raise CdpError("chromium has no page to drive")
        return str(pages[0]["webSocketDebuggerUrl"])

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result, skipping the events that arrive meanwhile."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") != command_id:
                continue
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            return dict(message.get("result", {}))

    def basic_auth(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.command("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})

    def open(self, url: str, timeout_s: float = 20.0) -> None:
        """Navigate to ``url`` and wait until the document has loaded."""
        navigation = self.command("Page.navigate", url=url)
        if navigation.get("errorText"):
            raise CdpError(f"cannot open {url}: {navigation['errorText']}")
        wait_until(lambda: self.evaluate("document.readyState") == "complete", timeout_s, "page load")

    def evaluate(self, expression: str) -> Any:
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        """What a person reads on the page: the body's rendered text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for_text(self, *needles: str, timeout_s: float = 20.0) -> str:
        """Wait until the page shows every one of ``needles``; return its text."""
        seen = [""]

        def shows_all() -> bool:
            seen[0] = self.text()
            return all(needle in seen[0] for needle in needles)

        try:
            wait_until(shows_all, timeout_s, f"text {needles!r}")
        except CdpError as exc:
            raise CdpError(f"{exc}; the page shows:\n{seen[0][:3000]}") from None
        return seen[0]

    def screenshot(self, path: Path) -> Path:
        shot = self.command("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                socket.send(json.dumps({"id": next(self._ids), "method": "Browser.close"}))
            socket.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def chromium_required() -> bool:
    """On CI the browser checks must run; elsewhere they may be skipped when no Chromium is installed."""
    return bool(os.environ.get("CI"))
