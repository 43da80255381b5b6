"""The unit tier starts no process and opens no connection: each unit test runs with process creation
and socket connections refused, so a test that needs either belongs in tests/integration."""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class UnitTierViolation(RuntimeError):
    pass


def _refuse(what: str) -> Any:
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise UnitTierViolation(f"a unit test {what}; tests that do belong in tests/integration")

    return refused


@pytest.fixture(autouse=True)
def no_processes_or_connections() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        # subprocess (which keeps its own reference) and multiprocessing's spawn and forkserver start
        # processes through fork_exec, or os.posix_spawn; the fork start method through os.fork.
        patch.setattr(_posixsubprocess, "fork_exec", _refuse("started a process"))
        patch.setattr(subprocess, "_fork_exec", _refuse("started a process"))
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                patch.setattr(os, name, _refuse("started a process"))
        patch.setattr(socket.socket, "connect", _refuse("opened a connection"))
        patch.setattr(socket.socket, "connect_ex", _refuse("opened a connection"))
        patch.setattr(socket.socket, "bind", _refuse("listened on a socket"))
        yield
