"""GPU gauges: exported from a CUDA worker's torch, absent on CPU-only workers, and never initialising CUDA."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.gpu_interp.metrics import GpuCollector


def fake_torch(*, available: bool, initialized: bool = True, nvml: bool = True) -> Any:
    def utilization(index: int) -> int:
        if not nvml:
            raise ModuleNotFoundError("pynvml")
        return 75

    cuda = SimpleNamespace(
        is_available=lambda: available,
        is_initialized=lambda: initialized,
        device_count=lambda: 2,
        mem_get_info=lambda index: (30 * 2**30, 80 * 2**30),
        memory_allocated=lambda index: 2**30 * (index + 1),
        utilization=utilization,
    )
    return SimpleNamespace(cuda=cuda)


def scrape(monkeypatch: pytest.MonkeyPatch, torch: Any) -> str:
    if torch is None:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "torch", torch)
    registry = CollectorRegistry()
    registry.register(GpuCollector())
    return generate_latest(registry).decode()


def test_a_cuda_worker_exports_memory_and_utilisation_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=True))
    registry = CollectorRegistry()
    registry.register(GpuCollector())

    def value(name: str, gpu: str) -> float | None:
        return registry.get_sample_value(name, {"gpu": gpu})

    assert value("infiniteflow_gpu_memory_used_bytes", "1") == 50 * 2**30
    assert value("infiniteflow_gpu_memory_total_bytes", "0") == 80 * 2**30
    assert value("infiniteflow_gpu_memory_allocated_bytes", "1") == 2 * 2**30
    assert value("infiniteflow_gpu_utilization_ratio", "0") == 0.75


def test_without_nvml_memory_is_still_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    text = scrape(monkeypatch, fake_torch(available=True, nvml=False))
    assert "infiniteflow_gpu_memory_used_bytes" in text
    assert "infiniteflow_gpu_utilization_ratio" not in text


@pytest.mark.parametrize(
    "torch",
    [None, fake_torch(available=False), fake_torch(available=True, initialized=False)],
    ids=["torch not imported", "no CUDA", "CUDA not initialised yet"],
)
def test_cpu_workers_export_no_gpu_series(monkeypatch: pytest.MonkeyPatch, torch: Any) -> None:
    assert "infiniteflow_gpu_" not in scrape(monkeypatch, torch)
