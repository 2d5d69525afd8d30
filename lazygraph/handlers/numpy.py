"""What lazygraph knows about numpy values: hash, size, freeze, describe and ship them.

Imported by ``handlers.registry`` the first time a numpy type is seen (numpy is loaded by
then). Covers ``ndarray`` (and subclasses: memmap, masked arrays), numpy scalars, dtypes and
ufuncs; the array helpers here are reused by ``handlers.pandas``. Does not cover: walking
containers (the callers' walks do, and are handed in) or sizing numpy scalars (plain
objects to ``sizing``).

Hashing decisions: the digest covers dtype, shape, a layout class (C-contiguous,
F-contiguous or strided), the strides of a strided array, and the bytes. Equal content in
the same contiguous layout hashes equal whatever the base array; a strided view and its
contiguous copy differ, and so do two strided views with different strides, because
layout is something a function can observe (``.strides``, ``ravel(order="K")``, views it
returns). Large strided arrays are hashed through a small reused buffer, never a full copy;
contiguous ones straight from their buffer, at memory bandwidth.

Sizing: an array costs the whole buffer it views (its owner's ``nbytes``), named by address
so a slice and its base count once.

>>> import numpy as np
>>> describe_array(np.zeros((2, 3), dtype="float32"))
'float32[2, 3]'
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import HashWalk, Part, SizeWalk, TypeHandler, header, text, type_token

__all__ = ["HANDLERS", "describe_array", "dtype_token", "hash_array_data", "hash_objects"]

_CHUNK_BYTES = 1 << 20  # strided arrays are copied through a buffer this size, not whole
_STR_BLOCK = 4096  # strings per join: big enough to amortize, small enough for the cache
OBJECT_SAMPLE = 1000  # elements of an object array looked at when sizing, then scaled up
# An array's own size is its buffer (``nbytes``, SPEC S5.2); the array object itself (112
# bytes) is counted only for arrays inside containers, where many small ones add up.
_ARRAY_OBJECT = 112

#: ndarray and memmap (spilled results come back as memmaps: same content, same digest).
_PLAIN_ARRAYS = frozenset({np.ndarray, np.memmap})
_DTYPE_TOKENS: dict[Any, bytes] = {}
_SHAPES: dict[int, Callable[..., bytes]] = {}


# -- hash ---------------------------------------------------------------------------------


def dtype_token(dtype: Any) -> bytes:
    """The bytes standing for a numpy dtype in the hashed stream (cached for plain dtypes)."""
    token = _DTYPE_TOKENS.get(dtype)
    if token is not None:
        return token
    plain = dtype.fields is None and dtype.subdtype is None
    token = text(dtype.str if plain else str(dtype.descr))
    if plain:  # equal plain dtypes have equal .str; structured ones may differ in titles
        _DTYPE_TOKENS[dtype] = token
    return token


def _shape_bytes(shape: tuple[int, ...]) -> bytes:
    pack = _SHAPES.get(len(shape))
    if pack is None:
        pack = _SHAPES[len(shape)] = struct.Struct(f"<{len(shape)}q").pack
    return header(b"n", len(shape)) + pack(*shape)


def _hash_dtype(walk: HashWalk, h: Any, obj: Any) -> None:
    h.update(b"D" + dtype_token(obj))


def _hash_scalar(walk: HashWalk, h: Any, obj: Any) -> None:
    h.update(b"G" + dtype_token(obj.dtype))
    hash_array_data(walk, h, np.asarray(obj))


def _hash_ufunc(walk: HashWalk, h: Any, obj: Any) -> None:
    walk.code(h, obj)


def _hash_ndarray(walk: HashWalk, h: Any, arr: Any) -> None:
    flags = arr.flags
    layout = b"C" if flags.c_contiguous else b"F" if flags.f_contiguous else b"S"
    h.update(b"a" + layout + dtype_token(arr.dtype) + _shape_bytes(arr.shape))
    if layout == b"S":  # a function can read strides (as_strided, .strides): they count
        h.update(_shape_bytes(arr.strides))
    if type(arr) in _PLAIN_ARRAYS:
        h.update(b"-")  # a marker either way keeps the stream unambiguous
    else:
        h.update(b"s" + type_token(arr))
        if isinstance(arr, np.ma.MaskedArray):  # the data alone is not the content
            hash_array_data(walk, h, np.ma.getmaskarray(arr))
        if hasattr(arr, "mask"):
            arr = arr.data
    hash_array_data(walk, h, arr)


def hash_array_data(walk: HashWalk, h: Any, arr: Any) -> None:
    """Hash ``arr``'s elements: buffers in place, strided arrays by blocks, objects by value."""
    if arr.size == 0:
        return
    dtype = arr.dtype
    if dtype.hasobject or dtype.kind == "T":  # the buffer holds pointers, not values
        flat = arr.ravel()
        for start in range(0, flat.size, _STR_BLOCK):
            hash_objects(walk, h, flat[start : start + _STR_BLOCK].tolist())
        return
    flags = arr.flags
    if dtype.kind in "mM":  # no buffer protocol for datetimes: hash their int64 view
        arr = arr.view(f"{dtype.byteorder}i8")
    if flags.c_contiguous:
        _update(h, arr)
    elif flags.f_contiguous:
        _update(h, arr.T)  # the transpose of an F-ordered array is C-ordered: same bytes
    else:
        _hash_strided(h, arr, None)


