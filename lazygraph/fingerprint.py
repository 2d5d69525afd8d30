"""Code fingerprints: what a function *is* and reads, as 16 bytes that change when it does.

Covers: ``function_fingerprint`` (a function's identity, normalized code, the user-code
helpers it reaches, the globals it reads, its closure values and defaults), its cache (kept
per function object, re-checked by identity against what it read) and the parts of a
fingerprint that ``explain_key()`` shows. Does not cover: hashing values (``hashing``) or
node keys (``keys``, which prefixes every key with a fingerprint). At import this module
registers ``function_fingerprint`` with ``hashing`` (which hashes a callable argument by its
fingerprint), so ``hashing`` does not import it.

What a fingerprint includes (SPEC S3.1, S3.5), and what it leaves out:

- the function's module and qualified name, its bytecode with constants resolved to their
  values (nested functions, lambdas and comprehensions recursively), the names it uses,
  argument names and flags; *not* line numbers, file names, comments, docstrings or
  formatting, so moving a function down its file keeps its results;
- every global it reads, whatever its type: functions and classes of *user code* by their
  code, followed transitively (mutual recursion is fine); instances of user classes by their
  class's code and their content (a callable instance's ``__call__`` counts); numbers,
  strings, containers, arrays, frames, tensors, dataclasses, ``functools.partial``s by
  content (``hashing``: functions inside a container, e.g. a dispatch table, count by code);
  helpers reached through module attribute chains (``pkg.sub.helper``) and the methods of
  user classes the function uses. Code is user code unless its module lives in the standard
  library, ``site-packages`` or lazygraph itself: such code is keyed by the package's
  version (``numpy 2.4.6``, ``python 3.11``), not followed;
- a value with no content hash (a lock, a socket) is keyed by identity: the fingerprint is
  then not *persistable* (``cache_entry(...).persistable``), and a one-time warning names it;
- ``version="..."``: when given it *replaces* the code part: the function's own code and the
  helpers and globals it refers to no longer count, only its name, the version string, its
  defaults and closure values. Bump the version when you change the code on purpose.

The cache, and why it is cheap and leak-free: an entry remembers the *identity* of everything
the fingerprint read (code objects, defaults, closure cell contents, each global binding,
each module or class attribute followed) and is reused while a snapshot of those identities
is unchanged: a rebound global (a re-run notebook cell) is noticed by one identity check per
name, before anything is re-hashed. An entry holds the functions, modules and classes it read
from only through weak references, and the values it compared either weakly (a dying value
invalidates the entry, so an ``id`` is never trusted after reuse) or strongly when they cannot
be weakly referenced (numbers, strings, tuples, dicts). Entries go when their function does
(one exception, a cycle the entry cannot see: a global dict or list holding the function
itself keeps that function alive while the entry holds the dict).
Mutating a global or captured object *in place* is not seen: pass such data as an argument.

>>> def double(x):
...     return 2 * x
>>> fp = function_fingerprint(double)
>>> len(fp), fp == function_fingerprint(double)
(16, True)
"""

from __future__ import annotations

import functools
import operator
import sys
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from .codetrace import (
    BUILTIN_CALLABLES,
    CELL_CONTENTS,
    SCHEME,
    UNBOUND,
    KeyPart,
    Trace,
    cell_value,
    ident,
    is_user_module,
    library_token,
    tagged_digest,
    wrapped_function,
)
from .hashing import register_code_fingerprint

__all__ = ["SCHEME", "KeyPart", "cache_entry", "fingerprint_persistable", "function_fingerprint"]
__all__ += ["still_valid"]

