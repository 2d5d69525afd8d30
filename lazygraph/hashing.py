"""Content hashing: xxh3-128 digests of Python values, with per-type handlers.

Covers: a canonical, type-tagged byte stream for builtins and containers (so ``1``, ``1.0``,
``True``, ``"1"`` and ``b"1"`` differ; dicts and sets hash the same whatever their order;
cycles are handled), numpy arrays, pandas objects and torch tensors hashed from their buffers
in place, dataclasses and enums by their fields, functions and classes by their code
fingerprint (``keys.function_fingerprint``), a pickle-based fallback for other objects and an
identity token for objects that cannot be pickled (such digests are not *persistable*: another
process cannot reproduce them). Does not cover: code fingerprints and node keys (``keys``).

Decisions worth knowing:

- numpy: the digest covers dtype, shape, a layout class (C-contiguous, F-contiguous or
  strided) and the bytes. Equal content in the same layout hashes equal whatever the base
  array or its strides; a strided view and its contiguous copy differ, because layout is
  something a function can observe (``ravel(order="K")``, views it returns). Large strided
  arrays are hashed through a small reused buffer: never a full copy.
- torch: dtype, shape, ``requires_grad`` and the content in logical order. Device and layout
  are left out so a CUDA tensor and its CPU copy share a digest (results agree across
  machines); ``requires_grad`` stays in because serving a result computed without autograd to
  a caller that needs gradients would break ``backward()``.
- pandas: values column by column (numeric columns as buffers, strings joined per block of
  4096 and hashed as UTF-8), index, columns, dtypes, names and ``attrs``. Block layout does not
  matter. Strings in object columns are hashed by their text: a ``str`` subclass element
  hashes like a plain ``str``.
- ``-0.0`` and ``0.0`` differ (their bytes do); so do ``{0.0}`` and ``{-0.0}``.
- An object with a ``__lazygraph_token__()`` method contributes the bytes it returns:
  lazygraph's Node contributes its key (whether that key is persistable is the caller's
  business: the scheduler tracks it per node).

>>> content_hash(1)[0] != content_hash(1.0)[0] != content_hash(True)[0]
True
>>> content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
True
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import pickle
import struct
import sys
import threading
import types
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import xxhash

__all__ = ["content_hash", "hash_into", "encode_scalars", "HASH_SEED"]

log = logging.getLogger(__name__)

#: Seed of ``content_hash``: bump it when the byte stream below changes meaning.
HASH_SEED = int.from_bytes(b"lzgh-v1\0", "little")

Handler = Callable[["_Walk", Any, Any], None]

_HDR = struct.Struct("<cQ").pack  # tag + length: every variable-size item is self-delimiting
_I64 = struct.Struct("<cq").pack
_F64 = struct.Struct("<cd").pack
_C128 = struct.Struct("<cdd").pack
_REF = struct.Struct("<cI").pack
_CHUNK_BYTES = 1 << 20  # strided arrays are copied through a buffer this size, not whole
_STR_BLOCK = 4096  # strings per join: big enough to amortize, small enough for the cache


# -- scalars: type -> bytes, the hot path ------------------------------------------------


def _enc_int(obj: int) -> bytes:
    try:
        return _I64(b"i", obj)
    except struct.error:  # beyond 64 bits: arbitrary precision, still exact
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return _HDR(b"I", len(data)) + data


def _enc_str(obj: str) -> bytes:
    data = obj.encode("utf-8", "surrogatepass")
    return _HDR(b"s", len(data)) + data


_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda obj: b"N",
    bool: lambda obj: b"T" if obj else b"F",
    int: _enc_int,
    float: lambda obj: _F64(b"f", obj),
    complex: lambda obj: _C128(b"c", obj.real, obj.imag),
    str: _enc_str,
    type(Ellipsis): lambda obj: b".",
    type(NotImplemented): lambda obj: b"!",
}


_TUPLE_HEADS = [_HDR(b"t", size) for size in range(9)]  # the header of a short args tuple

#: Types pickle writes as plain values; everything else is offered to the handlers first.
_PICKLE_NATIVE = frozenset({type(None), bool, int, float, complex, str, bytes})


# -- the walk: one per top-level call; holds the persistable flag and the cycle stack --


class _Walk:
    __slots__ = ("persistable", "stack")

    def __init__(self) -> None:
        self.persistable = True
        self.stack: dict[int, int] = {}  # id -> depth of containers being hashed (all alive)

    def feed(self, h: Any, obj: Any) -> None:
        enc = _SCALARS.get(type(obj))
        if enc is not None:
            h.update(enc(obj))
            return
        handler = _HANDLERS.get(type(obj)) or _resolve(type(obj))
        handler(self, h, obj)

    def digest(self, obj: Any) -> bytes:
        sub = xxhash.xxh3_128()
        self.feed(sub, obj)
        return sub.digest()

    def enter(self, h: Any, obj: Any) -> bool:
        """Push ``obj``; if it is already being hashed, write a back-reference instead."""
        depth = self.stack.get(id(obj))
        if depth is not None:
            h.update(_REF(b"@", depth))
            return False
        self.stack[id(obj)] = len(self.stack)
        return True

    def leave(self, obj: Any) -> None:
        del self.stack[id(obj)]


def encode_scalars(obj: Any) -> bytes | None:
    """The exact bytes ``hash_into`` feeds for a scalar or a flat tuple of scalars, else None.

    The per-node hot path: a caller can hash these in one shot instead of streaming.

    >>> encode_scalars((1, "a")) is not None, encode_scalars(([1],)) is None
    (True, True)
    """
    enc = _SCALARS.get(type(obj))
    if enc is not None:
        return enc(obj)
    if type(obj) is not tuple:
        return None
    size = len(obj)
    head = _TUPLE_HEADS[size] if size < len(_TUPLE_HEADS) else _HDR(b"t", size)
    if size == 1:  # a node's one or two arguments: no list, no join
        enc = _SCALARS.get(type(obj[0]))
        return None if enc is None else head + enc(obj[0])
    if size == 2:
        first, second = obj
        enc, enc2 = _SCALARS.get(type(first)), _SCALARS.get(type(second))
        return None if enc is None or enc2 is None else head + enc(first) + enc2(second)
    parts = [head]
    for item in obj:
        enc = _SCALARS.get(type(item))
        if enc is None:
            return None
        parts.append(enc(item))
    return b"".join(parts)


def hash_into(h: Any, obj: Any) -> bool:
    """Feed ``obj``'s content into the xxh3 hasher ``h``; False if part of it is identity-keyed.

    >>> import xxhash
    >>> h = xxhash.xxh3_128()
    >>> hash_into(h, (1, "a", [2.5, None]))
    True
    >>> hash_into(xxhash.xxh3_128(), threading.Lock())  # unpicklable: identity token
    False
    """
    data = encode_scalars(obj)
    if data is not None:
        h.update(data)
        return True
    walk = _Walk()
    walk.feed(h, obj)
    return walk.persistable


def content_hash(obj: Any) -> tuple[bytes, bool]:
    """Return the 16-byte content digest of ``obj`` and whether it is persistable.

    >>> import numpy as np
    >>> content_hash(np.arange(3)) == content_hash(np.array([0, 1, 2]))
    True
    >>> len(content_hash("x")[0]), content_hash("x")[1]
    (16, True)
    """
    data = encode_scalars(obj)
    if data is not None:
        return xxhash.xxh3_128_digest(data, HASH_SEED), True
    h = xxhash.xxh3_128(seed=HASH_SEED)
    walk = _Walk()
    walk.feed(h, obj)
    return h.digest(), walk.persistable


# -- builtin containers ------------------------------------------------------------------


def _h_bytes(walk: _Walk, h: Any, obj: Any) -> None:
    h.update(_HDR(b"b" if type(obj) is bytes else b"y", len(obj)))
    h.update(obj)


def _h_memoryview(walk: _Walk, h: Any, obj: memoryview) -> None:
    h.update(_HDR(b"v", len(obj.format)) + obj.format.encode())
    walk.feed(h, obj.shape)
    data = obj if obj.c_contiguous else obj.tobytes()
    h.update(_HDR(b"b", obj.nbytes))
    h.update(data)


def _h_sequence(walk: _Walk, h: Any, obj: Any) -> None:
    is_list = type(obj) is list
    # A tuple cannot close a cycle by itself: only mutable containers are tracked.
    if is_list and not walk.enter(h, obj):
        return
    try:
        parts = [_HDR(b"l" if is_list else b"t", len(obj))]
        for item in obj:
            enc = _SCALARS.get(type(item))
            if enc is not None:
                parts.append(enc(item))
                continue
            h.update(b"".join(parts))
            parts.clear()
            walk.feed(h, item)
        h.update(b"".join(parts))
    finally:
        if is_list:
            walk.leave(obj)


def _h_set(walk: _Walk, h: Any, obj: Any) -> None:
    # Order-independent: element digests, sorted (string hashing is randomized per process).
    digests = sorted(walk.digest(item) for item in obj)
    h.update(_HDR(b"e" if type(obj) is set else b"z", len(digests)))
    h.update(b"".join(digests))


def _h_dict(walk: _Walk, h: Any, obj: dict) -> None:
    if not walk.enter(h, obj):
        return
    try:
        digests = []
        for key, value in obj.items():
            sub = xxhash.xxh3_128()
            walk.feed(sub, key)
            walk.feed(sub, value)
            digests.append(sub.digest())
        digests.sort()  # equal dicts built in different orders hash equal
        h.update(_HDR(b"d", len(digests)))
        h.update(b"".join(digests))
    finally:
        walk.leave(obj)


# -- objects: tokens, callables, dataclasses, enums, modules, pickle, identity ------------


def _enc_token(obj: Any) -> bytes:
    token = obj.__lazygraph_token__()
    if not isinstance(token, bytes):
        raise TypeError(
            f"{type(obj).__qualname__}.__lazygraph_token__() must return bytes "
            f"(got {type(token).__name__})"
        )
    return _HDR(b"K", len(token)) + token


def register_encoder(cls: type, encode: Callable[[Any], bytes]) -> None:
    """Hash instances of exactly ``cls`` as ``encode(obj)``, on the scalar fast path.

    For types on a per-node hot path (``keys`` registers Node): ``encode`` must return the
    bytes the general path would feed, e.g. ``token_header(len(t)) + t`` for a token ``t``.
    """
    _SCALARS[cls] = encode
    _HANDLERS[cls] = lambda walk, h, obj: h.update(encode(obj))


def token_header(length: int) -> bytes:
    """What precedes a ``__lazygraph_token__`` of ``length`` bytes in the hashed stream."""
    return _HDR(b"K", length)


def _h_token(walk: _Walk, h: Any, obj: Any) -> None:
    h.update(_enc_token(obj))


def _h_callable(walk: _Walk, h: Any, obj: Any) -> None:
    from .keys import function_fingerprint  # keys imports this module

    h.update(b"P" + function_fingerprint(obj))


def _h_module(walk: _Walk, h: Any, obj: types.ModuleType) -> None:
    h.update(b"M" + _enc_str(obj.__name__))


def _h_dataclass(walk: _Walk, h: Any, obj: Any) -> None:
    if not walk.enter(h, obj):
        return
    try:
        _h_callable(walk, h, type(obj))
        fields = dataclasses.fields(obj)
        h.update(_HDR(b"A", len(fields)))
        for field in fields:
            h.update(_enc_str(field.name))
            walk.feed(h, getattr(obj, field.name, None))
    finally:
        walk.leave(obj)


def _h_enum(walk: _Walk, h: Any, obj: enum.Enum) -> None:
    _h_callable(walk, h, type(obj))
    h.update(b"E" + _enc_str(obj.name))


class _HashPickler(pickle.Pickler):
    """Pickles into a hasher; values lazygraph hashes better are swapped for their digest."""

    def __init__(self, walk: _Walk, h: Any, buffers: Any) -> None:
        sink = types.SimpleNamespace(write=h.update)
        # The buffer callback must not refer back to the pickler: a reference cycle would keep
        # the pickled object alive until the next garbage collection.
        callback = functools.partial(_hash_buffer, buffers)
        super().__init__(sink, protocol=5, buffer_callback=callback)
        # Fast mode drops the memo, so the stream depends on values, not on which equal
        # objects happen to be shared; cycles it cannot see raise and fall back to identity.
        self.fast = True
        self._walk = walk
        self._root: Any = None

    def dump(self, obj: Any) -> None:
        self._root = obj
        try:
            super().dump(obj)
        finally:
            self._root = None

    def persistent_id(self, obj: Any) -> bytes | None:
        t = type(obj)
        if t in _PICKLE_NATIVE or obj is self._root:
            return None
        handler = _HANDLERS.get(t) or _resolve(t)
        if handler is _h_pickle:
            return None  # the object itself (or one like it): pickle it here
        return self._walk.digest(obj)


def _hash_buffer(buffers: Any, buf: pickle.PickleBuffer) -> bool:
    view = buf.raw() if memoryview(buf).contiguous else memoryview(buf).tobytes()
    buffers.update(_HDR(b"o", len(view)))
    buffers.update(view)
    return False  # out-of-band: hashed above, not copied into the stream


def _h_pickle(walk: _Walk, h: Any, obj: Any) -> None:
    if not walk.enter(h, obj):
        return
    try:
        stream, buffers = xxhash.xxh3_128(), xxhash.xxh3_128()
        try:
            _HashPickler(walk, stream, buffers).dump(obj)
        except Exception as exc:  # any __reduce__ may raise anything: the fallback is identity
            log.debug("%s cannot be pickled (%s); using an identity key", type(obj), exc)
            _h_identity(walk, h, obj)
            return
        h.update(b"p" + stream.digest() + buffers.digest())
    finally:
        walk.leave(obj)


class _IdentityTokens:
    """A random token per live object; never ``id()``, which is reused once an object dies."""

    def __init__(self) -> None:
        # Reentrant: a garbage collection inside get() may run _forget on this thread.
        self._lock = threading.RLock()
        self._tokens: dict[int, tuple[weakref.ref[Any], bytes]] = {}

    def get(self, obj: Any) -> bytes:
        with self._lock:
            entry = self._tokens.get(id(obj))
            if entry is not None and entry[0]() is obj:
                return entry[1]
            token = uuid.uuid4().bytes
            try:
                ref = weakref.ref(obj, functools.partial(self._forget, id(obj)))
            except TypeError:  # not weak-referenceable: a fresh token per call
                return token
            self._tokens[id(obj)] = (ref, token)
            return token

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is not None and entry[0] is ref:
                del self._tokens[key]


_IDENTITY = _IdentityTokens()


def _h_identity(walk: _Walk, h: Any, obj: Any) -> None:
    walk.persistable = False
    h.update(b"#" + _IDENTITY.get(obj))


# -- dispatch -------------------------------------------------------------------------------

_HANDLERS: dict[type, Handler] = {
    tuple: _h_sequence,
    list: _h_sequence,
    dict: _h_dict,
    set: _h_set,
    frozenset: _h_set,
    bytes: _h_bytes,
    bytearray: _h_bytes,
    memoryview: _h_memoryview,
    types.ModuleType: _h_module,
}
for _t in (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    functools.partial,
    type,
):
    _HANDLERS[_t] = _h_callable

#: Handlers that also apply to subclasses (looked up along the MRO), filled lazily.
_BY_BASE: dict[type, Handler] = {}
_REGISTERED: set[str] = set()


def _resolve(t: type) -> Handler:
    handler = _find_handler(t)
    if "<locals>" not in t.__qualname__:  # classes made in a loop would pile up otherwise
        _HANDLERS[t] = handler
        if handler is _h_token:  # Nodes as arguments: on the hot path with the scalars
            _SCALARS[t] = _enc_token
    return handler


def _find_handler(t: type) -> Handler:
    if callable(getattr(t, "__lazygraph_token__", None)):
        return _h_token
    for cls in t.__mro__:
        _register_library(cls.__module__)
        found = _BY_BASE.get(cls)
        if found is not None:
            return found
    if issubclass(t, type):
        return _h_callable
    if dataclasses.is_dataclass(t):
        return _h_dataclass
    if issubclass(t, enum.Enum):
        return _h_enum
    if issubclass(t, types.ModuleType):
        return _h_module
    return _h_pickle


def _register_library(module: str | None) -> None:
    top = (module or "").partition(".")[0]
    if top in _LIBRARIES and top not in _REGISTERED and top in sys.modules:
        _REGISTERED.add(top)
        _LIBRARIES[top]()


# -- numpy ------------------------------------------------------------------------------------


#: ndarray and memmap (spilled results come back as memmaps: same content, same digest).
_PLAIN_ARRAYS: set[type] = set()


def _register_numpy() -> None:
    import numpy as np

    _PLAIN_ARRAYS.update((np.ndarray, np.memmap))
    _BY_BASE[np.ndarray] = _h_ndarray
    _BY_BASE[np.generic] = _h_npscalar
    _BY_BASE[np.dtype] = _h_npdtype
    _BY_BASE[np.ufunc] = _h_callable


_DTYPE_TOKENS: dict[Any, bytes] = {}
_SHAPES: dict[int, Callable[..., bytes]] = {}


def _dtype_token(dtype: Any) -> bytes:
    token = _DTYPE_TOKENS.get(dtype)
    if token is not None:
        return token
    plain = dtype.fields is None and dtype.subdtype is None
    token = _enc_str(dtype.str if plain else str(dtype.descr))
    if plain:  # equal plain dtypes have equal .str; structured ones may differ in titles
        _DTYPE_TOKENS[dtype] = token
    return token


def _shape_bytes(shape: tuple[int, ...]) -> bytes:
    pack = _SHAPES.get(len(shape))
    if pack is None:
        pack = _SHAPES[len(shape)] = struct.Struct(f"<{len(shape)}q").pack
    return _HDR(b"n", len(shape)) + pack(*shape)


def _h_npdtype(walk: _Walk, h: Any, obj: Any) -> None:
    h.update(b"D" + _dtype_token(obj))


def _h_npscalar(walk: _Walk, h: Any, obj: Any) -> None:
    import numpy as np

    h.update(b"G" + _dtype_token(obj.dtype))
    _hash_array_data(walk, h, np.asarray(obj))


def _h_ndarray(walk: _Walk, h: Any, arr: Any) -> None:
    flags = arr.flags
    layout = b"C" if flags.c_contiguous else b"F" if flags.f_contiguous else b"S"
    h.update(b"a" + layout + _dtype_token(arr.dtype) + _shape_bytes(arr.shape))
    if type(arr) in _PLAIN_ARRAYS:
        h.update(b"-")  # a marker either way keeps the stream unambiguous
    else:
        _hash_subclass_extras(h, arr)
        if hasattr(arr, "mask"):  # numpy.ma: the data alone is not the content
            arr = arr.data
    _hash_array_data(walk, h, arr)


def _hash_subclass_extras(h: Any, arr: Any) -> None:
    import numpy as np

    h.update(b"s" + _type_token(arr))
    if isinstance(arr, np.ma.MaskedArray):
        _hash_array_data(_Walk(), h, np.ma.getmaskarray(arr))


def _hash_array_data(walk: _Walk, h: Any, arr: Any) -> None:
    """Hash ``arr``'s elements: buffers in place, strided arrays by blocks, objects by value."""
    if arr.size == 0:
        return
    dtype = arr.dtype
    if dtype.hasobject or dtype.kind == "T":  # the buffer holds pointers, not values
        flat = arr.ravel()
        for start in range(0, flat.size, _STR_BLOCK):
            _hash_objects(walk, h, flat[start : start + _STR_BLOCK].tolist())
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
    import numpy as np

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


