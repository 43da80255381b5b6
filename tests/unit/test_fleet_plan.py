"""The worker fleet's plan: one pinned worker per GPU, or CPU workers sharing the cores."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, NoDeviceError
from core.model_spec import ModelSpec
from worker.fleet.launcher import parse_gpus, plan_fleet

SPEC = ModelSpec.parse("cross-encoder:org/model")


def test_one_pinned_worker_per_gpu() -> None:
    fleet = plan_fleet(SPEC, [0, 2], 0, "redis://h:1/0", "host", "INFO")
    assert [p.name for p in fleet] == ["gpu0@host", "gpu2@host"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in fleet] == ["0", "2"]
    for process in fleet:
        assert process.env["RERANK_WORKER_MODEL"] == str(SPEC)
        assert f"--queues={SPEC.queue}" in process.argv
        assert "--concurrency=1" in process.argv and "--task-events" in process.argv


def test_workers_hold_the_shards_in_flight_they_are_given() -> None:
    for fleet in (
        plan_fleet(SPEC, [0], 0, "redis://h:1/0", "host", "INFO", shards_in_flight=2),
        plan_fleet(SPEC, None, 1, "redis://h:1/0", "host", "INFO", shards_in_flight=2),
    ):
        assert "--concurrency=2" in fleet[0].argv and "--pool=threads" in fleet[0].argv


def test_cpu_workers_hide_gpus_and_share_cores() -> None:
    fleet = plan_fleet(SPEC, None, 2, "redis://h:1/0", "host", "INFO")
    assert [p.name for p in fleet] == ["cpu0@host", "cpu1@host"]
    assert all(p.env["CUDA_VISIBLE_DEVICES"] == "" and p.env["RERANK_DEVICE"] == "cpu" for p in fleet)
    assert all(int(p.env["OMP_NUM_THREADS"]) >= 1 for p in fleet)


def test_parse_gpus() -> None:
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("2,0", 4) == [0, 2]
    with pytest.raises(NoDeviceError, match="no CUDA GPU is visible"):
        parse_gpus("all", 0)
    with pytest.raises(ConfigError, match=r"GPUs 0\.\.1"):
        parse_gpus("0,5", 2)
    with pytest.raises(ConfigError, match="expected 'all'"):
        parse_gpus("first", 2)


def test_gpus_are_mapped_through_an_inherited_cuda_visible_devices() -> None:
    # Under Slurm's CUDA_VISIBLE_DEVICES=2,3 torch shows the launcher GPUs 0 and 1: they are physical 2 and 3.
    fleet = plan_fleet(SPEC, [0, 1], 0, "redis://h:1/0", "host", "INFO", inherited_devices="2,3")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in fleet] == ["2", "3"]
    uuids = "GPU-8f1c7d2e-0000-0000-0000-000000000001,GPU-8f1c7d2e-0000-0000-0000-000000000002"
    fleet = plan_fleet(SPEC, [1], 0, "redis://h:1/0", "host", "INFO", inherited_devices=uuids)
    assert fleet[0].env["CUDA_VISIBLE_DEVICES"] == uuids.split(",")[1]
    with pytest.raises(ConfigError, match="not among the 2"):
        plan_fleet(SPEC, [2], 0, "redis://h:1/0", "host", "INFO", inherited_devices="2,3")


def test_gpu_workers_get_thread_limits_and_expandable_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    fleet = plan_fleet(SPEC, [0, 1], 0, "redis://h:1/0", "host", "INFO")
    assert all(p.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" for p in fleet)
    for process in fleet:
        threads = int(process.env["OMP_NUM_THREADS"])
        assert threads >= 1
        assert process.env["MKL_NUM_THREADS"] == process.env["RAYON_NUM_THREADS"] == str(threads)


def test_a_users_allocator_setting_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    fleet = plan_fleet(SPEC, [0], 0, "redis://h:1/0", "host", "INFO")
    assert fleet[0].env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
