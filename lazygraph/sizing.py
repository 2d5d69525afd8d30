"""What a value costs in memory, per buffer, so a store can count a shared buffer once.

Covers: :func:`footprint` (the parts of a value's memory: which buffer, how many bytes, on
which device), :func:`sizeof` (their sum) and :func:`freeze` (make cached arrays read-only,
SPEC S2.4).  numpy, pandas and torch are handled without importing them: their handlers apply
only to objects of types from modules already in ``sys.modules``.  Does not cover: deciding
what to keep (the store does) or the device's own accounting (``lazygraph.cuda``).

Estimates, not measurements: numpy arrays and torch tensors are exact (the whole buffer a view
keeps alive); Python containers and object/string columns are sampled and scaled, so they are
within a small factor, typically a few percent for homogeneous data.

>>> import numpy as np
>>> a = np.zeros(1000)
>>> footprint(a[10:])  # doctest: +ELLIPSIS
((('cpu', ...), 8000, 'cpu'),)
>>> footprint(a[10:]) == footprint(a)
True
"""

from __future__ import annotations

import collections
import logging
import sys
import types
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["FAST_FOOTPRINTS", "Part", "footprint", "freeze", "sizeof"]

logger = logging.getLogger(__name__)

Part = tuple[Hashable | None, int, str]
"""``(buffer_id, nbytes, device)``: ``buffer_id`` is None for private memory."""

# Bounds of the recursive estimate: deep or wide structures are sampled, never walked whole.
MAX_DEPTH = 8
CONTAINER_SAMPLE = 64  # items of a list/dict/set looked at before scaling up
OBJECT_SAMPLE = 1000  # elements of an object array / string column looked at
MAX_OBJECTS = 20_000  # objects visited per call, whatever the shape
SHARE_MIN = 64 * 1024  # str/bytes this big get an identity, as stores may hold them twice

_getsizeof = sys.getsizeof
_SCALARS = (int, float, complex, bool, type(None), str, bytes)
_OPAQUE = (
    type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    types.CodeType, types.FrameType, types.GeneratorType, types.CoroutineType,
)  # fmt: skip
_PRIVATE_CACHE: dict[int, tuple[Part, ...]] = {}
_SMALL_SCALARS: frozenset[type] = frozenset({int, float, bool, type(None), complex})
_FLAT_TYPES = _SMALL_SCALARS | {str, bytes}


def footprint(obj: object) -> tuple[Part, ...]:
    """Return the memory ``obj`` costs as ``(buffer_id, nbytes, device)`` parts; never raises.

    ``buffer_id`` identifies a buffer other values may share: ``(device, address)`` of the
    buffer a numpy array, pandas column or torch tensor views (so a slice, a DataFrame built
    on an array without copying and ``torch.from_numpy(a)`` all name the same buffer as ``a``
    with the buffer's full size), or None for memory private to ``obj``.  Equal ids within one
    store mean one buffer: count it once.  ``device`` is "cpu" or e.g. "cuda:0".  Ids are
    addresses, valid while the value is alive.  On any failure the answer is
    ``sys.getsizeof(obj)`` as private memory.

    >>> footprint(3)
    ((None, 28, 'cpu'),)
    >>> footprint([b"x" * 100, 2.0])  # the list, the bytes and the float
    ((None, 229, 'cpu'),)
    """
    fast = _FAST.get(type(obj))
    if fast is not None:
        return fast(obj)
    return _slow(obj)


def sizeof(obj: object) -> int:
    """Return the total bytes of ``obj`` (its parts summed, each buffer once); never raises.

    >>> import numpy as np
    >>> a = np.zeros(100)
    >>> sizeof(a), sizeof((a, a[::2])) - a.nbytes  # the buffer once, plus 3 small objects
    (800, 280)
    """
    return sum(part[1] for part in footprint(obj))


def _private(nbytes: int) -> tuple[Part, ...]:
    cached = _PRIVATE_CACHE.get(nbytes)
    if cached is None:
        cached = ((None, nbytes, "cpu"),)
        if nbytes < 4096:  # the sizes of small scalars repeat; cache those parts
            _PRIVATE_CACHE[nbytes] = cached
    return cached


def _safe_getsizeof(obj: object) -> int:
    try:
        return int(_getsizeof(obj))
    except Exception:  # a broken __sizeof__ must not break sizing
        return 64


def _fast_scalar(
    obj: Any, _size: Any = _getsizeof, _cache: dict[int, tuple[Part, ...]] = _PRIVATE_CACHE
) -> tuple[Part, ...]:
    # One per computed int or float: the cached parts without a call to _private.
    parts = _cache.get(_size(obj))
    return parts if parts is not None else _private(_size(obj))