def function_fingerprint(func: Any, version: str | None = None) -> bytes:
    """Return the 16-byte fingerprint of ``func``'s identity and code (see the module doc).

    Handles plain functions and lambdas, classes, bound methods (function + the content of
    ``self``), ``functools.partial`` (function + bound arguments), wrappers such as
    ``functools.lru_cache`` (the wrapped function), builtins and library code (by name and
    package version) and callable objects (their class + their content).

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
        return tagged_digest(b"m", function_fingerprint(func.__func__, version), func.__self__)
    if isinstance(func, functools.partial):
        inner = function_fingerprint(func.func, version)
        return tagged_digest(b"p", inner, (func.args, func.keywords))
    wrapped = wrapped_function(func)
    if wrapped is not None:  # lru_cache'd and other wrapped functions: the code inside
        return tagged_digest(b"w", function_fingerprint(wrapped, version), ident(func))
    if isinstance(func, BUILTIN_CALLABLES) or (
        hasattr(func, "__name__") and not is_user_module(type(func).__module__)
    ):
        owner = getattr(func, "__self__", None)
        owner = None if isinstance(owner, types.ModuleType) else owner
        module = getattr(func, "__module__", None) or type(func).__module__
        return tagged_digest(b"b", ident(func).encode() + library_token(module), owner)
    if not callable(func):
        raise TypeError(f"function_fingerprint expects a callable (got {type(func).__name__})")
    return tagged_digest(b"o", function_fingerprint(type(func), version), func)


# -- the cache: per function object, validated by the identity of what it read ------------


class _Entry:
    """A cached fingerprint and a check of the identities of what it read (see above)."""

    __slots__ = (
        "ref", "fingerprint", "check", "keep", "refs", "valid",
        "persistable", "unhashed", "parts", "__weakref__",
    )  # fmt: skip

    def __init__(self, trace: Trace, fingerprint: bytes) -> None:
        self.ref: Any = None
        self.fingerprint = fingerprint
        self.persistable = trace.persistable
        self.unhashed = tuple(trace.unhashed)
        self.parts = tuple(trace.parts)
        self.valid = True
        self.keep: list[Any] = []  # what cannot be weakly referenced: kept so ids stay unique
        self.refs: list[Any] = []  # weak references that invalidate the entry when they die
        checks = [_function_check(f, self.hold) for f in trace.funcs.values()]
        checks += [_space_check(space, self.hold) for space in trace.spaces.values()]
        self.check = _all(checks)

    def hold(self, value: Any) -> None:
        """Make sure ``id(value)`` keeps meaning ``value`` for as long as the entry is valid."""
        try:
            self.refs.append(weakref.ref(value, functools.partial(_invalidate, weakref.ref(self))))
        except TypeError:
            self.keep.append(value)


def _invalidate(entry_ref: Any, _: Any) -> None:
    entry = entry_ref()
    if entry is not None:
        entry.valid = False


# The checks below run on the new-Node hit path: each is one closure doing C-level work
# (``itemgetter``, ``map``). A dead weak reference makes them raise AttributeError.


def _function_check(f: Any, hold: Callable[[Any], None]) -> Callable[[], bool]:
    """``f``'s code, defaults and closure cells are still the objects it had."""
    ref: Callable[[], Any] = weakref.ref(f)
    code, defaults, kwdefaults = f.__code__, f.__defaults__, f.__kwdefaults__
    if f.__closure__ is None:

        def same() -> bool:
            g = ref()
            if g.__code__ is not code:
                return False
            return g.__defaults__ is defaults and g.__kwdefaults__ is kwdefaults

        return same
    contents = [cell_value(cell) for cell in f.__closure__]
    for value in contents:
        hold(value)  # by identity: a cell may hold f itself, or 8 MiB it must not keep
    ids = tuple(map(id, contents))

    def check() -> bool:
        g = ref()
        if g.__code__ is not code or g.__defaults__ is not defaults:
            return False
        if g.__kwdefaults__ is not kwdefaults:
            return False
        return tuple(map(id, map(CELL_CONTENTS, g.__closure__))) == ids

    return check


def _space_check(space: list[Any], hold: Callable[[Any], None]) -> Callable[[], bool]:
    """Each name read from a namespace (module globals, a module or class ``__dict__``) is
    bound to the same object, and no name that was missing has appeared."""
    owner, attr, names, values = space
    ref = weakref.ref(owner)
    missing = frozenset(n for n, v in zip(names, values, strict=True) if v is UNBOUND)
    present = [(n, v) for n, v in zip(names, values, strict=True) if v is not UNBOUND]
    # What can be weakly referenced (functions, arrays, frames, instances) by id, watched
    # weakly: holding it would keep a rebound 8 GiB array alive, or a function alive
    # through its own entry. The rest (numbers, strings, tuples, dicts) by identity, held.
    weak = [(n, v) for n, v in present if _weakrefable(v)]
    strong = [(n, v) for n, v in present if not _weakrefable(v)]
    for _, value in weak:
        hold(value)
    same_code = _same_ids([n for n, _ in weak], tuple(id(v) for _, v in weak))
    strong_get = _getter([n for n, _ in strong])
    strong_values = tuple(v for _, v in strong)
    size = [len(getattr(owner, attr))]  # names missing then are looked for once it grows

    def check() -> bool:
        ns = getattr(ref(), attr)
        if len(ns) != size[0]:
            if missing and not ns.keys().isdisjoint(missing):
                return False
            size[0] = len(ns)
        if strong_values and not all(map(operator.is_, strong_get(ns), strong_values)):
            return False
        return same_code(ns)

    namespace = getattr(owner, attr)
    versions = _dict_versions()
    if versions is None or type(namespace) is not dict:
        return check
    # The fast path: nothing was written to the namespace since it was last checked.
    tag, address, verified = versions(namespace), id(namespace), [-1]

    def unchanged() -> bool:
        ns = getattr(ref(), attr)  # the owner is alive, so is its namespace at ``address``
        if id(ns) == address and tag.value == verified[0]:
            return True
        before = tag.value
        if not check():
            return False
        verified[0] = before
        return True

    return unchanged


