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
the fingerprint read (code objects, defaults, closure cell contents, each global binding, each
module or class attribute followed) and is reused while a snapshot of those identities is
unchanged: a rebound global (a re-run notebook cell) is noticed by one identity check per name,
before anything is re-hashed. It also watches what the functions it reached through *values*
read (a function in a dispatch table or a partial: their fingerprints are part of this one, so
rebinding a global one of them reads changes it too). The check is one function generated per
entry (a few attribute loads and ``is`` tests per function watched; on CPython 3.11 a namespace
nobody wrote to since it was checked costs one read). An entry holds the functions, modules and
classes it read from only through weak references, and the values it compared either weakly (a
dying value invalidates the entry, so an ``id`` is never trusted after reuse) or strongly when
they cannot be weakly referenced (numbers, strings, tuples, dicts). Entries go when their
function does (one exception, a cycle the entry cannot see: a global dict or list holding the
function itself keeps that function alive while the entry holds the dict).
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
from .repull import attention

__all__ = ["SCHEME", "KeyPart", "cache_entry", "fingerprint_persistable", "function_fingerprint"]
__all__ += ["CHECK_ERRORS", "rebound_names", "still_valid"]

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
        "ref", "fingerprint", "check", "keep", "refs", "valid", "watch",
        "persistable", "unhashed", "parts", "__weakref__",
    )  # fmt: skip

    def __init__(self, root: Any, trace: Trace, fingerprint: bytes, reached: list[Any]) -> None:
        self.ref: Any = None
        self.fingerprint = fingerprint
        self.persistable = trace.persistable
        self.unhashed = tuple(trace.unhashed)
        self.parts = tuple(trace.parts)
        self.valid = True
        self.keep: list[Any] = []  # what cannot be weakly referenced: kept so ids stay unique
        self.refs: list[Any] = []  # weak references that invalidate the entry when they die
        # What the functions it reached through values (a dispatch table, a partial) read is
        # part of this fingerprint too: their watches are merged into this one.
        self.watch = _Watch(trace)
        for child in reached:
            self.watch.merge(child.watch)
        self.check = self.watch.compile(root, self.hold)

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
        # Something this fingerprint read died (a helper or global rebound): re-pulls of
        # keyed Nodes re-check their keys from now on (``repull``).
        attention.add("suspect")


def _pin(value: Any) -> Any:
    """``value`` as a watch keeps it: weakly when it can be (so a rebound 8 GiB array or a
    function is not kept alive by its own entry), else itself (numbers, strings, dicts)."""
    try:
        return weakref.ref(value)
    except TypeError:
        return _Strong(value)


class _Strong(tuple):
    """A pinned value that takes no weak reference: called, it returns the value, as a
    ``weakref.ref`` does."""

    def __new__(cls, value: Any) -> _Strong:
        return super().__new__(cls, (value,))

    def __call__(self) -> Any:
        return self[0]


def _never(root: Any) -> bool:
    return False


_UNUSED: Any = object()  # defaults a function's code cannot use


