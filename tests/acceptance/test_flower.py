"""Flower as an operator meets it: scripts/flower.py on the fleet's broker, behind basic auth, showing the
workers and every shard task, a running shard's progress (pairs done of total) included, in a real
headless Chromium; and Prometheus metrics at /metrics."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.broker.presence import live_workers
from core.model_spec import ModelSpec
from testkit import corpora
from testkit.fleet import SCRIPTS, clean_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, free_port, new_prefix
from tests.browser import HeadlessChromium, chromium_required, find_chromium, wait_until

USER = "operator"
PASSWORD = "flower-test-password"
SHARDS = 3
PAIRS_PER_SHARD = 200
SUBMIT_FLAGS = ("--wait", "--shard-pairs", str(PAIRS_PER_SHARD), "--timeout", "120")
PROGRESS_LINE = re.compile(rf"([\d,]+)/{PAIRS_PER_SHARD} pairs \(\d+%\)")


@dataclass
class Flower:
    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    prefix: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, credentials: tuple[str, str] | None = (USER, PASSWORD)) -> tuple[int, str, str]:
        """Status, content type and body of ``GET path``, with basic auth unless ``credentials`` is None."""
        request = urllib.request.Request(self.url + path)
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")

    def tasks(self, **query: str) -> dict[str, dict[str, Any]]:
        status, _, body = self.get("/api/tasks?" + "&".join(f"{key}={value}" for key, value in query.items()))
        assert status == 200, body
        return dict(json.loads(body))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that a shard takes about a second here: long enough to be caught while it runs."""
    path = tmp_path_factory.mktemp("models") / "small-ce"
    return build_tiny_cross_encoder(path, seed=5, hidden_size=384, layers=6)