def _hash_objects(walk: _Walk, h: Any, items: list) -> None:
    """Hash one block of Python objects; all-string blocks are joined and hashed at once."""
    if _try_str_block(h, items):
        return
    others = [i for i, item in enumerate(items) if type(item) is not str]
    if len(others) < len(items) and _try_str_block(h, [x for x in items if type(x) is str]):
        h.update(_HDR(b"q", len(others)) + struct.pack(f"<{len(others)}q", *others))
        for i in others:
            walk.feed(h, items[i])
        return
    h.update(_HDR(b"m", len(items)))
    for item in items:
        walk.feed(h, item)


def _try_str_block(h: Any, items: list) -> bool:
    try:
        data = "\x00".join(items).encode("utf-8", "surrogatepass")
    except TypeError:
        return False
    # NUL separates the strings; that is unambiguous only when no string contains one.
    if data.count(b"\x00") != len(items) - 1:
        return False
    h.update(_HDR(b"j", len(data)))
    h.update(data)
    return True


# -- pandas -------------------------------------------------------------------------------------


def _register_pandas() -> None:
    import pandas as pd

    _register_library("numpy")
    _BY_BASE[pd.DataFrame] = _h_frame
    _BY_BASE[pd.Series] = _h_series
    _BY_BASE[pd.Index] = _h_index
    _BY_BASE[pd.api.extensions.ExtensionArray] = _h_extension_array
    _BY_BASE[pd.api.extensions.ExtensionDtype] = _h_pd_dtype


