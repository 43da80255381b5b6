"""Where and in which precision local models run, resolved once from ``Settings``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from core.errors import ConfigError, NoDeviceError
from core.settings import Settings
from worker.backends.local.batch_shapes import FixedShapes

# Padded tokens per batch when RERANK_TOKEN_BUDGET is unset. On CPU each thread works through its share
# of a batch's rows, so the budget grows with the thread count (counted as at least two). Measured on 2
# AVX-512 cores (MiniLM-L6 cross-encoder, one process, budgets interleaved): compiled with TorchInductor,
# 1024 tokens ran 3-8% faster than 2048 in bf16 and float32 and 20-40% faster than 4096, as a batch's
# activations and attention scores stay near the cores' caches; 512 was 25% slower. Uncompiled, 1024 and
# 2048 were equal. A 24-layer XLM-R large was flat from 512 to 4k. On a GPU 64k tokens keeps a base-size
# reranker busy, and the batcher halves the budget on out-of-memory for bigger models.
CPU_TOKENS_PER_THREAD = 512
CPU_MAX_TOKEN_BUDGET = 32768
CUDA_TOKEN_BUDGET = 65536

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class ComputeTarget:
    """The device, compute dtype and padded-token budget a local model runs with."""

    device: torch.device
    dtype: torch.dtype
    token_budget: int
    # Batch shapes that keep a score independent of its batch; None: batches padded to their longest.
    shapes: FixedShapes | None = None


def resolve_compute(settings: Settings) -> ComputeTarget:
    """Resolve ``device``, ``dtype`` and ``token_budget`` from the settings; raise on impossible choices."""
    device = resolve_device(settings)
    if device.type == "cuda":
        avoid_cudnn_attention()
    dtype = resolve_dtype(settings, device)
    invariant = settings.batch_invariant == "on" or (
        settings.batch_invariant == "auto" and dtype != torch.float32
    )
    return ComputeTarget(
        device=device,
        dtype=dtype,
        token_budget=settings.token_budget or default_token_budget(device),
        shapes=FixedShapes() if invariant else None,
    )


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per batch when RERANK_TOKEN_BUDGET is unset: per CPU thread on CPU, fixed on CUDA."""
    if device.type == "cuda":
        return CUDA_TOKEN_BUDGET
    return min(CPU_MAX_TOKEN_BUDGET, CPU_TOKENS_PER_THREAD * max(2, torch.get_num_threads()))


def resolve_device(settings: Settings) -> torch.device:
    """``auto``: CUDA when visible, else CPU. ``cuda`` without a visible GPU raises ``NoDeviceError``."""
    if settings.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if settings.device == "cuda":
        raise NoDeviceError(
            f"RERANK_DEVICE=cuda but torch sees no CUDA device ({cuda_versions()}); check the driver "
            "(a CUDA build needs a driver at least as new as its CUDA version allows) and "
            "CUDA_VISIBLE_DEVICES, or set RERANK_DEVICE=cpu"
        )
    return torch.device("cpu")


def avoid_cudnn_attention() -> None:
    """Leave cuDNN out of ``scaled_dot_product_attention``'s choices in this process.

    cuDNN's fused attention, torch's first choice for bf16 and fp16 on Hopper GPUs, builds an execution
    plan for every new batch shape, and a reranker's length-sorted batches come in hundreds of shapes: the
    first pass over a corpus paid for plans, not attention, and the load-time calibration timed bf16 far
    below float32 (which cuDNN does not serve). The memory-efficient and flash kernels need no plans."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def cuda_versions(driver_file: Path = Path("/proc/driver/nvidia/version")) -> str:
    """torch's CUDA build and the NVIDIA kernel driver's version, for messages about an unusable GPU."""
    build = (
        f"torch {torch.__version__} built for CUDA {torch.version.cuda}"
        if torch.version.cuda
        else (f"torch {torch.__version__} is a CPU-only build")
    )
    try:
        first_line = driver_file.read_text().splitlines()[0]
    except (OSError, IndexError):
        return f"{build}; no NVIDIA driver loaded ({driver_file} missing)"
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", first_line)
    driver = match.group(1) if match else first_line.strip()
    return f"{build}; NVIDIA driver {driver}"


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """``auto``: bf16 (else fp16) on CUDA, bf16 on CPUs with native bf16 matmuls (AMX or AVX512-BF16),
    else float32. Explicit ones are checked."""
    if settings.dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if _cuda_has_bf16() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    dtype = _DTYPES[settings.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError(
            "RERANK_DTYPE=float16 is not usable on CPU (most kernels lack fp16 there); "
            "use bfloat16, float32 or auto"
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not _cuda_has_bf16():
        raise ConfigError(
            f"RERANK_DTYPE=bfloat16 but {torch.cuda.get_device_name(device)} has no native bf16; "
            "use float16 or auto"
        )
    return dtype


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when the CPU has AMX bf16 tiles (bf16 matmuls about 10x float32)."""
    if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
        return True
    return "amx_bf16" in cpu_flags()


@lru_cache(maxsize=1)
def cpu_has_avx512() -> bool:
    """True when torch's CPU kernels run at AVX-512 width (or AMX) rather than AVX2 or narrower."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return capability.startswith("AVX512") or "AMX" in capability


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively: AMX tiles, or AVX512-BF16 dot products
    (Cooper Lake, Zen 4 and later; measured on a Zen 4 EPYC: bf16 matmuls 4x float32, the MiniLM
    cross-encoder 2.3x). Without either, bf16 is emulated and slower than float32."""
    return cpu_has_amx() or "avx512_bf16" in cpu_flags()


def cpu_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists for the first CPU (empty where it cannot be read)."""
    try:
        cpuinfo = _CPUINFO.read_text()
    except OSError:
        return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


class ForwardClock:
    """Adds up the seconds spent in model forward passes on one device. On CUDA each pass is timed by a
    pair of events on the stream, read once the work is done, so timing never makes the host wait."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the block; a block that raises (e.g. out-of-memory) is not counted."""
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((start, end))
            return
        started = time.perf_counter()
        yield
        self._seconds += time.perf_counter() - started

    @property
    def seconds(self) -> float:
        """The seconds measured so far (on CUDA, after waiting for the passes measured)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events.clear()
        return self._seconds


class HostCopy:
    """A tensor's values on the host. From a CUDA tensor they are copied into pinned memory without
    blocking (the copy is queued behind the kernels that compute them); ``wait`` returns them once it
    is done. A CPU tensor is its own copy."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._done: torch.cuda.Event | None = None
        if tensor.device.type != "cuda":
            self._host = tensor
            return
        self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self._host.copy_(tensor, non_blocking=True)
        self._done = torch.cuda.Event()
        self._done.record()

    def wait(self) -> torch.Tensor:
        if self._done is not None:
            self._done.synchronize()
        return self._host


def describe_dtype(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def _cuda_has_bf16() -> bool:
    return torch.cuda.is_bf16_supported(including_emulation=False)