def _fast_text(obj: Any) -> tuple[Part, ...]:
    nbytes = _getsizeof(obj)
    if nbytes < SHARE_MIN:
        return _private(nbytes)
    return ((("pyobj", id(obj)), nbytes, "cpu"),)


def _fast_tuple(
    obj: tuple[Any, ...], _flat: frozenset[type] = _FLAT_TYPES, _size: Any = _getsizeof
) -> tuple[Part, ...]:
    # A short tuple of scalars (a typical small result) is summed without a walk; the
    # defaults bind globals as locals, which is most of this path's cost.
    if len(obj) > 8:
        return _slow(obj)
    total = _size(obj)
    for item in obj:
        if type(item) not in _flat:
            return _slow(obj)
        total += _size(item)
    return _private(total) if total < SHARE_MIN else _slow(obj)


def _slow(obj: object) -> tuple[Part, ...]:
    try:
        walk = _Walk()
        walk.visit(obj, 0)
        return walk.parts()
    except Exception as exc:  # the documented contract: estimate, never fail the caller
        logger.debug("sizing %s failed (%r); using sys.getsizeof", type(obj).__name__, exc)
        return _private(_safe_getsizeof(obj))


_FAST: dict[type, Callable[[Any], tuple[Part, ...]]] = {
    int: _fast_scalar,
    float: _fast_scalar,
    bool: _fast_scalar,
    complex: _fast_scalar,
    type(None): _fast_scalar,
    str: _fast_text,
    bytes: _fast_text,
    tuple: _fast_tuple,
}
#: What ``footprint`` tries first, by exact type (numpy, pandas and torch join when first
#: seen). A per-node caller looks here itself to save a call: ``FAST_FOOTPRINTS.get(type(v))``.
FAST_FOOTPRINTS = _FAST


# ---------------------------------------------------------------------------------------------
# The walk: one per call, accumulating private bytes and shared buffers.


class _Walk:
    """State of one sizing call: private bytes, shared buffers, objects already seen."""

    __slots__ = ("private", "shared", "shared_total", "seen", "budget")

    def __init__(self) -> None:
        self.private = 0
        self.shared: dict[Hashable, tuple[int, str]] = {}
        self.shared_total = 0
        self.seen: set[int] = set()
        self.budget = MAX_OBJECTS

    @property
    def total(self) -> int:
        return self.private + self.shared_total

    def add_buffer(self, buffer_id: Hashable, nbytes: int, device: str) -> None:
        old = self.shared.get(buffer_id)
        if old is None or old[0] < nbytes:
            self.shared_total += nbytes - (old[0] if old else 0)
            self.shared[buffer_id] = (nbytes, device)

    def visit(self, obj: object, depth: int) -> None:
        kind = type(obj)
        if kind in _SMALL_SCALARS:
            self.private += _getsizeof(obj)
            return
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:
            self.private += _safe_getsizeof(obj)
            return
        _handler_for(kind)(self, obj, depth)

    def visit_sample(self, items: list[Any], count: int, depth: int) -> None:
        """Visit ``items``, a sample of ``count`` values, and scale their cost up to all."""
        before = self.total
        for item in items:
            self.visit(item, depth)
        if items and count > len(items):
            self.private += (self.total - before) * (count - len(items)) // len(items)

    def parts(self) -> tuple[Part, ...]:
        found = tuple((key, n, device) for key, (n, device) in self.shared.items())
        if self.private or not found:
            return ((None, self.private, "cpu"), *found)
        return found


Handler = Callable[[_Walk, Any, int], None]


def _text(walk: _Walk, obj: Any, depth: int) -> None:
    nbytes = _getsizeof(obj)
    if nbytes >= SHARE_MIN:
        walk.add_buffer(("pyobj", id(obj)), nbytes, "cpu")
    else:
        walk.private += nbytes


def _sequence(walk: _Walk, obj: Any, depth: int) -> None:
    walk.private += _getsizeof(obj)
    count = len(obj)
    if count <= CONTAINER_SAMPLE:
        walk.visit_sample(list(obj), count, depth + 1)
    elif isinstance(obj, (list, tuple)):
        step = count // CONTAINER_SAMPLE
        walk.visit_sample(list(obj[::step][:CONTAINER_SAMPLE]), count, depth + 1)
    else:  # sets and other iterables: the first items stand for the rest
        sample = [item for item, _ in zip(obj, range(CONTAINER_SAMPLE), strict=False)]
        walk.visit_sample(sample, count, depth + 1)