class _Watch:
    """What a fingerprint read, to re-check by identity: each function's code, defaults and
    closure cells (``funcs``), each name read from a namespace (``spaces``), values pinned
    (``_pin``). Mergeable: a fingerprint watches what the fingerprints it hashed read."""

    __slots__ = ("funcs", "spaces", "broken")

    def __init__(self, trace: Trace) -> None:
        # id(f) -> (ref, code, defaults, kwdefaults, pinned cell contents); the defaults a
        # call cannot use are _UNUSED (not watched: swapping them changes nothing it does)
        self.funcs: dict[int, tuple[Any, ...]] = {}
        # (id(namespace) or id(owner), attr) -> (owner ref, attr, {name: pinned value})
        self.spaces: dict[tuple[int, str], tuple[Any, str, dict[str, Any]]] = {}
        self.broken = False  # two reads of one name saw two objects: never valid
        for f in trace.funcs.values():
            code = f.__code__
            defaults = f.__defaults__ if code.co_argcount else _UNUSED
            kwdefaults = f.__kwdefaults__ if code.co_kwonlyargcount else _UNUSED
            cells = tuple(_pin(cell_value(cell)) for cell in f.__closure__ or ())
            self.funcs[id(f)] = (weakref.ref(f), code, defaults, kwdefaults, cells)
        for key, (owner, attr, names, values) in trace.spaces.items():
            pins = {n: _pin(v) for n, v in zip(names, values, strict=True)}
            self.spaces[key] = (weakref.ref(owner), attr, pins)

    def merge(self, other: _Watch) -> None:
        self.broken = self.broken or other.broken
        for fid, func in other.funcs.items():
            self.funcs.setdefault(fid, func)
        for where, (ref, attr, pins) in other.spaces.items():
            mine = self.spaces.setdefault(where, (ref, attr, {}))[2]
            for name, pin in pins.items():
                if name not in mine:
                    mine[name] = pin
                elif mine[name]() is not pin():  # rebound between the two traces
                    self.broken = True

    def compile(self, root: Any, hold: Callable[[Any], None]) -> Callable[[Any], bool]:
        """One generated function of ``root`` (the fingerprinted function, which its caller
        holds) comparing every identity: on the new-Node hit path that is one call of
        attribute loads and ``is`` tests, with no closure per function."""
        env: dict[str, Any] = {"__builtins__": {"id": id}}
        lines: list[str] = []
        alive: set[int] = set()  # owners dereferenced (and so checked alive) by then
        for i, (ref, code, defaults, kwdefaults, cells) in enumerate(self.funcs.values()):
            f = ref()
            if f is None or self.broken:
                return _never
            alive.add(id(f))
            env.update({f"c{i}": code, f"d{i}": defaults, f"k{i}": kwdefaults, f"r{i}": ref})
            tests = [f"f{i}.__code__ is not c{i}"]
            tests += [] if defaults is _UNUSED else [f"f{i}.__defaults__ is not d{i}"]
            tests += [] if kwdefaults is _UNUSED else [f"f{i}.__kwdefaults__ is not k{i}"]
            lines.append(f"f{i} = root" if f is root else f"f{i} = r{i}()")
            for j, pin in enumerate(cells):
                value = pin()
                if value is None and type(pin) is not _Strong:
                    return _never
                hold(value)  # by identity: a cell may hold f itself, or 8 MiB it must not keep
                tests.append(f"id(f{i}.__closure__[{j}].cell_contents) != {id(value)}")
            lines.append(f"if {' or '.join(tests)}: return False")
        for j, space in enumerate(self.spaces.values()):
            check = _space_check(space, hold, alive, env, j)
            if check is None:
                return _never
            lines.extend(check)
        tags = [name for name in env if name.startswith("v")]  # verified tags, updated
        lines = ([f"global {', '.join(tags)}"] if tags else []) + lines
        body = "".join(f"    {line}\n" for line in lines)
        source = f"def check(root):\n{body}    return True\n"
        exec(compile(source, "<lazygraph fingerprint check>", "exec"), env)  # noqa: S102
        return env.pop("check")  # popped: no cycle between the function and its globals


def _space_check(
    space: tuple[Any, str, dict[str, Any]],
    hold: Callable[[Any], None],
    alive: set[int],
    env: dict[str, Any],
    j: int,
) -> list[str] | None:
    """The lines checking one namespace: each name read is bound to the same object, no
    name that was missing has appeared. None when an owner or a value has died."""
    ref, attr, pins = space
    owner = ref()
    if owner is None:
        return None
    names, values = list(pins), [pin() for pin in pins.values()]
    for pin, value in zip(pins.values(), values, strict=True):
        if value is None and type(pin) is not _Strong:
            return None
        hold(value)
    env[f"s{j}"] = _space_exact(ref, attr, names, values)
    namespace = getattr(owner, attr)
    versions = _dict_versions()
    # The namespace must be alive before its version tag is read: its owner is checked
    # first (a function's globals live as long as it does, a module's dict as the module).
    guard = [] if id(owner) in alive else [f"if o{j}() is None: return False"]
    env[f"o{j}"] = ref
    if versions is None or type(namespace) is not dict:
        return [f"if not s{j}(): return False"]
    # The fast path: nothing was written to the namespace since it was last checked (the
    # tag read first: a write during the exact check leaves the next check exact too).
    env[f"t{j}"], env[f"v{j}"] = versions(namespace), -1
    return [
        *guard,
        f"if t{j}.value != v{j}:",
        f"    before = t{j}.value",
        f"    if not s{j}(): return False",
        f"    v{j} = before",
    ]


