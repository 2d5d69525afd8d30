"""The store's CUDA paths through real pulls, without a GPU (SPEC S5.6).

Values are real torch tensors. The only fakes sit at the torch.cuda boundary: a tensor
subclass whose ``.device`` says ``cuda:N`` (its storage stays on the CPU, so sizing reads real
bytes), ``torch.cuda.is_available`` answering True, ``torch.cuda.empty_cache`` counting its
calls, and nodes raising ``torch.cuda.OutOfMemoryError`` the way an allocation on a full GPU
would.
"""

from __future__ import annotations

import collections
import gc
import types
import weakref
from typing import Any

import pytest
import torch

import lazygraph
from lazygraph.errors import NodeError
from lazygraph.store.base import ENTRY_OVERHEAD

BLOCK = 65_536  # float32 elements: 256 KiB per tensor
BLOCK_BYTES = BLOCK * 4

calls: collections.Counter[str] = collections.Counter()
oom_budget: dict[str, int] = {}  # how many more times a node raises OutOfMemoryError


class OnCuda0(torch.Tensor):
    """A real tensor that reports living on the first GPU."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


class OnCuda1(torch.Tensor):
    """A real tensor that reports living on the second GPU."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 1)


DEVICES: dict[int, Any] = {0: OnCuda0, 1: OnCuda1}


@lazygraph.node
def gpu_block(i: int, device: int = 0) -> torch.Tensor:
    calls[f"gpu_block {i} {device}"] += 1
    return torch.full((BLOCK,), float(i)).as_subclass(DEVICES[device])


@lazygraph.node
def cpu_block(i: int) -> torch.Tensor:
    calls[f"cpu_block {i}"] += 1
    return torch.full((BLOCK,), float(i))


@lazygraph.node
def hungry(x: torch.Tensor, tag: str) -> float:
    """Runs out of GPU memory while ``oom_budget[tag]`` lasts, then succeeds."""
    calls[f"hungry {tag}"] += 1
    if oom_budget.get(tag, 0) > 0:
        oom_budget[tag] -= 1
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 8.00 GiB total capacity)"
        )
    return float(x.sum())


@lazygraph.node
def legacy_oom(tag: str) -> str:
    """Older torch and custom kernels raise a RuntimeError with this message instead."""
    calls[f"legacy_oom {tag}"] += 1
    if oom_budget.get(tag, 0) > 0:
        oom_budget[tag] -= 1
        raise RuntimeError("CUDA error: out of memory")
    return tag