def _type_token(obj: Any) -> bytes:
    return _enc_str(f"{type(obj).__module__}.{type(obj).__qualname__}")


def _pd_dtype_token(dtype: Any) -> bytes:
    import numpy as np

    if isinstance(dtype, np.dtype):
        return _dtype_token(dtype)
    text = f"{type(dtype).__qualname__}|{dtype}|{getattr(dtype, 'storage', '')}"
    return _enc_str(text)


def _h_pd_dtype(walk: _Walk, h: Any, dtype: Any) -> None:
    h.update(b"X" + _pd_dtype_token(dtype))
    categories = getattr(dtype, "categories", None)
    if categories is not None:
        _h_index(walk, h, categories)
        walk.feed(h, dtype.ordered)


def _h_frame(walk: _Walk, h: Any, df: Any) -> None:
    h.update(b"R" + _type_token(df) + _HDR(b"n", df.shape[1]))
    _h_index(walk, h, df.columns)
    _h_index(walk, h, df.index)
    for _, column in df.items():
        _hash_values(walk, h, column.array)
    walk.feed(h, df.attrs)


def _h_series(walk: _Walk, h: Any, ser: Any) -> None:
    h.update(b"Q" + _type_token(ser))
    walk.feed(h, ser.name)
    _h_index(walk, h, ser.index)
    _hash_values(walk, h, ser.array)
    walk.feed(h, ser.attrs)


