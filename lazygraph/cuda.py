"""GPU helpers for the store: CUDA out-of-memory errors, emptying torch's cache, device memory.

Covers: the small surface of ``torch.cuda`` the store and the scheduler need (SPEC S5.6),
every function safe to call without torch, without a GPU, and without raising.  Importing
this module never imports torch: each function looks torch up in ``sys.modules``, since a CUDA
tensor can only exist once the user has imported torch.  Does not cover: deciding what to
release (the store does), retrying a node (the scheduler does), or what a tensor is and
where it lives (``handlers.torch``: ``handlers.registry.device(value)``, and the device of
each part of ``sizing.footprint(value)``).

>>> is_cuda_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
True
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = [
    "DEFAULT_CUDA_FRACTION",
    "default_cuda_limit",
    "device_total_memory",
    "empty_cache",
    "is_cuda_oom",
    "memory_allocated",
    "memory_reserved",
]

logger = logging.getLogger(__name__)

DEFAULT_CUDA_FRACTION = 0.5
"""Share of a device's memory the store may fill when ``cuda_limit`` is not given: the other
half is for the activations and temporaries of the code that runs next."""

_OOM_MESSAGES = ("CUDA out of memory", "CUDA error: out of memory")


def _torch() -> Any:
    return sys.modules.get("torch")


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a CUDA out-of-memory error.

    True for ``torch.cuda.OutOfMemoryError`` and for a ``RuntimeError`` whose message says
    "CUDA out of memory" (older torch, custom kernels), following ``__cause__`` a few steps.

    >>> is_cuda_oom(ValueError("CUDA out of memory"))
    False
    """
    torch = _torch()
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if oom_type is not None and isinstance(current, oom_type):
            return True
        if isinstance(current, RuntimeError) and any(m in str(current) for m in _OOM_MESSAGES):
            return True
        current = current.__cause__
    return False


def _cuda_available() -> Any:
    """torch.cuda if torch is imported and reports a usable GPU, else None."""
    torch = _torch()
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install means "no GPU" here
        return None


def empty_cache() -> None:
    """Return torch's cached, unused GPU blocks to the driver; never raises.

    Does nothing when torch is not imported or no GPU is available.

    >>> empty_cache()
    """
    cuda = _cuda_available()
    if cuda is None:
        return
    try:
        cuda.empty_cache()
    except Exception as exc:  # cleanup is best effort; the caller carries on either way
        logger.debug("torch.cuda.empty_cache() failed: %r", exc)


def memory_reserved(device: str | int | None = None) -> int:
    """Bytes torch's allocator holds on ``device`` (``"cuda:0"``); 0 without a GPU.

    >>> memory_reserved("cuda:0") >= 0
    True
    """
    return _ask("memory_reserved", device)


def memory_allocated(device: str | int | None = None) -> int:
    """Bytes of live tensors on ``device``; 0 without a GPU.

    >>> memory_allocated() >= 0
    True
    """
    return _ask("memory_allocated", device)


def device_total_memory(device: str | int | None = None) -> int:
    """Total memory of ``device`` in bytes; 0 without a GPU.

    >>> device_total_memory("cuda:0") >= 0
    True
    """
    cuda = _cuda_available()
    if cuda is None:
        return 0
    try:
        return int(cuda.get_device_properties(device).total_memory)
    except Exception as exc:  # an unknown device has no memory to give
        logger.debug("device_total_memory(%r) failed: %r", device, exc)
        return 0


def default_cuda_limit(device: str | int | None = None) -> int:
    """Bytes the store may hold on ``device`` by default: half the device; 0 without a GPU.

    >>> default_cuda_limit("cuda:0") >= 0
    True
    """
    return int(device_total_memory(device) * DEFAULT_CUDA_FRACTION)


def _ask(name: str, device: str | int | None) -> int:
    cuda = _cuda_available()
    if cuda is None:
        return 0
    try:
        return int(getattr(cuda, name)(device))
    except Exception as exc:  # an unknown device reports nothing held
        logger.debug("torch.cuda.%s(%r) failed: %r", name, device, exc)
        return 0
