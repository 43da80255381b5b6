"""The unit tier's guard (tests/unit/conftest.py) refuses what a unit test must not do."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.conftest import UnitTierViolation


def test_starting_a_process_is_refused() -> None:
    with pytest.raises(UnitTierViolation, match="started a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(UnitTierViolation, match="started a process"):
        os.system("true")
    with pytest.raises(UnitTierViolation, match="started a process"):
        os.fork()
    spawned = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(UnitTierViolation, match="started a process"):
        spawned.start()


def test_connecting_or_listening_is_refused() -> None:
    with socket.socket() as client, pytest.raises(UnitTierViolation, match="opened a connection"):
        client.connect(("127.0.0.1", 6379))
    with socket.socket() as server, pytest.raises(UnitTierViolation, match="listened"):
        server.bind(("127.0.0.1", 0))
