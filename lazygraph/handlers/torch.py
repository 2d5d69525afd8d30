"""What lazygraph knows about torch tensors: hash, size, describe, ship them, and their device.

Imported by ``handlers.registry`` the first time a torch type is seen. Covers ``Tensor`` and
its subclasses (``nn.Parameter``). Does not cover: the ``torch.cuda`` boundary (emptying the
cache, OOM errors, device memory: ``lazygraph.cuda``), modules and other torch objects
(pickled and sized as plain objects, which reaches a module's parameters), or freezing
(torch has no read-only tensors).

Hashing: dtype, shape, ``requires_grad``, the subclass (``nn.Parameter``), contiguity and
the strides of a non-contiguous tensor (a function can observe them), and the content in
logical order. Device is left out so a CUDA tensor and its CPU copy share a digest (results
agree across machines); ``requires_grad`` stays in because serving a result computed
without autograd to a caller that needs gradients would break ``backward()``. Sparse,
quantized, nested and meta tensors are hashed through pickle. A tensor off the host is
copied over in pieces.

Sizing: a tensor costs its whole storage, named by (device, address), so views and
``torch.from_numpy`` arrays share it; a leaf's ``.grad`` is counted too.

>>> import torch
>>> _describe(torch.zeros(2, 3))
'Tensor float32[2, 3] on cpu'
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch

from .base import HashWalk, SizeWalk, TypeHandler, header, text, type_token

__all__ = ["HANDLERS", "device_name"]

_CHUNK_BYTES = 1 << 20  # non-contiguous CPU tensors are hashed in pieces this size
_DEVICE_CHUNK_BYTES = 64 << 20  # a GPU tensor is copied to the host in pieces this size
_TENSOR_OBJECT = 80  # the tensor object, counted inside containers (see handlers.numpy)


def device_name(device: Any) -> str:
    """``"cuda:N"`` for a CUDA device (index 0 when unset), else the device's own name."""
    if device.type == "cuda":
        return f"cuda:{0 if device.index is None else int(device.index)}"
    return str(device)


# -- hash ---------------------------------------------------------------------------------


def _hash_tensor(walk: HashWalk, h: Any, t: Any) -> None:
    special = t.is_quantized or getattr(t, "is_nested", False) or t.device.type == "meta"
    if t.layout != torch.strided or special:
        walk.pickled(h, t)  # sparse, quantized...: pickling yields their dense parts
        return
    grad = b"g" if t.requires_grad else b"-"
    h.update(b"Y" + text(str(t.dtype)) + header(b"n", t.dim()) + grad)
    h.update(struct.pack(f"<{t.dim()}q", *t.shape))
    # What a function can observe beyond the values: the subclass (nn.Parameter) and, for
    # a non-contiguous tensor, its strides (``is_contiguous()``, ``.stride()``, ``.view``).
    h.update(b"-" if type(t) is torch.Tensor else b"s" + type_token(t))
    if t.is_contiguous():
        h.update(b"C")
    else:
        h.update(b"S" + struct.pack(f"<{t.dim()}q", *t.stride()))
    t = t.detach().resolve_conj().resolve_neg()
    if t.numel() == 0:
        return
    if t.device.type == "cpu":
        _hash_cpu(h, t)
        return
    # Off the host: copy it over in pieces so host memory stays bounded.
    step = max(1, _DEVICE_CHUNK_BYTES // t.element_size())
    for part in t.reshape(-1).split(step):
        h.update(part.cpu().view(torch.uint8).numpy())


def _hash_cpu(h: Any, t: Any) -> None:
    if t.is_contiguous():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
        return
    row_bytes = t.element_size() * math.prod(t.shape[1:])
    if t.dim() > 1 and row_bytes >= _CHUNK_BYTES:
        for row in t:
            _hash_cpu(h, row)
        return
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    for part in t.split(step):
        h.update(part.contiguous().reshape(-1).view(torch.uint8).numpy())


# -- size -------------------------------------------------------------------------------------


def _size_tensor(walk: SizeWalk, tensor: Any, depth: int) -> None:
    walk.private += _TENSOR_OBJECT if depth else 0
    device = device_name(tensor.device)
    try:
        storage = tensor.untyped_storage()
        nbytes, address = int(storage.nbytes()), storage.data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse, nested: no single storage
        nbytes, address = tensor.element_size() * tensor.nelement(), 0
    if tensor.device.type == "meta":
        return  # a meta tensor has a shape and no data
    if address:
        walk.add_buffer((device, address), nbytes, device)
    elif device == "cpu":
        walk.private += nbytes
    else:
        walk.add_buffer((device, "tensor", id(tensor)), nbytes, device)
    if tensor.is_leaf and tensor.grad is not None:
        walk.visit(tensor.grad, depth + 1)


# -- describe, ship, device -------------------------------------------------------------------


def _describe(t: Any) -> str:
    dtype = str(t.dtype).removeprefix("torch.")
    grad = " requires_grad" if t.requires_grad else ""
    return f"Tensor {dtype}[{', '.join(map(str, t.shape))}] on {t.device}{grad}"


def _holds_buffers(t: Any) -> bool:
    return bool(t.device.type == "cpu")  # a GPU tensor cannot be memory-mapped from a file


def _device(t: Any) -> str:
    return device_name(t.device)


HANDLERS: dict[type, TypeHandler] = {
    torch.Tensor: TypeHandler(
        hash=_hash_tensor,
        size=_size_tensor,
        describe=_describe,
        holds_buffers=_holds_buffers,
        device=_device,
    ),
}