@pytest.fixture(scope="module")
def flower(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Flower]:
    root = tmp_path_factory.mktemp("flower")
    prefix = new_prefix()
    port = free_port()
    env = clean_env(
        data_dir=str(root / "data"),
        broker_url=redis_url,
        redis_key_prefix=prefix,
        flower_user=USER,
        flower_password=PASSWORD,
        flower_port=str(port),
        dtype="float32",
        heartbeat_s="1",
        token_budget="1024",  # batches of a few pairs, so a shard reports its progress many times
        progress_event_s="0.1",
    )
    log_path = root / "flower.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "flower.py")], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Flower(process, f"http://127.0.0.1:{port}", env, prefix, log_path)
    try:
        deadline = time.monotonic() + 60
        while not (_listening(port) and server.get("/healthcheck", credentials=None)[0] == 200):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Flower did not come up:\n{server.log()[-4000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        delete_prefixed(redis_url, prefix)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[HeadlessChromium]:
    binary = find_chromium()
    if binary is None:
        if chromium_required():
            pytest.fail("chromium is required on CI; scripts/setup.sh installs it when run as root")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it when run as root)")
    browser = HeadlessChromium(binary, tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


def test_flower_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url="redis://127.0.0.1:1/0")
    result = run_script("flower.py", env=env, timeout=60)
    assert result.returncode == 2
    assert "RERANK_FLOWER_PASSWORD" in result.stderr


def test_flower_asks_for_basic_auth_and_serves_prometheus_metrics(flower: Flower) -> None:
    assert flower.get("/workers", credentials=None)[0] == 401
    assert flower.get("/workers", credentials=(USER, "not-the-password"))[0] == 401
    assert flower.get("/api/workers", credentials=None)[0] == 401
    assert flower.get("/workers")[0] == 200

    status, content_type, metrics = flower.get("/metrics", credentials=None)
    assert status == 200 and content_type.startswith("text/plain")
    assert "# TYPE flower_events_total counter" in metrics
    assert PASSWORD not in flower.log()


def _worker_pid(launcher: subprocess.Popen[bytes]) -> int:
    """The Celery worker process scripts/workers.py started (its only child)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == launcher.pid:
            children.append(int(stat.parent.name))
    assert len(children) == 1, children
    return children[0]


def _well_under_way(flower: Flower) -> list[str]:
    """Shard tasks Flower shows in progress with at least a quarter of their pairs done."""
    under_way = []
    for task_id, task in flower.tasks(state="PROGRESS").items():
        line = PROGRESS_LINE.fullmatch(str(task.get("result")))
        if line and PAIRS_PER_SHARD // 4 <= int(line.group(1).replace(",", "")) < PAIRS_PER_SHARD:
            under_way.append(task_id)
    return under_way


def _freeze_while_in_progress(flower: Flower, worker_pid: int, timeout_s: float = 90) -> str:
    """Stop the worker (SIGSTOP) at a moment Flower shows one of its shards well under way; return that
    task's id. Frozen, the worker sends nothing, so what Flower shows holds still for the browser."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _well_under_way(flower):
            time.sleep(0.05)
            continue
        os.kill(worker_pid, signal.SIGSTOP)
        time.sleep(0.5)  # let Flower take in the events already on their way
        under_way = _well_under_way(flower)
        if under_way:
            return under_way[0]
        os.kill(worker_pid, signal.SIGCONT)  # it finished its shard just then; catch the next one
    raise AssertionError(f"no shard was seen in progress within {timeout_s}s")


def test_flower_shows_the_workers_and_each_shards_progress(
    flower: Flower, chromium: HeadlessChromium, tiny_model: Path, redis_url: str, tmp_path: Path
) -> None:
    model = f"cross-encoder:{tiny_model}"
    corpus = corpora.long_corpus(n_queries=SHARDS * 20, docs_per_query=PAIRS_PER_SHARD // 20, seed=7)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    fleet = start_fleet(model, 1, flower.env, redis_url, flower.prefix, tmp_path / "workers.log")
    worker_pid = _worker_pid(fleet.process)
    submit: subprocess.Popen[str] | None = None
    try:
        (worker,) = live_workers(redis_url, flower.prefix, ModelSpec.parse(model).queue)
        chromium.basic_auth(USER, PASSWORD)
        submit = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "submit.py"), str(corpus_path), "--model", model, *SUBMIT_FLAGS],
            env=flower.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        task_id = _freeze_while_in_progress(flower, worker_pid)
        chromium.open(f"{flower.url}/task/{task_id}")
        page = chromium.wait_for_text("PROGRESS", "bulk_rerank.score_shard", worker)
        assert PROGRESS_LINE.search(page), page
        chromium.screenshot(tmp_path / "flower-task-progress.png")
        chromium.open(flower.url + "/tasks")
        tasks_page = chromium.wait_for_text("PROGRESS", task_id)
        assert PROGRESS_LINE.search(tasks_page), tasks_page
        chromium.screenshot(tmp_path / "flower-tasks-in-progress.png")
        os.kill(worker_pid, signal.SIGCONT)

        out, err = submit.communicate(timeout=150)
        assert submit.returncode == 0, err + fleet.log()[-3000:]
        run_id = out.strip().splitlines()[-1]
        # The ledger says done a moment before the worker's last task-succeeded event reaches Flower.
        wait_until(lambda: len(flower.tasks(state="SUCCESS")) == SHARDS, 20, "every shard task's success")

        # Every shard task is listed as done, with its result; the one seen running shows its outcome.
        chromium.open(flower.url + "/tasks")
        done_page = chromium.wait_for_text(f"Showing 1 to {SHARDS} of {SHARDS} tasks", worker)
        assert done_page.count("SUCCESS") >= SHARDS and "PROGRESS" not in done_page
        chromium.screenshot(tmp_path / "flower-tasks-done.png")
        chromium.open(f"{flower.url}/task/{task_id}")
        chromium.wait_for_text("SUCCESS", f"'pairs': {PAIRS_PER_SHARD}", run_id)
        chromium.open(flower.url + "/workers")
        workers_page = chromium.wait_for_text(worker, "Online")
        assert re.search(rf"Succeeded\s+{SHARDS}\b", workers_page), workers_page
        chromium.screenshot(tmp_path / "flower-workers.png")

        status, _, metrics = flower.get("/metrics", credentials=None)
        assert status == 200
        progress_events = re.findall(r'flower_events_total\{[^}]*"task-progress"[^}]*\} ([\d.]+)', metrics)
        assert sum(float(count) for count in progress_events) >= SHARDS, metrics
        assert f'flower_worker_online{{worker="{worker}"}} 1.0' in metrics
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker_pid, signal.SIGCONT)  # never leave a frozen worker behind
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.communicate()
        fleet.stop()