def _h_index(walk: _Walk, h: Any, idx: Any) -> None:
    import pandas as pd

    h.update(b"x" + _type_token(idx) + _HDR(b"n", len(idx)))
    walk.feed(h, list(idx.names))
    if isinstance(idx, pd.RangeIndex):
        h.update(struct.pack("<qqq", idx.start, idx.stop, idx.step))
    elif isinstance(idx, pd.MultiIndex):
        for level, codes in zip(idx.levels, idx.codes, strict=True):
            _h_index(walk, h, level)
            _hash_array_data(walk, h, codes)
    else:
        _hash_values(walk, h, idx.array)


def _h_extension_array(walk: _Walk, h: Any, arr: Any) -> None:
    h.update(b"W" + _type_token(arr))
    _hash_values(walk, h, arr)


def _hash_values(walk: _Walk, h: Any, arr: Any) -> None:
    """Hash a column's values (an ExtensionArray or ndarray) with its dtype, without a copy."""
    import numpy as np
    import pandas as pd

    _h_pd_dtype(walk, h, arr.dtype)
    h.update(_HDR(b"n", len(arr)))
    if isinstance(arr, np.ndarray):
        _hash_array_data(walk, h, arr)
    elif isinstance(arr, pd.Categorical):
        _hash_array_data(walk, h, arr.codes)
    elif isinstance(getattr(arr, "_ndarray", None), np.ndarray):
        # numpy-backed arrays (numbers, python strings, datetimes, periods): the values
        # are the ndarray, the dtype token above carries the unit, timezone or frequency.
        _hash_array_data(walk, h, arr._ndarray)
    elif isinstance(getattr(arr, "_mask", None), np.ndarray):
        _hash_masked(walk, h, arr._data, arr._mask)
    else:  # arrow-backed, sparse, interval...: their Python values, slower but exact
        _hash_array_data(walk, h, np.asarray(arr, dtype=object))