def _update(h: Any, arr: Any) -> None:
    """Feed a C-contiguous array's buffer, in place."""
    try:
        h.update(arr)
    except (TypeError, ValueError, BufferError):  # a dtype without a buffer format
        h.update(arr.reshape(-1).view("u1"))


def _hash_strided(h: Any, arr: Any, buf: Any) -> None:
    """Hash a non-contiguous array in C order through a reused buffer of ~1 MiB."""
    if arr.flags.c_contiguous:
        _update(h, arr)
        return
    row_bytes = arr.itemsize * math.prod(arr.shape[1:])
    if arr.ndim > 1 and row_bytes >= _CHUNK_BYTES:
        for row in arr:
            _hash_strided(h, row, None)
        return
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    if buf is None:
        buf = np.empty((min(step, len(arr)),) + arr.shape[1:], dtype=arr.dtype)
    for start in range(0, len(arr), step):
        part = arr[start : start + step]
        out = buf[: len(part)]
        np.copyto(out, part)
        _update(h, out)


def hash_objects(walk: HashWalk, h: Any, items: list[Any]) -> None:
    """Hash one block of Python objects; all-string blocks are joined and hashed at once."""
    if _try_str_block(h, items):
        return
    others = [i for i, item in enumerate(items) if type(item) is not str]
    if len(others) < len(items) and _try_str_block(h, [x for x in items if type(x) is str]):
        h.update(header(b"q", len(others)) + struct.pack(f"<{len(others)}q", *others))
        for i in others:
            walk.feed(h, items[i])
        return
    h.update(header(b"m", len(items)))
    for item in items:
        walk.feed(h, item)


def _try_str_block(h: Any, items: list[Any]) -> bool:
    try:
        data = "\x00".join(items).encode("utf-8", "surrogatepass")
    except TypeError:
        return False
    # NUL separates the strings; that is unambiguous only when no string contains one.
    if data.count(b"\x00") != len(items) - 1:
        return False
    h.update(header(b"j", len(data)))
    h.update(data)
    return True


# -- size -------------------------------------------------------------------------------------


def owner(arr: Any) -> Any:
    """The array whose buffer ``arr`` views: follow ``.base`` through views and wrappers."""
    found = arr
    while True:
        base = found.base
        if not isinstance(base, np.ndarray):
            # as_strided / sliding_window_view wrap the array in an object with a .base
            base = getattr(base, "base", None)
            if not isinstance(base, np.ndarray):
                return found
        found = base


def _size_ndarray(walk: SizeWalk, arr: Any, depth: int) -> None:
    walk.private += _ARRAY_OBJECT if depth else 0
    buffer = owner(arr)
    address = buffer.__array_interface__["data"][0]
    walk.add_buffer(("cpu", address), int(buffer.nbytes), "cpu")
    if buffer.dtype.hasobject and buffer.size:
        flat = buffer.reshape(-1) if buffer.flags.c_contiguous else buffer.ravel(order="K")
        step = max(1, flat.size // OBJECT_SAMPLE)
        walk.visit_sample(list(flat[::step][:OBJECT_SAMPLE]), int(flat.size), depth + 1)


def _fast_size(arr: Any) -> tuple[Part, ...] | None:
    # The common top-level case (one numeric array) without a walk.
    if arr.dtype.hasobject:
        return None
    buffer = owner(arr)
    buffer_id = ("cpu", buffer.__array_interface__["data"][0])
    return ((buffer_id, int(buffer.nbytes), "cpu"),)


# -- freeze, describe, ship -------------------------------------------------------------------


def _freeze(arr: Any) -> None:
    arr.setflags(write=False)


def describe_array(arr: Any) -> str:
    """``dtype[shape]``, e.g. ``float32[10000, 3]``."""
    return f"{arr.dtype}[{', '.join(map(str, arr.shape))}]"


def _describe_scalar(value: Any) -> str:
    return f"{type(value).__name__} {str(value):.40}"


def _holds_buffers(arr: Any) -> bool:
    return not arr.dtype.hasobject  # an object array is pointers: pickling it is the way


HANDLERS: dict[type, TypeHandler] = {
    np.ndarray: TypeHandler(
        hash=_hash_ndarray,
        size=_size_ndarray,
        fast_size=_fast_size,
        freeze=_freeze,
        describe=describe_array,
        holds_buffers=_holds_buffers,
    ),
    np.generic: TypeHandler(hash=_hash_scalar, describe=_describe_scalar),
    np.dtype: TypeHandler(hash=_hash_dtype),
    np.ufunc: TypeHandler(hash=_hash_ufunc),
}
