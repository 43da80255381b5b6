"""Token-budget batching (worker/backends/local/batching.py) and device resolution
(worker/backends/local/device.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DeviceOutOfMemoryError, NoDeviceError
from core.settings import Settings
from worker.backends.local import device as device_module
from worker.backends.local.batching import (
    DeferredRows,
    TokenBudgetBatcher,
    is_out_of_memory,
    length_order,
)
from worker.backends.local.device import (
    CUDA_TOKEN_BUDGET,
    cpu_has_amx,
    cpu_has_avx512,
    cpu_has_native_bf16,
    cuda_versions,
    default_token_budget,
    resolve_compute,
    resolve_dtype,
)


def random_lengths(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Many ties, so the stable sort is exercised.
    return rng.integers(1, 40, size=count) * rng.choice([1, 4, 16], size=count)


class RecordingForward:
    """A forward that returns 10 * index + 0.5 per item and records every batch it is given."""

    def __init__(
        self, lengths: np.ndarray, oom_above: int | None = None, oom_calls: int | None = None
    ) -> None:
        self.lengths = lengths
        self.oom_above = oom_above  # padded tokens above which a batch raises CUDA out-of-memory
        self.oom_calls = oom_calls  # only the first this many oversized batches raise
        self.batches: list[np.ndarray] = []
        self.failed: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        padded = len(batch) * int(self.lengths[batch].max())
        squeezed = self.oom_calls is None or len(self.failed) < self.oom_calls
        if self.oom_above is not None and padded > self.oom_above and squeezed:
            self.failed.append(batch.copy())
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(batch.copy())
        return batch.astype(np.float32) * 10 + 0.5


def test_batches_go_longest_first_and_each_stays_within_budget() -> None:
    lengths = random_lengths(500)
    forward = RecordingForward(lengths)

    TokenBudgetBatcher(2048).run(lengths, forward)

    batches = forward.batches

    assert np.array_equal(np.concatenate(batches), np.argsort(-lengths, kind="stable"))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= 2048
        assert lengths[batch[0]] == lengths[batch].max()
    # Consecutive batches are as full as the budget allows: one more item would not fit.
    for batch, following in itertools.pairwise(batches):
        assert (len(batch) + 1) * lengths[batch[0]] > 2048 or lengths[following[0]] > lengths[batch[0]]


def test_run_returns_results_in_input_order_and_calls_each_item_once() -> None:
    lengths = random_lengths(300, seed=1)
    forward = RecordingForward(lengths)

    results = TokenBudgetBatcher(1000).run(lengths, forward)

    assert results.dtype == np.float32
    assert np.array_equal(results, np.arange(300, dtype=np.float32) * 10 + 0.5)
    assert sorted(np.concatenate(forward.batches).tolist()) == list(range(300))
    assert len(forward.batches) > 10


def test_ties_keep_input_order() -> None:
    lengths = np.array([5, 7, 5, 7, 5])
    assert length_order(lengths).tolist() == [1, 3, 0, 2, 4]


def test_item_longer_than_the_budget_is_scored_alone() -> None:
    lengths = np.array([10, 5000, 10, 10])
    forward = RecordingForward(lengths)

    results = TokenBudgetBatcher(100).run(lengths, forward)

    assert forward.batches[0].tolist() == [1]
    assert np.array_equal(results, np.array([0.5, 10.5, 20.5, 30.5], dtype=np.float32))


def test_two_dimensional_results_are_scattered_by_row() -> None:
    lengths = np.array([3, 9, 1, 9, 4])

    results = TokenBudgetBatcher(18).run(lengths, lambda batch: np.stack([batch, batch * 2], axis=1))

    assert np.array_equal(results, np.stack([np.arange(5), np.arange(5) * 2], axis=1))


def test_empty_input_gives_empty_float32_result() -> None:
    results = TokenBudgetBatcher(100).run(np.array([], dtype=np.int64), RecordingForward(np.array([])))
    assert results.shape == (0,)
    assert results.dtype == np.float32


def test_out_of_memory_halves_the_budget_and_retries_the_same_items() -> None:
    lengths = np.full(64, 16)
    forward = RecordingForward(lengths, oom_above=300)  # at most 18 items of 16 tokens fit
    batcher = TokenBudgetBatcher(1024, grow_after=1000)

    results = batcher.run(lengths, forward)

    assert np.array_equal(results, np.arange(64, dtype=np.float32) * 10 + 0.5)
    assert sorted(np.concatenate(forward.batches).tolist()) == list(range(64))
    # 1024 -> 512 -> 256: two failures, and the first failed batch's first item leads the first success.
    assert [len(batch) for batch in forward.failed] == [64, 32]
    assert forward.batches[0][0] == forward.failed[0][0]
    assert batcher.budget == 256
    assert batcher.oom_count == 2
    assert [(change.budget, change.reason) for change in batcher.history] == [
        (1024, "start"),
        (512, "oom"),
        (256, "oom"),
    ]
    for batch in forward.batches:
        assert len(batch) * 16 <= 256


def test_budget_settles_below_the_smallest_batch_that_failed() -> None:
    lengths = np.full(2000, 8)
    forward = RecordingForward(lengths, oom_above=300)  # a lasting limit: 37 items of 8 tokens fit
    batcher = TokenBudgetBatcher(1024, grow_after=4, grow_factor=1.25)

    results = batcher.run(lengths, forward)

    assert np.array_equal(results, np.arange(2000, dtype=np.float32) * 10 + 0.5)
    # 1024 and 512 fail, then each regrowth stops at 0.9 x the last failure, so a few more failures close
    # in on the limit and the budget stays below it: 250 batches, no sawtooth.
    assert [len(batch) for batch in forward.failed][:2] == [128, 64]
    assert batcher.oom_count <= 6
    assert batcher.ceiling is not None and 256 <= batcher.budget <= batcher.ceiling <= 300


def test_budget_grows_back_to_the_maximum_once_the_failure_is_forgotten() -> None:
    lengths = np.full(1000, 8)
    forward = RecordingForward(lengths, oom_above=32, oom_calls=3)  # a transient memory squeeze
    batcher = TokenBudgetBatcher(256, grow_after=4, grow_factor=1.25, probe_after=10)

    results = batcher.run(lengths, forward)

    assert np.array_equal(results, np.arange(1000, dtype=np.float32) * 10 + 0.5)
    reasons = [change.reason for change in batcher.history]
    assert reasons[:4] == ["start", "oom", "oom", "oom"]
    assert "grow" in reasons[4:] and "probe" in reasons[4:]
    assert batcher.budget == 256
    budgets = [change.budget for change in batcher.history]
    assert budgets[3] == 32  # 256 halved three times
    assert all(later >= earlier for earlier, later in itertools.pairwise(budgets[3:]))
    times = [change.at for change in batcher.history]
    assert times == sorted(times)


def test_learned_budget_persists_across_runs() -> None:
    lengths = np.full(20, 10)
    batcher = TokenBudgetBatcher(200, grow_after=1000)
    batcher.run(lengths, RecordingForward(lengths, oom_above=120))
    assert batcher.budget == 100

    forward = RecordingForward(lengths)
    batcher.run(lengths, forward)

    assert max(len(batch) for batch in forward.batches) == 10


def test_runtime_error_mentioning_out_of_memory_counts_as_out_of_memory() -> None:
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))

    lengths = np.full(8, 4)
    calls = []

    def forward(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA error: out of memory")
        return np.zeros(len(batch), dtype=np.float32)

    TokenBudgetBatcher(32).run(lengths, forward)
    assert calls == [8, 4, 2, 2, 2, 2]


def test_other_errors_propagate_without_retry() -> None:
    calls = []

    def forward(batch: np.ndarray) -> np.ndarray:
        calls.append(batch)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    batcher = TokenBudgetBatcher(100)
    with pytest.raises(RuntimeError, match="shapes"):
        batcher.run(np.array([3, 3, 3]), forward)
    assert len(calls) == 1
    assert batcher.budget == 100


def test_single_item_out_of_memory_raises_a_clear_error() -> None:
    lengths = np.array([50, 900])

    with pytest.raises(DeviceOutOfMemoryError, match="single item of 900 tokens"):
        TokenBudgetBatcher(1000).run(lengths, RecordingForward(lengths, oom_above=800))


def test_forward_returning_the_wrong_number_of_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 rows for a batch of 3"):
        TokenBudgetBatcher(100).run(np.array([1, 1, 1]), lambda batch: np.zeros(2))


def test_deferred_rows_are_collected_once_every_batch_of_the_call_is_launched() -> None:
    # What a CUDA forward pass returns: rows still being computed, copied to the host behind the kernels.
    events: list[str] = []

    def forward(batch: np.ndarray) -> DeferredRows:
        events.append(f"launch {batch.tolist()}")

        def collect() -> np.ndarray:
            events.append(f"collect {batch.tolist()}")
            return batch.astype(np.float32) * 10

        return DeferredRows(len(batch), collect)

    scores = TokenBudgetBatcher(10).run(np.array([5, 4, 5, 3, 2]), forward)

    np.testing.assert_array_equal(scores, [0, 10, 20, 30, 40])
    launches = [event for event in events if event.startswith("launch")]
    assert events[: len(launches)] == launches and len(launches) == 3  # no waiting between batches
    assert sorted(event.split(" ", 1)[1] for event in events[len(launches) :]) == sorted(
        event.split(" ", 1)[1] for event in launches
    )


# --- device resolution -------------------------------------------------------------------------------


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cudnn_attention = torch.backends.cuda.cudnn_sdp_enabled()
    yield
    torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)  # resolving a CUDA target turns it off


def test_auto_device_is_cpu_without_cuda_with_float32_and_cpu_budget(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)

    target = resolve_compute(Settings(device="auto", dtype="auto"))

    assert target.device == torch.device("cpu")
    assert target.dtype == torch.float32
    assert target.token_budget == default_token_budget(torch.device("cpu"))


@pytest.mark.parametrize(("threads", "budget"), [(1, 1024), (2, 1024), (8, 4096), (64, 32768), (256, 32768)])
def test_cpu_budget_follows_the_thread_count_within_bounds(
    threads: int, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert default_token_budget(torch.device("cpu")) == budget


def test_auto_dtype_on_cpu_with_native_bf16_is_bfloat16(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype(Settings(), torch.device("cpu")) == torch.bfloat16


def test_auto_device_is_cuda_when_visible(fake_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_cuda_has_bf16", lambda: True)

    target = resolve_compute(Settings(device="auto", dtype="auto", token_budget=4096))

    assert target.device == torch.device("cuda", 0)
    assert target.dtype == torch.bfloat16
    assert target.token_budget == 4096
    # cuDNN's attention plans every new batch shape; the other kernels take any shape as it comes.
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert default_token_budget(torch.device("cuda", 0)) == CUDA_TOKEN_BUDGET == 65536


def test_auto_dtype_on_cuda_without_bf16_is_float16(fake_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_cuda_has_bf16", lambda: False)
    assert resolve_dtype(Settings(), torch.device("cuda", 0)) == torch.float16


def test_explicit_cpu_is_honoured_even_with_cuda(fake_cuda: None) -> None:
    target = resolve_compute(Settings(device="cpu", dtype="bfloat16"))
    assert (target.device, target.dtype) == (torch.device("cpu"), torch.bfloat16)


def test_explicit_cuda_without_a_gpu_raises(no_cuda: None) -> None:
    with pytest.raises(NoDeviceError, match=r"RERANK_DEVICE=cuda .*\(torch .*driver"):
        resolve_compute(Settings(device="cuda"))


@pytest.mark.parametrize(
    ("first_line", "driver"),
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024",
            "550.54.15",
        ),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  560.35.03  Release Build", "560.35.03"),
    ],
)
def test_an_unusable_gpu_is_reported_with_the_driver_and_cuda_versions(
    tmp_path: Path, first_line: str, driver: str
) -> None:
    version_file = tmp_path / "version"
    version_file.write_text(first_line + "\nGCC version: gcc 12\n")
    assert cuda_versions(version_file).endswith(f"NVIDIA driver {driver}")
    assert f"torch {torch.__version__}" in cuda_versions(version_file)
    assert "no NVIDIA driver loaded" in cuda_versions(tmp_path / "missing")


def test_float16_on_cpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="float16 is not usable on CPU"):
        resolve_dtype(Settings(dtype="float16"), torch.device("cpu"))


def test_bfloat16_on_a_cuda_device_without_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_cuda_has_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(ConfigError, match="V100 has no native bf16"):
        resolve_dtype(Settings(dtype="bfloat16"), torch.device("cuda", 0))


@pytest.mark.parametrize(
    ("capability", "flags", "amx", "native_bf16"),
    [
        ("AVX512", "fpu sse avx512f amx_bf16 amx_tile", True, True),
        ("AVX512", "fpu sse avx512f avx512_bf16", False, True),
        ("AVX512", "fpu sse avx512f", False, False),
        ("AVX2", "fpu amx_bf16x avx512_bf16x", False, False),
        ("AMX", "fpu", True, True),
    ],
)
def test_native_bf16_detection(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capability: str,
    flags: str,
    amx: bool,
    native_bf16: bool,
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(device_module, "_CPUINFO", cpuinfo)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cpu_has_amx.cache_clear()
    cpu_has_native_bf16.cache_clear()
    try:
        assert (cpu_has_amx(), cpu_has_native_bf16()) == (amx, native_bf16)
    finally:
        cpu_has_amx.cache_clear()
        cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("capability", "avx512"),
    [("AVX512", True), ("AVX512_BF16", True), ("AMX", True), ("AVX2", False), ("DEFAULT", False)],
)
def test_avx512_detection(monkeypatch: pytest.MonkeyPatch, capability: str, avx512: bool) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cpu_has_avx512.cache_clear()
    try:
        assert cpu_has_avx512() is avx512
    finally:
        cpu_has_avx512.cache_clear()


@pytest.mark.parametrize(
    ("full_rows", "single_rows"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_fixed_shapes_keep_batches_in_one_length_bucket_with_fixed_row_counts(
    full_rows: bool, single_rows: bool
) -> None:
    from worker.backends.local.batch_shapes import FixedShapes

    shapes = FixedShapes(length_step=16, row_step=2, full_rows=full_rows, single_rows=single_rows)
    lengths = random_lengths(301, seed=3)
    forward = RecordingForward(lengths)
    batcher = TokenBudgetBatcher(512, shapes=shapes)

    results = batcher.run(lengths, forward)

    assert np.array_equal(results, np.arange(301, dtype=np.float32) * 10 + 0.5)
    for batch in forward.batches:
        width = shapes.width(lengths[batch].max())
        if len(batch) > 1 or not single_rows:
            assert len(batch) == shapes.rows(width, 512) if full_rows else len(batch) % 2 == 0
        # Items longer than the budget run as one step of two rows, or a lone one as one row with single rows.
        assert len(batch) * width <= 512 or len(batch) == 2 or (single_rows and len(batch) == 1)
        assert len({shapes.width(length) for length in lengths[batch]}) == 1
    # Each item once, plus copies of a batch's last item to fill its rows.
    real = [item for batch in forward.batches for item in dict.fromkeys(batch.tolist())]
    assert sorted(real) == list(range(301))
    # The long buckets are sparse: some hold one item, which runs alone only with single rows.
    assert any(len(batch) == 1 for batch in forward.batches) is single_rows
    assert batcher.real_tokens == int(lengths.sum())
    widths = [shapes.width(lengths[batch].max()) for batch in forward.batches]
    assert batcher.padded_tokens == sum(len(b) * w for b, w in zip(forward.batches, widths, strict=True))


def test_fixed_shapes_are_given_up_under_memory_pressure() -> None:
    from worker.backends.local.batch_shapes import FixedShapes

    lengths = np.full(8, 100)
    forward = RecordingForward(lengths, oom_above=150)  # only single items fit
    batcher = TokenBudgetBatcher(1024, shapes=FixedShapes(), grow_after=1000)

    results = batcher.run(lengths, forward)

    assert np.array_equal(results, np.arange(8, dtype=np.float32) * 10 + 0.5)
    assert batcher.shapes is None
    assert all(len(batch) == 1 for batch in forward.batches)


def test_batch_invariance_is_the_default_below_float32_only() -> None:
    assert resolve_compute(Settings(device="cpu", dtype="bfloat16")).shapes is not None
    assert resolve_compute(Settings(device="cpu", dtype="float32")).shapes is None
    assert resolve_compute(Settings(device="cpu", dtype="float32", batch_invariant="on")).shapes is not None
    assert resolve_compute(Settings(device="cpu", dtype="bfloat16", batch_invariant="off")).shapes is None