def _mapping(walk: _Walk, obj: Any, depth: int) -> None:
    walk.private += _getsizeof(obj)
    sample = [pair for pair, _ in zip(obj.items(), range(CONTAINER_SAMPLE), strict=False)]
    walk.visit_sample([item for pair in sample for item in pair], 2 * len(obj), depth + 1)


def _generic(walk: _Walk, obj: Any, depth: int) -> None:
    walk.private += _safe_getsizeof(obj)
    if isinstance(obj, _OPAQUE):
        return  # a function's globals or a class's attributes are not the value's memory
    attributes = getattr(obj, "__dict__", None)
    if type(attributes) is dict:
        walk.visit(attributes, depth + 1)
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__"):
                walk.visit(getattr(obj, name, None), depth + 1)


# ---------------------------------------------------------------------------------------------
# numpy


# An array's own size is its buffer (``nbytes``, SPEC S5.2); the array object itself (112
# bytes) is counted only for arrays inside containers, where many small ones add up.
_ARRAY_OBJECT = 112


def _ndarray(walk: _Walk, arr: Any, depth: int) -> None:
    walk.private += _ARRAY_OBJECT if depth else 0
    owner = _owner(arr)
    address = owner.__array_interface__["data"][0]
    walk.add_buffer(("cpu", address), int(owner.nbytes), "cpu")
    if owner.dtype.hasobject and owner.size:
        _object_elements(walk, owner, depth)


def _fast_ndarray(arr: Any) -> tuple[Part, ...]:
    # The common top-level case (one numeric array) without a walk.
    if arr.dtype.hasobject:
        return _slow(arr)
    owner = _owner(arr)
    buffer_id = ("cpu", owner.__array_interface__["data"][0])
    return ((buffer_id, int(owner.nbytes), "cpu"),)


def _owner(arr: Any) -> Any:
    """The array whose buffer ``arr`` views: follow ``.base`` through views and wrappers."""
    ndarray = sys.modules["numpy"].ndarray
    owner = arr
    while True:
        base = owner.base
        if not isinstance(base, ndarray):
            # as_strided / sliding_window_view wrap the array in an object with a .base
            base = getattr(base, "base", None)
            if not isinstance(base, ndarray):
                return owner
        owner = base