@lazygraph.node
def broken(tag: str) -> None:
    calls[f"broken {tag}"] += 1
    raise ValueError(f"not a memory problem ({tag})")


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.cuda says a GPU is there; ``empty_cache`` calls are recorded in the list."""
    emptied: list[str] = []
    calls.clear()
    oom_budget.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("empty_cache"))
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: types.SimpleNamespace(total_memory=8 * 2**30),
    )
    return emptied


def location(session: lazygraph.Session, n: lazygraph.Node) -> str:
    return session.store.location(bytes.fromhex(n.key))


def test_fake_tensor_counts_as_gpu_memory(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=10 * BLOCK_BYTES, progress=False) as session:
        value = gpu_block(1).compute()
        assert value.device.type == "cuda" and isinstance(value, OnCuda0)
        stats = session.stats()
        assert stats.cuda_bytes == BLOCK_BYTES
        assert stats.bytes_in_memory == 0  # GPU bytes are not charged to memory_limit
    assert gpu == []  # nothing was evicted, so nothing to give back


def test_cuda_limit_eviction_empties_cache_and_frees_the_tensor(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=2 * BLOCK_BYTES + 100, progress=False) as session:
        first = gpu_block(1)
        freed = weakref.ref(first.compute())  # the store holds it; this test does not
        gpu_block(2).compute()
        assert freed() is not None and gpu == []
        gpu_block(3).compute()  # a third block does not fit: the least recently used goes
        gc.collect()
        assert freed() is None, "the evicted tensor is still referenced somewhere"
        assert gpu == ["empty_cache"]
        assert session.stats().cuda_bytes == 2 * BLOCK_BYTES
        assert location(session, first) == "absent"
        assert location(session, gpu_block(3)) == "memory"
        assert float(first.compute()[0]) == 1.0  # recomputed correctly
        assert calls["gpu_block 1 0"] == 2
        assert calls["gpu_block 3 0"] == 1


def test_eviction_follows_gpu_lru_order(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=2 * BLOCK_BYTES + 100, progress=False) as session:
        a, b, c = gpu_block(1), gpu_block(2), gpu_block(3)
        a.compute()
        b.compute()
        a.compute()  # a is now the most recently used
        c.compute()
        assert location(session, a) == "memory"
        assert location(session, c) == "memory"
        assert location(session, b) != "memory"


def test_an_evicted_tensor_the_user_holds_is_served_without_recomputing(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=BLOCK_BYTES + 100, progress=False) as session:
        kept = gpu_block(1).compute()
        gpu_block(2).compute()
        assert location(session, gpu_block(1)) == "weak"
        assert gpu_block(1).compute() is kept
        assert calls["gpu_block 1 0"] == 1
        # The hit promoted block 1 back to memory, which pushed block 2 out in its turn.
        assert location(session, gpu_block(1)) == "memory"
        assert location(session, gpu_block(2)) != "memory"
        assert gpu == ["empty_cache", "empty_cache"]


def test_cuda_limit_is_per_device(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=2 * BLOCK_BYTES + 100, progress=False) as session:
        on0 = [gpu_block(i, 0) for i in range(2)]
        on1 = [gpu_block(i, 1) for i in range(2)]
        session.compute(*on0, *on1)  # two per device: each device is exactly full
        assert session.stats().cuda_bytes == 4 * BLOCK_BYTES
        assert gpu == []
        gpu_block(9, 1).compute()  # only device 1 is over its limit
        assert [location(session, n) for n in on0] == ["memory", "memory"]
        assert location(session, on1[0]) != "memory"
        assert location(session, on1[1]) == "memory"
        assert gpu == ["empty_cache"]


def test_default_cuda_limit_is_half_the_device(gpu: list[str]) -> None:
    with lazygraph.Session(progress=False) as session:  # the fake device has 8 GiB
        session.compute(*[gpu_block(i) for i in range(4)])
        assert session.stats().cuda_bytes == 4 * BLOCK_BYTES
        assert gpu == []


def test_cpu_tensors_never_touch_the_gpu_cache(gpu: list[str]) -> None:
    with lazygraph.Session(
        memory_limit=2 * (BLOCK_BYTES + ENTRY_OVERHEAD) + 100, spill=False, progress=False
    ) as session:  # two blocks fit, with the store's bookkeeping for each
        session.compute(*[cpu_block(i) for i in range(5)])  # CPU evictions only
        stats = session.stats()
        assert stats.cuda_bytes == 0
        assert stats.evictions == 3
        assert stats.bytes_in_memory <= 2 * BLOCK_BYTES
    assert gpu == []


def test_oom_releases_gpu_entries_and_retries_once(gpu: list[str]) -> None:
    oom_budget["once"] = 1
    with lazygraph.Session(cuda_limit=100 * BLOCK_BYTES, progress=False) as session:
        held = gpu_block(7)
        freed = weakref.ref(held.compute())
        cpu_input = cpu_block(2)
        total = hungry(cpu_input, "once")
        assert total.compute() == 2.0 * BLOCK
        assert calls["hungry once"] == 2  # the failed try and the retry
        assert calls["cpu_block 2"] == 1  # its input was not recomputed for the retry
        assert gpu == ["empty_cache"]
        gc.collect()
        assert freed() is None, "the GPU entry was not released before the retry"
        assert location(session, held) == "absent"
        assert location(session, cpu_input) == "memory"  # CPU entries stay
        assert session.stats().cuda_bytes == 0
        assert total.compute() == 2.0 * BLOCK  # now cached: nothing runs again
        assert calls["hungry once"] == 2


def test_oom_retry_frees_a_gpu_input_only_after_the_pull_is_done_with_it(
    gpu: list[str],
) -> None:
    oom_budget["input"] = 1
    with lazygraph.Session(cuda_limit=100 * BLOCK_BYTES, progress=False) as session:
        block = gpu_block(3)
        result = hungry(block, "input")
        assert result.compute() == 3.0 * BLOCK  # the retry still got its argument
        assert calls["gpu_block 3 0"] == 1
        assert calls["hungry input"] == 2
        assert location(session, block) != "memory"  # released by the OOM handling
        assert gpu == ["empty_cache"]


def test_second_oom_propagates_as_node_error(gpu: list[str]) -> None:
    oom_budget["twice"] = 2
    with lazygraph.Session(cuda_limit=100 * BLOCK_BYTES, progress=False) as session:
        total = hungry(cpu_block(1), "twice")
        with pytest.raises(NodeError) as info:
            total.compute()
        assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
        assert "hungry" in str(info.value)
        assert calls["hungry twice"] == 2  # retried once, not more
        assert location(session, total) == "absent"  # the failed node cached nothing
        assert location(session, cpu_block(1)) == "memory"  # finished work stays
        assert total.compute() == 1.0 * BLOCK  # the OOMs are over: pulling again works
        assert calls["hungry twice"] == 3


def test_runtime_error_oom_message_is_retried_too(gpu: list[str]) -> None:
    oom_budget["legacy"] = 1
    with lazygraph.Session(cuda_limit=100 * BLOCK_BYTES, progress=False):
        assert legacy_oom("legacy").compute() == "legacy"
    assert calls["legacy_oom legacy"] == 2
    assert gpu == ["empty_cache"]


def test_other_errors_are_not_retried(gpu: list[str]) -> None:
    with lazygraph.Session(cuda_limit=100 * BLOCK_BYTES, progress=False) as session:
        held = gpu_block(1)
        held.compute()
        with pytest.raises(NodeError) as info:
            broken("plain").compute()
        assert isinstance(info.value.__cause__, ValueError)
        assert calls["broken plain"] == 1
        assert location(session, held) == "memory"  # no GPU entry was released
    assert gpu == []


def test_without_a_gpu_an_oom_is_still_retried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch reports no GPU (as on this machine): release_cuda must not call into torch.cuda.
    def no_gpu_call() -> Any:
        raise AssertionError("torch.cuda.empty_cache called without a GPU")

    calls.clear()
    oom_budget.clear()
    oom_budget["nogpu"] = 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "empty_cache", no_gpu_call)
    with lazygraph.Session(progress=False):
        assert hungry(cpu_block(4), "nogpu").compute() == 4.0 * BLOCK
    assert calls["hungry nogpu"] == 2
