"""The host allocator keeps freed activations for the next batch instead of page-faulting them again.

mallopt settings are process-wide, so each case runs in a fresh interpreter. The workload is a batch's
shape: several blocks of a few MiB live at once, all freed at the end, over and over, in a thread (as a
Celery worker scores) and in the main thread.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testkit.fleet import REPO

_BATCHES = """
import json, resource, sys, threading
import numpy as np

from worker.backends.local.host_memory import keep_freed_host_memory

applied = keep_freed_host_memory() if sys.argv[1] == "tuned" else None
found = {}

def batches():
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(40):
        live = [np.ones((4 << 20) // 8) for _ in range(6)]
        del live
    found["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    found["pages"] = 40 * 6 * (4 << 20) // 4096

if sys.argv[2] == "thread":
    worker = threading.Thread(target=batches)
    worker.start()
    worker.join()
else:
    batches()
print(json.dumps({"applied": applied, **found}))
"""


def _fault_share(mode: str, where: str) -> tuple[bool | None, float]:
    completed = subprocess.run(
        [sys.executable, "-c", _BATCHES, mode, where],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(completed.stdout.splitlines()[-1])
    return found["applied"], found["faults"] / found["pages"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
@pytest.mark.parametrize("where", ["thread", "main"])
def test_freed_batches_are_reused_not_faulted_in_again(where):
    applied, tuned = _fault_share("tuned", where)
    _, default = _fault_share("default", where)
    assert applied is True
    assert tuned < 0.05, f"{tuned:.1%} of the touched pages faulted with the allocator tuned"
    # What the setting changes: glibc's defaults hand much of each batch back and fault it in again.
    assert default > 4 * tuned, f"defaults faulted {default:.1%}, tuned {tuned:.1%}"
