"""Keys: the code fingerprint of a function and the node key built from it and the arguments.

Covers: ``function_fingerprint`` (what a function *is*: its identity, normalized code, the
user-code helpers it refers to, its closure values and defaults) and ``node_key`` (a
fingerprint plus the content of the arguments, where a Node argument contributes its own key).
Does not cover: hashing values (``hashing``), when keys are recomputed (``scheduler``).

What a fingerprint includes, and what it leaves out:

- the function's module and qualified name, its bytecode with constants resolved to their
  values (nested functions, lambdas and comprehensions recursively), the names it uses,
  argument names and flags; *not* line numbers, file names, comments, docstrings or
  formatting, so moving a function down its file keeps its results;
- every function and class of *user code* it refers to through module globals, closures or
  attributes of user modules (``helpers.clean``), followed transitively; mutual recursion is
  fine. Code is user code unless its module lives in the standard library, ``site-packages``
  or lazygraph itself: library functions count by name only (upgrading a library does not
  change keys);
- referenced module-level constants of simple types (numbers, strings, bytes, tuples of
  them), closure values and argument defaults, by content;
- ``version="..."``: when given it *replaces* the code part: the function's own code and the
  helpers it refers to no longer count, only its name, the version string, its defaults and
  closure values. Bump the version when you change the code on purpose.

Fingerprints are cached per function object and recomputed when the function's code,
defaults or closure cells are rebound, or when a global it refers to (a helper, a constant)
is rebound — e.g. by re-running a notebook cell. Mutating a captured or global object *in
place* is not seen: pass such data as an argument instead.

>>> def double(x):
...     return 2 * x
>>> fp = function_fingerprint(double)
>>> len(fp), fp == function_fingerprint(double)
(16, True)
>>> key, persistable = node_key(fp, (21,), {})
>>> len(key), persistable
(16, True)
"""

from __future__ import annotations

import dis
import enum
import functools
import os
import site
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import xxhash

from .hashing import content_hash, encode_scalars, hash_into, register_encoder, token_header
from .node import Input, Node

__all__ = ["SCHEME", "function_fingerprint", "node_key", "prefixed_key"]

#: Salt of every key: bump it when what a key covers changes, so old caches are not reused.
SCHEME = b"lazygraph-key-v1"

_MISSING: Any = object()
_NODE_TOKEN = token_header(16)
_SKIP_OPS = frozenset({"NOP", "EXTENDED_ARG", "CACHE", "NOT_TAKEN"})
_HASCONST = frozenset(dis.hasconst)
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"})
_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
# Metadata, and caches that Python adds to a class later (pickle adds __slotnames__,
# reading __annotations__ may add an empty dict): none of them is code the user wrote.
_SKIP_CLASS_ATTRS = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
        "__slotnames__",
        "__annotations__",
        "__annotate__",
    }
)
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def node_key(fingerprint: bytes, args: tuple, kwargs: dict[str, Any]) -> tuple[bytes, bool]:
    """Return the 16-byte key of calling the fingerprinted function on ``args``/``kwargs``.

    Keyword order does not matter; Nodes (anything with ``__lazygraph_token__``) count by
    their key, also inside containers. The flag is False when an argument had no content
    hash and was keyed by identity (such a key means nothing to another process).

    >>> fp = function_fingerprint(len)
    >>> node_key(fp, (1,), {"a": 1, "b": 2}) == node_key(fp, (1,), {"b": 2, "a": 1})
    True
    >>> node_key(fp, (1,), {})[0] != node_key(fp, (1.0,), {})[0]
    True
    """
    return prefixed_key(SCHEME + fingerprint, args, kwargs)


def prefixed_key(prefix: bytes, args: tuple, kwargs: dict[str, Any]) -> tuple[bytes, bool]:
    """``node_key`` with ``SCHEME + fingerprint`` joined once by the caller (the scheduler
    keys every node of a function with the same prefix).

    >>> fp = function_fingerprint(len)
    >>> prefixed_key(SCHEME + fp, (1,), {}) == node_key(fp, (1,), {})
    True
    """
    if not kwargs:
        data = encode_scalars(args)
        if data is not None:  # same digest as the streaming path below, in one shot
            return xxhash.xxh3_128_digest(prefix + data), True
    h = xxhash.xxh3_128(prefix)
    persistable = hash_into(h, args)
    if kwargs:  # the args tuple is self-delimiting, so this stays unambiguous
        persistable = hash_into(h, tuple(sorted(kwargs.items()))) and persistable
    return h.digest(), persistable


