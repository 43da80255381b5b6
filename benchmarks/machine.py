"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC 9B45``."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_kind() -> str:
    """The model name with the family, model and widest vector extension, which tell apart CPUs that
    share a name (``AMD EPYC`` is Zen 3 or Zen 5): e.g. ``AMD EPYC (family 26 model 2, AVX-512)``."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{cpu_model()} (family {info.get('cpu family', '?')} model {info.get('model', '?')}, {vectors})"


def _cpuinfo() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    path = Path("/proc/cpuinfo")
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip():
            break
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))
