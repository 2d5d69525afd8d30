"""Tests for lazygraph.cuda without a GPU: CPU tensors, and fakes only at torch.cuda."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from lazygraph import cuda
from lazygraph.errors import NodeError

GiB = 2**30


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pretend torch.cuda has one 8 GiB GPU; record the calls lazygraph makes."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * GiB)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: types.SimpleNamespace(total_memory=8 * GiB),
    )
    return calls


def test_importing_lazygraph_cuda_does_not_import_torch() -> None:
    code = (
        "import sys, lazygraph.cuda as c\n"
        "from lazygraph.handlers.registry import device\n"
        "c.empty_cache()\n"
        "print('torch' in sys.modules, device(object()), c.memory_reserved(),"
        " c.is_cuda_oom(RuntimeError('CUDA out of memory')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None", "0", "True"]


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB (GPU 0; 7.79 GiB total)"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported..."),
    ],
)
def test_cuda_oom_is_recognized(exc: BaseException) -> None:
    assert cuda.is_cuda_oom(exc)


def test_cuda_oom_behind_a_cause_is_recognized() -> None:
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory")
    wrapped = ValueError("batch failed")
    wrapped.__cause__ = oom
    assert cuda.is_cuda_oom(wrapped)
    node_error = NodeError("train", ["train"], oom)
    node_error.__cause__ = oom
    assert cuda.is_cuda_oom(node_error)


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        ValueError("CUDA out of memory"),  # not a RuntimeError
        RuntimeError("shape mismatch"),
        KeyboardInterrupt(),
    ],
)
def test_other_errors_are_not_cuda_oom(exc: BaseException) -> None:
    assert not cuda.is_cuda_oom(exc)


def test_without_a_gpu_everything_is_zero_and_quiet() -> None:
    assert not torch.cuda.is_available()  # this suite runs on CPU machines
    cuda.empty_cache()
    assert cuda.memory_reserved("cuda:0") == 0
    assert cuda.memory_allocated("cuda:0") == 0
    assert cuda.device_total_memory("cuda:0") == 0
    assert cuda.default_cuda_limit("cuda:0") == 0


def test_empty_cache_calls_torch_when_a_gpu_is_available(fake_gpu: list[str]) -> None:
    cuda.empty_cache()
    assert fake_gpu == ["empty_cache"]


def test_empty_cache_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    cuda.empty_cache()
    monkeypatch.setattr(torch.cuda, "is_available", broken)
    cuda.empty_cache()
    assert cuda.memory_reserved() == 0


def test_device_memory_readings(fake_gpu: list[str]) -> None:
    assert cuda.memory_reserved("cuda:0") == 3 * GiB
    assert cuda.memory_allocated("cuda:0") == 2 * GiB
    assert cuda.device_total_memory("cuda:0") == 8 * GiB
    assert cuda.default_cuda_limit("cuda:0") == 4 * GiB


def test_readings_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_device(device: object = None) -> int:
        raise AssertionError(f"Invalid device id {device}")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_reserved", unknown_device)
    monkeypatch.setattr(torch.cuda, "get_device_properties", unknown_device)
    assert cuda.memory_reserved("cuda:7") == 0
    assert cuda.device_total_memory("cuda:7") == 0