def function_fingerprint(func: Any, version: str | None = None) -> bytes:
    """Return the 16-byte fingerprint of ``func``'s identity and code (see the module doc).

    Handles plain functions and lambdas, classes, bound methods (function + the content of
    ``self``), ``functools.partial`` (function + bound arguments), wrappers such as
    ``functools.lru_cache`` (the wrapped function), builtins (by name) and callable objects
    (their class + their content).

    >>> cell = {"__name__": "notebook"}  # user code, as a notebook cell would define it
    >>> exec("inc = lambda x: x + 1; inc_again = lambda x: x + 1; dec = lambda x: x - 1", cell)
    >>> function_fingerprint(cell["inc"]) == function_fingerprint(cell["inc_again"])
    True
    >>> function_fingerprint(cell["inc"]) != function_fingerprint(cell["dec"])
    True
    >>> function_fingerprint(cell["inc"], version="1") != function_fingerprint(cell["inc"])
    True
    """
    if type(func) is types.FunctionType or isinstance(func, type):
        return _CACHE.get(func, version)
    if isinstance(func, types.MethodType):
        return _digest(b"m", function_fingerprint(func.__func__, version), func.__self__)
    if isinstance(func, functools.partial):
        inner = function_fingerprint(func.func, version)
        return _digest(b"p", inner, (func.args, func.keywords))
    wrapped = _wrapped_function(func)
    if wrapped is not None:  # lru_cache'd and other wrapped functions: the code inside
        return _digest(b"w", function_fingerprint(wrapped, version), _ident(func))
    if isinstance(func, _BUILTIN_CALLABLES) or (
        hasattr(func, "__name__") and not _is_user_module(type(func).__module__)
    ):
        owner = getattr(func, "__self__", None)
        owner = None if isinstance(owner, types.ModuleType) else owner
        return _digest(b"b", _ident(func).encode(), owner)
    if not callable(func):
        raise TypeError(f"function_fingerprint expects a callable (got {type(func).__name__})")
    return _digest(b"o", function_fingerprint(type(func), version), func)


def _digest(tag: bytes, head: bytes, value: Any) -> bytes:
    h = xxhash.xxh3_128(SCHEME)
    h.update(tag + head)
    hash_into(h, value)
    return h.digest()


def _ident(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and not isinstance(obj, (type, types.FunctionType)):
        module = type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(type(obj)))
    return f"{module}:{name}"


# -- the cache: per function object, validated by the identity of what it depended on ------


class _Entry:
    __slots__ = ("ref", "fingerprint", "checks")

    def __init__(self, ref: Any, fingerprint: bytes, checks: tuple) -> None:
        self.ref = ref
        self.fingerprint = fingerprint
        self.checks = checks