def _hash_masked(walk: _Walk, h: Any, data: Any, mask: Any) -> None:
    # Values under the mask are arbitrary: zero them (in a copy, only when there are any).
    if mask.any():
        data = data.copy()
        data[mask] = 0
    _hash_array_data(walk, h, mask)
    _hash_array_data(walk, h, data)


# -- torch --------------------------------------------------------------------------------------


def _register_torch() -> None:
    import torch

    _BY_BASE[torch.Tensor] = _h_tensor


def _h_tensor(walk: _Walk, h: Any, t: Any) -> None:
    import torch

    special = t.is_quantized or getattr(t, "is_nested", False) or t.device.type == "meta"
    if t.layout != torch.strided or special:
        _h_pickle(walk, h, t)  # sparse, quantized...: pickling yields their dense parts
        return
    grad = b"g" if t.requires_grad else b"-"
    h.update(b"Y" + _enc_str(str(t.dtype)) + _HDR(b"n", t.dim()) + grad)
    h.update(struct.pack(f"<{t.dim()}q", *t.shape))
    t = t.detach().resolve_conj().resolve_neg()
    if t.numel() == 0:
        return
    if t.device.type == "cpu":
        _hash_tensor_cpu(h, t)
        return
    # Off the host: copy it over in pieces so host memory stays bounded.
    flat = t.reshape(-1)
    step = max(1, (_CHUNK_BYTES * 64) // t.element_size())
    for part in flat.split(step):
        h.update(part.cpu().view(torch.uint8).numpy())


def _hash_tensor_cpu(h: Any, t: Any) -> None:
    import torch

    if t.is_contiguous():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
        return
    row_bytes = t.element_size() * math.prod(t.shape[1:])
    if t.dim() > 1 and row_bytes >= _CHUNK_BYTES:
        for row in t:
            _hash_tensor_cpu(h, row)
        return
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    for part in t.split(step):
        h.update(part.contiguous().reshape(-1).view(torch.uint8).numpy())


_LIBRARIES: dict[str, Callable[[], None]] = {
    "numpy": _register_numpy,
    "pandas": _register_pandas,
    "torch": _register_torch,
}
