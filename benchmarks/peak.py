"""The device's measured matrix-multiply peak per dtype, the yardstick for model FLOP utilization.

Run as ``python -m benchmarks.peak`` in a child pinned like the contenders: square matmuls of a few
sizes, each timed for a fraction of a second, best of several rounds (so a neighbour's burst of CPU use
lowers the peak less than it lowers a single timing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.contender import REPO, child_env, pin

CPU_SIZES = (2048, 3072)
CUDA_SIZES = (4096, 8192, 16384)
ROUNDS = 2
SECONDS_PER_TIMING = 0.3
# A dtype the device only emulates (bf16 on an AVX2 CPU: ~1-2 GFLOP/s) would take minutes per large
# matmul: each dtype is first timed at PROBE_SIZE, and sizes whose one matmul would take longer than
# MAX_SECONDS_PER_CALL at that rate are left out (the probe's own figure stands in if all are).
PROBE_SIZE = 512
MAX_SECONDS_PER_CALL = 1.0


def measure_peaks(
    device: str, cpus: list[int], quick: bool = False, timeout_s: float = 300
) -> dict[str, float]:
    """GFLOP/s of the best matmul per dtype (``peak_dtypes``), measured in a pinned child;
    ``quick`` times one size once per dtype."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.peak",
        f"--device={device}",
        f"--cpus={','.join(map(str, cpus))}",
    ]
    completed = subprocess.run(
        [*command, "--quick"] if quick else command,
        cwd=REPO,
        env=child_env(len(cpus), device),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"matmul peak measurement failed:\n{completed.stderr[-4000:]}")
    return {dtype: float(gflops) for dtype, gflops in json.loads(completed.stdout.splitlines()[-1]).items()}


def matmul_gflops(device: str, dtype_name: str, size: int, seconds: float = SECONDS_PER_TIMING) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    _synchronize(device)
    count = 0
    started = time.perf_counter()
    while True:
        a @ b
        count += 1
        _synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2.0 * size**3 * count / elapsed / 1e9


def affordable_sizes(sizes: tuple[int, ...], gflops: float) -> list[int]:
    """The ``sizes`` whose one square matmul takes at most MAX_SECONDS_PER_CALL at ``gflops``."""
    return [size for size in sizes if 2.0 * size**3 / (gflops * 1e9) <= MAX_SECONDS_PER_CALL]


def peak_dtypes(device: str) -> tuple[str, ...]:
    """The dtypes worth a peak: on CPU float32 and bf16 only, as CPUs without fp16 matrix units emulate
    fp16 matmuls at a small fraction of float32 (and the workers never compute in fp16 there)."""
    if device.startswith("cuda"):
        return ("float32", "bfloat16", "float16")
    return ("float32", "bfloat16")


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--quick", action="store_true", help="one size, one round")
    args = parser.parse_args(argv)
    pin([int(cpu) for cpu in args.cpus.split(",")])
    sizes = CUDA_SIZES if args.device.startswith("cuda") else CPU_SIZES
    rounds, seconds = (1, SECONDS_PER_TIMING / 2) if args.quick else (ROUNDS, SECONDS_PER_TIMING)
    if args.quick:
        sizes = sizes[:1]
    peaks = {}
    for dtype in peak_dtypes(args.device):
        probe = matmul_gflops(args.device, dtype, PROBE_SIZE, seconds)
        fitting = affordable_sizes(sizes, probe)
        timings = [
            matmul_gflops(args.device, dtype, size, seconds) for _ in range(rounds) for size in fitting
        ]
        peaks[dtype] = max([probe, *timings])
    print(json.dumps(peaks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