def _space_exact(ref: Any, attr: str, names: list[str], values: list[Any]) -> Callable[[], bool]:
    """``getattr(ref(), attr)[name]`` is still each value; no missing name has appeared."""
    missing = frozenset(n for n, v in zip(names, values, strict=True) if v is UNBOUND)
    present = [(n, v) for n, v in zip(names, values, strict=True) if v is not UNBOUND]
    get = _getter([n for n, _ in present])
    expected = tuple(id(v) for _, v in present)  # each held by the entry: ids stay unique
    size = [len(getattr(ref(), attr))]  # names missing then are looked for once it grows

    def check() -> bool:
        ns = getattr(ref(), attr)
        if len(ns) != size[0]:
            if missing and not ns.keys().isdisjoint(missing):
                return False
            size[0] = len(ns)
        return tuple(map(id, get(ns))) == expected

    return check


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


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple (itemgetter of one name does not)."""
    if len(names) == 1:
        one = names[0]
        return lambda ns: (ns[one],)
    return operator.itemgetter(*names) if names else (lambda ns: ())


def rebound_names(entry: Any) -> list[str]:
    """The names ``entry``'s fingerprint read that are bound to other objects now, and the
    functions whose code or defaults changed in place (for a message: never raises)."""
    names: list[str] = []
    for ref, code, defaults, kwdefaults, _ in entry.watch.funcs.values():
        f = ref()  # a dead one was rebound: its name is among the bindings below
        if f is not None and (
            f.__code__ is not code
            or defaults is not _UNUSED and defaults is not f.__defaults__
            or kwdefaults is not _UNUSED and kwdefaults is not f.__kwdefaults__
        ):
            names.append(f.__qualname__)
    for ref, attr, pins in entry.watch.spaces.values():
        owner = ref()
        namespace = getattr(owner, attr, {}) if owner is not None else {}
        for name, pin in pins.items():
            if namespace.get(name, UNBOUND) is not pin():
                names.append(name)
    return list(dict.fromkeys(names))


#: What ``entry.check(func)`` raises when what it watches went: an owner died (a dead weak
#: reference), a name was deleted, a closure cell emptied. Each means "not valid".
CHECK_ERRORS = (AttributeError, KeyError, ValueError)


def still_valid(entry: Any) -> bool:
    """True while everything the cached fingerprint in ``entry`` read is still bound as it was."""
    try:
        return entry.valid and entry.check(entry.ref())
    except CHECK_ERRORS:
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
        local = self._local.__dict__
        if entry is None or entry.ref() is not func or not still_valid(entry):
            active: dict[int, Any] = local.setdefault("active", {})
            if id(func) in active:
                # Reached again while being fingerprinted (a cycle through data, e.g. a
                # closure holding a list of functions): count it by name; the outer call
                # covers its code.
                local["cuts"] = local.get("cuts", 0) + 1
                return tagged_digest(b"c", ident(func).encode(), version)
            cuts, outer = local.get("cuts", 0), local.get("reached")
            reached = local["reached"] = []  # the fingerprints this trace's values reach
            active[id(func)] = func
            try:
                trace = Trace(version, code_fingerprint=function_fingerprint)
                fingerprint = trace.fingerprint(func)
            finally:
                del active[id(func)]
                local["reached"] = outer
            trace.warn_unhashed(func)
            if local.get("cuts", 0) != cuts:  # a cut result depends on call order
                return fingerprint  # and its callers are cut too: none of them is kept
            entry = _Entry(func, trace, fingerprint, reached)
            self._store(key, func, entry)
        tracing = local.get("reached")
        if tracing is not None:  # fingerprinted while tracing another function's values
            tracing.append(entry)
        return entry.fingerprint

    def _store(self, key: tuple[int, str | None], func: Any, entry: _Entry) -> None:
        try:
            entry.ref = weakref.ref(func, functools.partial(self._drop, key))
        except TypeError:  # pragma: no cover - functions and classes are weak-referenceable
            return
        if still_valid(entry):  # else rebound by another thread while it was traced
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