def _object_elements(walk: _Walk, arr: Any, depth: int) -> None:
    flat = arr.reshape(-1) if arr.flags.c_contiguous else arr.ravel(order="K")
    step = max(1, flat.size // OBJECT_SAMPLE)
    walk.visit_sample(list(flat[::step][:OBJECT_SAMPLE]), int(flat.size), depth + 1)


# ---------------------------------------------------------------------------------------------
# pandas: per block / column buffers, index and columns too.


def _frame(walk: _Walk, df: Any, depth: int) -> None:
    walk.private += 500 if depth else 0  # the DataFrame, manager and blocks: see _ARRAY_OBJECT
    try:
        arrays = [block.values for block in df._mgr.blocks]
    except AttributeError:  # a pandas without block managers: go column by column
        arrays = [column.array for _, column in df.items()]
    for values in arrays:
        _array_like(walk, values, depth + 1)
    walk.visit(df.index, depth + 1)
    walk.visit(df.columns, depth + 1)


def _series(walk: _Walk, series: Any, depth: int) -> None:
    walk.private += 300 if depth else 0
    values = getattr(series, "_values", None)
    _array_like(walk, series.array if values is None else values, depth + 1)
    walk.visit(series.index, depth + 1)


def _index(walk: _Walk, index: Any, depth: int) -> None:
    import pandas as pd

    walk.private += 200
    if isinstance(index, pd.RangeIndex):
        return
    if isinstance(index, pd.MultiIndex):
        for level in index.levels:
            walk.visit(level, depth + 1)
        for codes in index.codes:
            walk.visit(codes, depth + 1)
        return
    _array_like(walk, index._values, depth + 1)


def _array_like(walk: _Walk, values: Any, depth: int) -> None:
    """A column's array: an ndarray, or a pandas extension array over ndarrays or arrow."""
    import numpy as np

    if isinstance(values, np.ndarray):
        walk.visit(values, depth)
        return
    walk.seen.add(id(values))
    walk.private += 64
    chunked = getattr(values, "_pa_array", None)
    if chunked is not None:
        _arrow(walk, chunked)
        return
    inner = [getattr(values, name, None) for name in ("_ndarray", "_data", "_mask", "_codes")]
    arrays = [a for a in inner if isinstance(a, np.ndarray)]
    for array in arrays:
        walk.visit(array, depth)
    if hasattr(values, "categories"):
        walk.visit(values.categories, depth)
    if not arrays and not hasattr(values, "categories"):
        walk.private += int(values.nbytes)


def _arrow(walk: _Walk, chunked: Any) -> None:
    for chunk in getattr(chunked, "chunks", [chunked]):
        for buffer in chunk.buffers():
            if buffer is not None:
                walk.add_buffer(("cpu", buffer.address), int(buffer.size), "cpu")


# ---------------------------------------------------------------------------------------------
# torch


def _tensor(walk: _Walk, tensor: Any, depth: int) -> None:
    walk.private += 80 if depth else 0  # the tensor object: see _ARRAY_OBJECT
    device = _device_name(tensor.device)
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


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        return f"cuda:{0 if device.index is None else device.index}"
    return str(device)


# ---------------------------------------------------------------------------------------------
# Dispatch: exact type first, then the type's bases, then the lazily known libraries.

_HANDLERS: dict[type, Handler] = {
    str: _text,
    bytes: _text,
    list: _sequence,
    tuple: _sequence,
    set: _sequence,
    frozenset: _sequence,
    collections.deque: _sequence,
    dict: _mapping,
}
_BASE_HANDLERS = dict(_HANDLERS)  # registered ones, consulted for subclasses


def _handler_for(kind: type) -> Handler:
    handler = _HANDLERS.get(kind)
    if handler is None:
        handler = _resolve(kind)
        if len(_HANDLERS) < 10_000:  # types made on the fly must not grow this forever
            _HANDLERS[kind] = handler
    return handler


def _resolve(kind: type) -> Handler:
    for base in kind.__mro__:
        if base in _BASE_HANDLERS:
            return _BASE_HANDLERS[base]
    numpy = sys.modules.get("numpy")
    if numpy is not None and issubclass(kind, numpy.ndarray):
        _FAST.setdefault(numpy.ndarray, _fast_ndarray)
        return _ndarray
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        for cls, handler in ((pandas.DataFrame, _frame), (pandas.Series, _series)):
            if issubclass(kind, cls):
                return handler
        if issubclass(kind, pandas.Index):
            return _index
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(kind, torch.Tensor):
        return _tensor
    return _generic


# ---------------------------------------------------------------------------------------------
# freeze


def freeze(obj: object) -> None:
    """Make the numpy arrays in ``obj`` read-only, so in-place writes raise; never raises.

    Handles numpy arrays, pandas DataFrames / Series / Index (the arrays under each column)
    and lists, tuples and dict values holding them (bounded like :func:`footprint`).  An
    in-place write then raises ``ValueError: assignment destination is read-only``, also
    through ``df.loc[...] = v`` and ``df.iloc[...] = v``.  Limits: replacing a whole column
    (``df["a"] = ...``), adding columns or changing ``attrs`` still change the object, as do
    writes to torch tensors and other mutable objects.  Arrow-backed columns (pandas 3 strings
    with pyarrow) have immutable buffers already: a write there replaces the column's array in
    that DataFrame instead of raising, leaving the shared buffers untouched.

    >>> import numpy as np
    >>> a = np.zeros(3)
    >>> freeze([a])
    >>> a.flags.writeable
    False
    """
    try:
        _freeze(obj, 0, [MAX_OBJECTS])
    except Exception as exc:  # freezing is a safety net; failing must not fail the caller
        logger.debug("freezing %s failed: %r", type(obj).__name__, exc)


def _freeze(obj: object, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH or type(obj) in _SCALARS:
        return
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        obj.setflags(write=False)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            _freeze(item, depth + 1, budget)
    elif isinstance(obj, dict):
        for item in obj.values():
            _freeze(item, depth + 1, budget)
    elif "pandas" in sys.modules:
        _freeze_pandas(obj, depth, budget)


def _freeze_pandas(obj: object, depth: int, budget: list[int]) -> None:
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        for block in obj._mgr.blocks:
            _freeze_array_like(block.values)
    elif isinstance(obj, pd.Series):
        _freeze_array_like(obj._values)
    if isinstance(obj, (pd.DataFrame, pd.Series)) and not isinstance(obj.index, pd.RangeIndex):
        _freeze_array_like(getattr(obj.index, "_values", None))


def _freeze_array_like(values: Any) -> None:
    import numpy as np

    if isinstance(values, np.ndarray):
        values.setflags(write=False)
        return
    for name in ("_ndarray", "_data", "_mask", "_codes"):
        inner = getattr(values, name, None)
        if isinstance(inner, np.ndarray):
            inner.setflags(write=False)