@functools.cache
def _dict_versions() -> Callable[[dict], Any] | None:
    """CPython 3.11's dict version tag (PEP 509: it changes on every write to the dict), read
    in place, or None where it is not there or does not behave so (then every check is full).

    Only read while the dict is alive (its owner, weakly referenced, is checked first).
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return None
    import ctypes  # only here: CPython 3.11, first fingerprint

    offset = 3 * ctypes.sizeof(ctypes.c_ssize_t)  # ob_refcnt, ob_type, ma_used

    def version(d: dict) -> Any:
        return ctypes.c_uint64.from_address(id(d) + offset)

    probe: dict[str, Any] = {"a": 1}
    tag = version(probe)
    first = tag.value
    _ = probe["a"], len(probe), probe.get("b")
    if tag.value != first:
        return None  # reads moved it: not the version tag
    probe["a"] = 2
    second = tag.value
    probe["b"] = 3
    del probe["a"]
    if second == first or tag.value == second or first == 0:
        return None  # writes did not move it
    return version


def _same_ids(names: list[str], ids: tuple[int, ...]) -> Callable[[Any], bool]:
    """``ns[name]`` still has the recorded id, for each name (a helper or two: no ``map``)."""
    if not names:
        return lambda ns: True
    if len(names) == 1:
        (one,), (expected,) = names, ids
        return lambda ns: id(ns[one]) == expected
    if len(names) == 2:
        (a, b), (id_a, id_b) = names, ids
        return lambda ns: id(ns[a]) == id_a and id(ns[b]) == id_b
    get = operator.itemgetter(*names)
    return lambda ns: tuple(map(id, get(ns))) == ids


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple (itemgetter of one name does not)."""
    if len(names) == 1:
        one = names[0]
        return lambda ns: (ns[one],)
    return operator.itemgetter(*names) if names else (lambda ns: ())


def _weakrefable(value: Any) -> bool:
    try:
        weakref.ref(value)
    except TypeError:
        return False
    return True


def _all(checks: list[Callable[[], bool]]) -> Callable[[], bool]:
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda: first() and second()
    every = tuple(checks)

    def check() -> bool:
        for one in every:  # noqa: SIM110 - cheaper than all(genexpr) on the hit path
            if not one():
                return False
        return True

    return check


def still_valid(entry: Any) -> bool:
    """True while everything the cached fingerprint in ``entry`` read is still bound as it was."""
    try:
        return entry.valid and entry.check()
    except (AttributeError, KeyError, ValueError):  # an owner died, a name or cell went
        return False


class _Cache:
    """Fingerprints keyed by (function, version); ``id`` is only trusted with a live weakref."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str | None], _Entry] = {}
        self._local = threading.local()  # functions being fingerprinted by this thread

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, func: Any, version: str | None) -> _Entry | None:
        """The cache entry of ``func`` once ``get`` has filled it (or None)."""
        entry = self._entries.get((id(func), version))
        return entry if entry is not None and entry.ref() is func else None

    def get(self, func: Any, version: str | None) -> bytes:
        key = (id(func), version)
        entry = self._entries.get(key)
        if entry is not None and entry.ref() is func and still_valid(entry):
            return entry.fingerprint
        active: dict[int, Any] = self._local.__dict__.setdefault("active", {})
        if id(func) in active:
            # Reached again while being fingerprinted (a cycle through data, e.g. a closure
            # holding a list of functions): count it by name; the outer call covers its code.
            self._local.cuts = getattr(self._local, "cuts", 0) + 1
            return tagged_digest(b"c", ident(func).encode(), version)
        cuts = getattr(self._local, "cuts", 0)
        active[id(func)] = func
        try:
            trace = Trace(version, code_fingerprint=function_fingerprint)
            fingerprint = trace.fingerprint(func)
        finally:
            del active[id(func)]
        trace.warn_unhashed(func)
        if getattr(self._local, "cuts", 0) == cuts:  # a cut result depends on call order
            self._store(key, func, _Entry(trace, fingerprint))
        return fingerprint

    def _store(self, key: tuple[int, str | None], func: Any, entry: _Entry) -> None:
        if not still_valid(entry):
            return  # rebound by another thread while it was traced: do not trust it later
        try:
            entry.ref = weakref.ref(func, functools.partial(self._drop, key))
        except TypeError:  # pragma: no cover - functions and classes are weak-referenceable
            return
        self._entries[key] = entry

    def _drop(self, key: tuple[int, str | None], ref: Any) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.ref is ref:
            del self._entries[key]


# Process-wide: a function object's fingerprint is the same whichever session keys it.
_CACHE = _Cache()


def cache_entry(func: Any, version: str | None) -> Any:
    """The cache entry of ``func`` once it was fingerprinted (or None).

    Its ``ref()`` is the function while alive, ``still_valid(entry)`` says whether
    ``entry.fingerprint`` still holds, ``entry.persistable`` whether another process can
    reproduce it, ``entry.unhashed`` names what was keyed by identity and ``entry.parts``
    lists what it is made of (:class:`KeyPart`). ``keys`` keeps one per node factory, so a
    new node of a known function is keyed without a fingerprint lookup.
    """
    return _CACHE.entry(func, version)


def fingerprint_persistable(func: Any) -> bool:
    """Whether another process can reproduce ``func``'s cached fingerprint (no global of it
    was keyed by identity); True for what has no cache entry (builtins, partials...)."""
    entry = _CACHE.entry(func, None)
    return entry is None or entry.persistable


register_code_fingerprint(function_fingerprint, fingerprint_persistable)