class _Cache:
    """Fingerprints keyed by (function, version); ``id`` is only trusted with a live weakref."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str | None], _Entry] = {}
        self._local = threading.local()  # functions being fingerprinted by this thread

    def entry(self, func: Any, version: str | None) -> _Entry | None:
        """The cache entry of ``func`` once ``get`` has filled it (or None)."""
        return self._entries.get((id(func), version))

    def get(self, func: Any, version: str | None) -> bytes:
        key = (id(func), version)
        entry = self._entries.get(key)
        if entry is not None and entry.ref() is func and _still_valid(entry.checks):
            return entry.fingerprint
        active: dict[int, Any] = self._local.__dict__.setdefault("active", {})
        if id(func) in active:
            # Reached again while being fingerprinted (a cycle through data, e.g. a closure
            # holding a list of functions): count it by name; the outer call covers its code.
            self._local.cuts = getattr(self._local, "cuts", 0) + 1
            return _digest(b"c", _ident(func).encode(), version)
        cuts = getattr(self._local, "cuts", 0)
        active[id(func)] = func
        try:
            fingerprint, checks = _Trace(version).fingerprint(func)
        finally:
            del active[id(func)]
        if getattr(self._local, "cuts", 0) == cuts:  # a cut result depends on call order
            self._store(key, func, _Entry(None, fingerprint, checks))
        return fingerprint

    def _store(self, key: tuple[int, str | None], func: Any, entry: _Entry) -> None:
        try:
            entry.ref = weakref.ref(func, functools.partial(self._drop, key))
        except TypeError:  # pragma: no cover - functions and classes are weak-referenceable
            return
        self._entries[key] = entry

    def _drop(self, key: tuple[int, str | None], ref: Any) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.ref is ref:
            del self._entries[key]


_CACHE = _Cache()


def _still_valid(checks: tuple) -> bool:
    for get, expected in checks:  # noqa: SIM110 - a loop is cheaper than all(genexpr) here
        if get() is not expected:
            return False
    return True


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell: the variable is not assigned yet
        return _MISSING


# -- tracing: the function, the user code it reaches, and what to re-check later -----------


class _Trace:
    """One fingerprint computation: a worklist over reached user functions and classes."""

    def __init__(self, version: str | None) -> None:
        self.version = version
        self.follow = version is None
        self.seen: dict[int, Any] = {}
        self.queue: list[Any] = []
        self.checks: list[tuple[Callable[[], Any], Any]] = []

    def fingerprint(self, root: Any) -> tuple[bytes, tuple]:
        self.seen[id(root)] = root
        head = self.own(root)
        others = []
        while self.queue:
            others.append(self.own(self.queue.pop()))
        others.sort()  # a set of reached functions: the order of discovery must not matter
        h = xxhash.xxh3_128(SCHEME)
        h.update(b"F" + head + len(others).to_bytes(8, "little") + b"".join(others))
        return h.digest(), tuple(self.checks)

    def check(self, get: Callable[[], Any], expected: Any) -> None:
        self.checks.append((get, expected))

    def own(self, obj: Any) -> bytes:
        """Digest of ``obj`` alone; the user code it refers to is queued, named by identity."""
        h = xxhash.xxh3_128()
        h.update(_ident(obj).encode() + b"\0")
        if not self.follow:  # only the root is traced under a version
            h.update(b"V" + str(self.version).encode())
        if isinstance(obj, type):
            self.own_class(h, obj)
        else:
            self.own_function(h, obj)
        return h.digest()

    def own_function(self, h: Any, func: types.FunctionType) -> None:
        if not _is_user_module(func.__module__):
            return  # library functions count by name: upgrading a library keeps keys
        code = func.__code__
        self.check(functools.partial(getattr, func, "__code__"), code)
        for attr in ("__defaults__", "__kwdefaults__"):
            value = getattr(func, attr)
            self.check(functools.partial(getattr, func, attr), value)
            self.content(h, value)
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            value = _cell_value(cell)
            self.check(functools.partial(_cell_value, cell), value)
            h.update(name.encode() + b"\0")
            if value is _MISSING:
                h.update(b"-")
            else:
                self.reference(h, value)
        if not self.follow:
            return
        code_digest, global_names, names = _code_digest(code)
        h.update(code_digest)
        namespace = func.__globals__
        for name in global_names:
            value = namespace.get(name, _MISSING)
            if value is not _MISSING:
                self.global_value(h, namespace, name, value, names)

    def global_value(self, h: Any, ns: dict, name: str, value: Any, names: tuple) -> None:
        if _user_code(value) is not None:
            self.check(functools.partial(ns.get, name, _MISSING), value)
            h.update(b"g" + name.encode() + b"\0")
            self.reference(h, value)
        elif _is_simple(value):
            self.check(functools.partial(ns.get, name, _MISSING), value)
            h.update(b"k" + name.encode() + b"\0")
            self.content(h, value)
        elif isinstance(value, types.ModuleType) and _is_user_module(value.__name__):
            self.check(functools.partial(ns.get, name, _MISSING), value)
            for attr in names:  # helpers.clean(...): follow the attributes the code names
                target = value.__dict__.get(attr, _MISSING)
                if target is not _MISSING and _user_code(target) is not None:
                    self.check(functools.partial(value.__dict__.get, attr, _MISSING), target)
                    h.update(b"a" + f"{name}.{attr}".encode() + b"\0")
                    self.reference(h, target)

    def own_class(self, h: Any, cls: type) -> None:
        if not self.follow or not _is_user_module(cls.__module__):
            return  # library classes and versioned classes count by name (and version)
        for base in cls.__bases__:
            self.reference(h, base)
        ns = cls.__dict__
        self.check(functools.partial(len, ns), len(ns))
        for name in sorted(ns):
            if name in _SKIP_CLASS_ATTRS:
                continue
            value = ns[name]
            self.check(functools.partial(ns.get, name, _MISSING), value)
            h.update(b"n" + name.encode() + b"\0")
            self.class_attribute(h, cls, value)

    def class_attribute(self, h: Any, cls: type, value: Any) -> None:
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, functools.cached_property):
            value = value.func
        if isinstance(value, property):
            value = (value.fget, value.fset, value.fdel)
        if isinstance(value, tuple) and not _is_simple(value):
            for part in value:
                self.class_attribute(h, cls, part)
        elif _user_code(value) is not None:
            self.reference(h, value)
        elif isinstance(value, enum.Enum) and _is_simple(value.value):
            self.content(h, value.value)
        elif _is_simple(value):
            self.content(h, value)
        else:  # descriptors, caches, registries: their type, not their state
            h.update(b"?" + _ident(type(value)).encode())

    def reference(self, h: Any, value: Any) -> None:
        """User functions and classes: name now, code via the worklist; anything else: content."""
        code = _user_code(value)
        if code is None:
            self.content(h, value)
            return
        h.update(b"r" + _ident(code).encode() + b"\0")
        if self.follow and id(code) not in self.seen:
            self.seen[id(code)] = code
            self.queue.append(code)

    def content(self, h: Any, value: Any) -> None:
        h.update(b"v" + content_hash(value)[0])


def _is_simple(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_is_simple(item) for item in value)
    return type(value) in _SIMPLE


def _user_code(value: Any) -> Any:
    """The user function or class ``value`` is (or wraps, like ``lru_cache``), else None."""
    if type(value) is not types.FunctionType and not isinstance(value, type):
        value = _wrapped_function(value)
    if value is not None and _is_user_module(value.__module__):
        return value
    return None


def _wrapped_function(value: Any) -> types.FunctionType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, (types.FunctionType, type, types.ModuleType)):
        return None
    else:
        value = getattr(value, "__wrapped__", None)  # functools.wraps, lru_cache, cache
    return value if type(value) is types.FunctionType else None


@functools.lru_cache(maxsize=4096)
def _code_digest(code: types.CodeType) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """Digest of normalized code, plus the global names and all names it (and nested code) uses.

    Constants are hashed by value, never by index, so a docstring (which shifts the indices)
    changes nothing; line tables and positions are left out.
    """
    h = xxhash.xxh3_128()
    nargs = code.co_argcount + code.co_kwonlyargcount
    nargs += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    flags = code.co_flags & 0xFFFF  # __future__ flags only change how the source compiles
    header = (
        code.co_name,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        flags,
        code.co_varnames[:nargs],
        code.co_freevars,
        code.co_cellvars,
    )
    hash_into(h, header)
    h.update(getattr(code, "co_exceptiontable", b""))  # 3.11+: try/except ranges
    global_names: set[str] = set()
    names: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in _SKIP_OPS:
            continue
        h.update(ins.opname.encode() + b"\0")
        if ins.opcode in _HASCONST:
            const = code.co_consts[ins.arg] if ins.arg is not None else ins.argval
            if isinstance(const, types.CodeType):
                nested, nested_globals, nested_names = _code_digest(const)
                h.update(b"c" + nested)
                global_names.update(nested_globals)
                names.update(nested_names)
            else:
                h.update(b"v" + content_hash(const)[0])
            continue
        if ins.opname in _GLOBAL_OPS:
            global_names.add(ins.argval)
        elif ins.opcode in dis.hasname:
            names.add(ins.argval)
        hash_into(h, ins.argval if isinstance(ins.argval, (str, tuple)) else ins.arg)
    return h.digest(), tuple(sorted(global_names)), tuple(sorted(names))


@functools.cache
def _is_user_module(name: str | None) -> bool:
    """True for code the user is editing: not the standard library, site-packages or us."""
    if name is None or name == "__main__":
        return True
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "lazygraph"):
        return False
    file = getattr(sys.modules.get(name), "__file__", None)
    if file is None:
        return True  # exec'd or synthetic modules: user code by default
    path = os.path.realpath(file)
    return not path.startswith(_library_roots())


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", list)())
    roots.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    return tuple(os.path.realpath(root) + os.sep for root in roots if root)


def _encode_node(n: Node) -> bytes:
    """A Node argument's part of a key: its own key, as its ``__lazygraph_token__`` gives it.

    Read straight from the slot: this runs once per edge of every graph keyed.
    """
    key = n._key
    if key is None:
        key = n.__lazygraph_token__()
    return _NODE_TOKEN + key


register_encoder(Node, _encode_node)
register_encoder(Input, _encode_node)
