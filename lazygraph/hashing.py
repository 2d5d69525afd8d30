"""Content hashing: xxh3-128 digests of Python values, with per-type handlers.

Covers: a canonical, type-tagged byte stream for builtins and containers (so ``1``, ``1.0``,
``True``, ``"1"`` and ``b"1"`` differ; dicts and sets hash the same whatever their order;
cycles are handled), dataclasses and enums by their fields, functions and classes by their
code fingerprint (registered by ``lazygraph.fingerprint``: :func:`register_code_fingerprint`),
a pickle-based fallback for other objects and an identity token for objects that cannot be
pickled (such digests are not *persistable*: another process cannot reproduce them). numpy,
pandas and torch values are hashed by their handler modules (``lazygraph.handlers``, found
through ``handlers.registry`` on first sight of their types: their decisions are written
there), which get this module's walk rather than importing it. Does not cover: code
fingerprints (``fingerprint``) and node keys (``keys``).

Decisions worth knowing:

- ``-0.0`` and ``0.0`` differ (their bytes do); so do ``{0.0}`` and ``{-0.0}``.
- An object with a ``__lazygraph_token__()`` method contributes the bytes it returns:
  lazygraph's Node contributes its key (whether that key is persistable is the caller's
  business: the scheduler tracks it per node).
- The stream must not change meaning without bumping :data:`HASH_SEED`: persisted entries
  of earlier runs are found by these digests (``tests/test_handlers.py`` pins some).

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
import pickle
import struct
import types
from collections.abc import Callable
from typing import Any

import xxhash

from .errors import LazyGraphError
from .handlers import registry
from .handlers.base import header as _HDR
from .handlers.base import text as _enc_str
from .identity import identity_token

__all__ = ["HASH_SEED", "content_hash", "encode_scalars", "hash_into"]
__all__ += ["register_code_fingerprint", "register_encoder", "token_header"]

log = logging.getLogger(__name__)

#: Seed of ``content_hash``: bump it when the byte stream below changes meaning.
HASH_SEED = int.from_bytes(b"lzgh-v2\0", "little")

Handler = Callable[["_Walk", Any, Any], None]

_I64 = struct.Struct("<cq").pack
_F64 = struct.Struct("<cd").pack
_C128 = struct.Struct("<cdd").pack
_REF = struct.Struct("<cI").pack


# -- scalars: type -> bytes, the hot path ------------------------------------------------


def _enc_int(obj: int) -> bytes:
    try:
        return _I64(b"i", obj)
    except struct.error:  # beyond 64 bits: arbitrary precision, still exact
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return _HDR(b"I", len(data)) + data


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

    def pickled(self, h: Any, obj: Any) -> None:
        """Hash ``obj`` through pickle (what a handler does with values it cannot read)."""
        _h_pickle(self, h, obj)

    def code(self, h: Any, obj: Any) -> None:
        """Hash a callable by its code fingerprint."""
        _h_callable(self, h, obj)


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


def _no_fingerprint(obj: Any) -> bytes:
    raise LazyGraphError(
        f"cannot hash {type(obj).__name__} {obj!r:.60}: no code fingerprint is registered "
        "(lazygraph.fingerprint registers one when imported; import lazygraph first)"
    )


# Process-wide on purpose: there is one way to fingerprint code, set once by its module.
def _always(obj: Any) -> bool:
    return True


_fingerprint: Callable[[Any], bytes] = _no_fingerprint
_fingerprint_persistable: Callable[[Any], bool] = _always


def register_code_fingerprint(
    fingerprint: Callable[[Any], bytes], persistable: Callable[[Any], bool] | None = None
) -> None:
    """Hash callables (functions, classes, methods, partials) as ``fingerprint(obj)``.

    ``persistable(obj)``, when given, says whether that fingerprint can be reproduced by
    another process (False when the code read a value keyed by identity): a digest that
    holds such a callable is not persistable either.
    The code fingerprint lives above this module (it hashes values through it), so it
    registers itself here when imported instead of being imported from here.

    >>> register_code_fingerprint(_fingerprint, _fingerprint_persistable)  # once, at import
    """
    global _fingerprint, _fingerprint_persistable
    _fingerprint = fingerprint
    if persistable is not None:
        _fingerprint_persistable = persistable


def _h_callable(walk: _Walk, h: Any, obj: Any) -> None:
    h.update(b"P" + _fingerprint(obj))
    if not _fingerprint_persistable(obj):
        walk.persistable = False


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
        # Attributes set beyond the fields (in __post_init__, or later) are read by methods.
        names = {field.name for field in fields}
        extra = sorted(k for k in getattr(obj, "__dict__", ()) if k not in names)
        h.update(_HDR(b"x", len(extra)))
        for name in extra:
            h.update(_enc_str(name))
            walk.feed(h, obj.__dict__[name])
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




def _h_identity(walk: _Walk, h: Any, obj: Any) -> None:
    walk.persistable = False
    h.update(b"#" + identity_token(obj))


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
    library = registry.handler_for(t)
    if library is not None and library.hash is not None:
        return library.hash
    if issubclass(t, type):
        return _h_callable
    if dataclasses.is_dataclass(t):
        return _h_dataclass
    if issubclass(t, enum.Enum):
        return _h_enum
    if issubclass(t, types.ModuleType):
        return _h_module
    return _h_pickle
