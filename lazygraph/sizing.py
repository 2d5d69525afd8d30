"""What a value costs in memory, per buffer, so a store can count a shared buffer once.

Covers: :func:`footprint` (the parts of a value's memory: which buffer, how many bytes, on
which device), :func:`sizeof` (their sum) and :func:`freeze` (make cached arrays read-only,
SPEC S2.4): the walk over builtins, containers and objects, and buffers held out of sight
(closure cells, ``functools.partial`` arguments, the object a memoryview exports, an
exception's arguments, attributes and chained exceptions).  numpy, pandas and torch values
are sized by their handler modules (``lazygraph.handlers``, found on first sight of their
types, so nothing here imports them).  Does not cover: deciding what to keep (the store
does) or the device's own accounting (``lazygraph.cuda``).

Estimates, not measurements: numpy arrays and torch tensors are exact (the whole buffer a view
keeps alive); Python containers and object/string columns are sampled and scaled, so they are
within a small factor, typically a few percent for homogeneous data.

Bounded work per value: at most ``MAX_OBJECTS`` objects visited and ``MAX_DEPTH`` levels.
Still not seen: objects past those bounds (counted by their own ``sys.getsizeof``), items of
large containers outside the sample (their cost is scaled from the sample's), a function's
globals, a bound method's ``__self__``, the frames (and locals) of an exception's traceback
or of a generator, class attributes, and memory a C extension object holds without exposing
it (``sys.getsizeof`` is all it says).

>>> import numpy as np
>>> a = np.zeros(1000)
>>> footprint(a[10:])  # doctest: +ELLIPSIS
((('cpu', ...), 8000, 'cpu'),)
>>> footprint(a[10:]) == footprint(a)
True
"""

from __future__ import annotations

import collections
import functools
import logging
import sys
import types
from collections.abc import Callable, Hashable
from typing import Any

from .handlers import registry
from .handlers.base import Part

__all__ = ["FAST_FOOTPRINTS", "Part", "footprint", "freeze", "sizeof"]

logger = logging.getLogger(__name__)

# Bounds of the recursive estimate: deep or wide structures are sampled, never walked whole.
MAX_DEPTH = 32  # levels of containers and attributes; deeper objects count their own size
CONTAINER_SAMPLE = 64  # items of a list/dict/set looked at before scaling up
MAX_OBJECTS = 20_000  # objects visited per call, whatever the shape: the work per result
SHARE_MIN = 64 * 1024  # str/bytes this big get an identity, as stores may hold them twice

_getsizeof = sys.getsizeof
_SCALARS = (int, float, complex, bool, type(None), str, bytes)
_OPAQUE = (
    type, types.ModuleType, types.BuiltinFunctionType, types.MethodType,
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
#: What ``footprint`` tries first, by exact type (a library type joins when first seen, if
#: its handler has a ``fast_size``: numpy arrays). A per-node caller looks here itself to
#: save a call: ``FAST_FOOTPRINTS.get(type(v))``.
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
        return  # a class's attributes or a module's globals are not the value's memory
    _attributes(walk, obj, depth)


def _attributes(walk: _Walk, obj: Any, depth: int) -> None:
    """Visit an object's instance attributes: its ``__dict__`` and its slots."""
    attributes = getattr(obj, "__dict__", None)
    if type(attributes) is dict:
        walk.visit(attributes, depth + 1)
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__"):
                walk.visit(getattr(obj, name, None), depth + 1)


# ---------------------------------------------------------------------------------------------
# Buffers held out of sight: in closures, partials, memoryviews and exceptions (SPEC S5.2).


def _function(walk: _Walk, func: Any, depth: int) -> None:
    # What a function keeps alive of its own: closure cells, defaults, attributes. Its
    # globals are the module's, not the function's, and are not walked.
    walk.private += _safe_getsizeof(func)
    for cell in func.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell: a name the enclosing function has not bound yet
            continue
        walk.visit(contents, depth + 1)
    for held in (func.__defaults__, func.__kwdefaults__, func.__dict__):
        if held:
            walk.visit(held, depth + 1)


def _partial(walk: _Walk, partial: Any, depth: int) -> None:
    walk.private += _safe_getsizeof(partial)
    for held in (partial.func, partial.args, partial.keywords):
        walk.visit(held, depth + 1)
    _attributes(walk, partial, depth)


def _memoryview(walk: _Walk, view: memoryview, depth: int) -> None:
    # A view costs the buffer of the object it exports (a 40 MB bytearray or array), which it
    # keeps alive; counted through that object so the object and its views count once.
    walk.private += _getsizeof(view)
    try:
        exporter, nbytes = view.obj, view.nbytes
    except ValueError:  # released: it holds nothing any more
        return
    if id(exporter) in walk.seen:
        return
    before = walk.total
    walk.visit(exporter, depth + 1)
    if _handler_for(type(exporter)) is _generic:
        # An exporter whose size hides its buffer (an mmap, a C extension's object) still
        # costs at least the bytes the view spans.
        walk.private += max(0, nbytes - (walk.total - before))


def _exception(walk: _Walk, exc: BaseException, depth: int) -> None:
    # Its arguments, attributes (notes included) and chained exceptions; not the frames of
    # its traceback, whose locals belong to code that has returned.
    walk.private += _safe_getsizeof(exc)
    walk.visit(exc.args, depth + 1)
    _attributes(walk, exc, depth)
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            walk.visit(chained, depth + 1)


# ---------------------------------------------------------------------------------------------
# Dispatch: exact type first, then the type's bases, then the library handlers.

_HANDLERS: dict[type, Handler] = {
    str: _text,
    bytes: _text,
    bytearray: _text,
    list: _sequence,
    tuple: _sequence,
    set: _sequence,
    frozenset: _sequence,
    collections.deque: _sequence,
    dict: _mapping,
    types.FunctionType: _function,
    functools.partial: _partial,
    memoryview: _memoryview,
    BaseException: _exception,
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
    library = registry.handler_for(kind)
    if library is None or library.size is None:
        return _generic
    if library.fast_size is not None and len(_FAST) < 1_000:
        _FAST.setdefault(kind, _fast_path(library.fast_size))
    return library.size


def _fast_path(fast: Callable[[Any], tuple[Part, ...] | None]) -> Callable[[Any], tuple[Part, ...]]:
    """A library's footprint without a walk, walking only where it declines (None)."""

    def footprint_fast(obj: Any) -> tuple[Part, ...]:
        parts = fast(obj)
        return parts if parts is not None else _slow(obj)

    return footprint_fast


# ---------------------------------------------------------------------------------------------
# freeze


def freeze(obj: object) -> None:
    """Make the numpy arrays in ``obj`` read-only, so in-place writes raise; never raises.

    Handles numpy arrays, pandas DataFrames / Series (the arrays under each column and the
    index) and lists, tuples, sets and dict values holding them (bounded like
    :func:`footprint`); the library handlers say what freezing means for their types.  An
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
    if isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            _freeze(item, depth + 1, budget)
    elif isinstance(obj, dict):
        for item in obj.values():
            _freeze(item, depth + 1, budget)
    else:
        library = registry.handler_for(type(obj))
        if library is not None and library.freeze is not None:
            library.freeze(obj)
