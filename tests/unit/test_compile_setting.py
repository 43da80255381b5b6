"""RERANK_COMPILE: auto compiles on AVX-512 CPUs only; on and off are obeyed on any device."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from worker.backends.local import compiled as compiled_module
from worker.backends.local.compiled import wants_compile


@pytest.mark.parametrize(
    ("setting", "device", "avx512", "expected"),
    [
        ("auto", "cpu", True, True),
        ("auto", "cpu", False, False),
        ("auto", "cuda", True, False),
        ("on", "cuda", False, True),
        ("on", "cpu", False, True),
        ("off", "cpu", True, False),
    ],
)
def test_auto_compiles_on_avx512_cpus_only(
    monkeypatch: pytest.MonkeyPatch, setting: Any, device: str, avx512: bool, expected: bool
) -> None:
    monkeypatch.setattr(compiled_module, "cpu_has_avx512", lambda: avx512)
    assert wants_compile(setting, torch.device(device)) is expected
