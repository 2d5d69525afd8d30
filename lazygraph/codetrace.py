"""Tracing a function for its fingerprint: its code, the user code and values it reaches.

Covers: one fingerprint computation (``Trace``): normalized bytecode, the helpers, globals,
attribute chains, classes and closure values a function reaches, what of them to re-check
later (for the cache in ``fingerprint``), the parts ``explain_key()`` shows, which code is
user code and which is a library keyed by its version. Does not cover: caching fingerprints
and re-checking them (``fingerprint``) or hashing values (``hashing``).
"""

from __future__ import annotations

import dis
import enum
import functools
import importlib.metadata
import os
import site
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import xxhash

from .errors import user_stacklevel
from .hashing import content_hash, hash_into

__all__ = [
    "BUILTIN_CALLABLES",
    "SCHEME",
    "UNBOUND",
    "KeyPart",
    "Trace",
    "cell_value",
    "code_digest",
    "ident",
    "is_user_module",
    "library_token",
    "tagged_digest",
    "used_defaults",
    "wrapped_function",
]


#: Salt of every key: bump it when what a key covers changes, so old caches are not reused.
#: v2 (issue 14): globals of any type, attribute chains, library versions, bound calls.
SCHEME = b"lazygraph-key-v2"

#: A name a namespace does not bind (None is a value), shared with ``fingerprint``'s checks.
UNBOUND: Any = object()
_SKIP_OPS = frozenset({"NOP", "EXTENDED_ARG", "CACHE", "NOT_TAKEN"})
_HASCONST = frozenset(dis.hasconst)
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
_MAX_CHAIN = 6  # pkg.sub.mod.helper: attribute chains followed this deep
_MAX_NAMED = 100  # functions of a global container named in explain_key()
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
BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


class KeyPart(NamedTuple):
    """One line of what a fingerprint is made of (``explain_key()`` shows these)."""

    kind: str  # "code", "helper", "global", "closure", "defaults", "version", "library", ...
    name: str  # what the code calls it: "CONFIG", "pkg.sub.helper", "closure data"
    where: str  # the module it lives in, or the value's type
    digest: str  # a short hash, or "identity" for a value keyed by identity


def tagged_digest(tag: bytes, head: bytes, value: Any) -> bytes:
    h = xxhash.xxh3_128(SCHEME)
    h.update(tag + head)
    hash_into(h, value)
    return h.digest()


def ident(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and not isinstance(obj, (type, types.FunctionType)):
        module = type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(type(obj)))
    return f"{module}:{name}"


def cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell: the variable is not assigned yet
        return UNBOUND


# Process-wide on purpose: warn once per process about each global that has no content hash.
_WARNED: set[tuple[str, str]] = set()
_MAX_WARNED = 10_000


# -- tracing: the function, the user code and values it reaches, and what to re-check -------


class Trace:
    """One fingerprint computation: a worklist over reached user functions and classes."""

    def __init__(
        self, version: str | None, *, code_fingerprint: Callable[[Any], bytes]
    ) -> None:
        self.version = version
        # the fingerprint of a function met inside a global container (given, not imported:
        # fingerprint.py, which caches fingerprints, sits above this module)
        self.code_fingerprint = code_fingerprint
        self.follow = version is None
        self.seen: dict[int, Any] = {}
        self.queue: list[Any] = []
        self.funcs: dict[int, Any] = {}  # functions whose code, defaults, cells are watched
        # (id(owner), attr) -> [owner, attr, names, values]: bindings read and watched
        self.spaces: dict[tuple[int, str], list[Any]] = {}
        self.persistable = True
        self.unhashed: list[str] = []
        self.parts: list[KeyPart] = []

    def fingerprint(self, root: Any) -> bytes:
        self.seen[id(root)] = root
        head = self.own(root, root=True)
        others = []
        while self.queue:
            others.append(self.own(self.queue.pop(), root=False))
        others.sort()  # a set of reached functions: the order of discovery must not matter
        h = xxhash.xxh3_128(SCHEME)
        h.update(b"F" + head + len(others).to_bytes(8, "little") + b"".join(others))
        return h.digest()

    def watch(self, owner: Any, attr: str, name: str, value: Any) -> None:
        """Re-check ``getattr(owner, attr)[name] is value`` (one list per namespace)."""
        # Functions of one module share one list; a class's __dict__ is a new proxy each
        # time (its id means nothing), so modules and classes are keyed by themselves.
        where = (id(owner.__globals__), "") if attr == "__globals__" else (id(owner), attr)
        space = self.spaces.get(where)
        if space is None:
            space = self.spaces[where] = [owner, attr, [], []]
        if name not in space[2]:
            space[2].append(name)
            space[3].append(value)

    def part(self, kind: str, name: str, where: str, digest: bytes | str) -> None:
        text = digest if isinstance(digest, str) else digest.hex()[:12]
        self.parts.append(KeyPart(kind, name, where, text))

    def warn_unhashed(self, func: Any) -> None:
        for label in self.unhashed:
            key = (ident(func), label)
            if key in _WARNED or len(_WARNED) >= _MAX_WARNED:
                continue
            _WARNED.add(key)
            warnings.warn(
                f"{ident(func)} reads {label}, which has no content hash: it is keyed by "
                "identity, so results of this function are not persisted (pass it as an "
                "argument, or give the function a version=)",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )

    def own(self, obj: Any, *, root: bool) -> bytes:
        """Digest of ``obj`` alone; the user code it refers to is queued, named by identity."""
        h = xxhash.xxh3_128()
        h.update(ident(obj).encode() + b"\0")
        if not self.follow:  # only the root is traced under a version
            h.update(b"V" + str(self.version).encode())
            self.part("version", repr(self.version), ident(obj), "-")
        if isinstance(obj, type):
            self.own_class(h, obj)
        else:
            self.own_function(h, obj)
        digest = h.digest()
        kind = "code" if root else "helper"
        where = getattr(obj, "__module__", "") or ""
        if is_user_module(where):
            self.part(kind, getattr(obj, "__qualname__", repr(obj)), where, digest)
        return digest

    def own_function(self, h: Any, func: types.FunctionType) -> None:
        if not is_user_module(func.__module__):
            h.update(b"L" + library_token(func.__module__))
            return  # library functions count by name and package version
        code = func.__code__
        self.funcs[id(func)] = func
        for attr, value in zip(("defaults", "kwdefaults"), used_defaults(func), strict=True):
            if value is not None:
                self.value(h, f"{attr} of {func.__qualname__}", value, None)
            else:
                h.update(b"-")
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            value = cell_value(cell)
            h.update(name.encode() + b"\0")
            if value is UNBOUND:
                h.update(b"-")
            else:
                self.value(h, f"closure {name}", value, None)
        if not self.follow:
            return
        digest, global_names, chains = code_digest(code)
        h.update(digest)
        namespace = func.__globals__
        for name in global_names:
            value = namespace.get(name, UNBOUND)
            self.watch(func, "__globals__", name, value)
            if value is not UNBOUND:
                h.update(b"g" + name.encode() + b"\0")
                self.value(h, name, value, _subchains(chains, name))

    def value(self, h: Any, label: str, value: Any, chains: set[tuple[str, ...]] | None) -> None:
        """A value the code reads: user code by code, modules by what is read, else content."""
        code = _user_code(value)
        if code is not None:
            self.reference(h, code)
            return
        if isinstance(value, types.ModuleType):
            self.module(h, label, value, chains or set())
            return
        kind = type(value)
        if is_user_module(kind.__module__) and kind.__module__ != "builtins":
            self.reference(h, kind)  # an instance of a user class: its code (``__call__``...)
        digest, persistable = content_hash(value)
        h.update(b"v" + digest)
        if not persistable:
            self.persistable = False
            self.unhashed.append(f"{label} ({kind.__name__})")
        where = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
        self.part("global" if chains is not None else label.split(" ")[0], label, where,
                  digest if persistable else "identity")
        if isinstance(value, (dict, list, tuple)):
            self.contained_code(label, value)

    def contained_code(self, label: str, value: Any) -> None:
        """Name the user functions a container holds (a dispatch table) for explain_key();
        content hashing has keyed them by their code already."""
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for index, (key, item) in enumerate(items):
            if index >= _MAX_NAMED:
                break
            code = _user_code(item)
            if code is not None:
                digest = self.code_fingerprint(code)
                self.part("helper", code.__qualname__, f"{label}[{key!r}]", digest)

    def module(self, h: Any, label: str, module: Any, chains: set[tuple[str, ...]]) -> None:
        """A module: a library one by its version; a user one by the attributes code reads."""
        name = module.__name__
        if not is_user_module(name):
            token = library_token(name)
            h.update(b"L" + name.encode() + b"\0" + token)
            self.part("library", label, name, token.decode())
            return
        h.update(b"M" + name.encode() + b"\0")
        heads: dict[str, set[tuple[str, ...]]] = {}
        for chain in chains:
            heads.setdefault(chain[0], set()).add(chain[1:])
        for attr in sorted(heads):
            target = module.__dict__.get(attr, UNBOUND)
            self.watch(module, "__dict__", attr, target)
            h.update(b"a" + attr.encode() + b"\0")
            if target is UNBOUND:
                h.update(b"-")
                continue
            rest = {c for c in heads[attr] if c}
            self.value(h, f"{label}.{attr}", target, rest)

    def own_class(self, h: Any, cls: type) -> None:
        if not is_user_module(cls.__module__):
            h.update(b"L" + library_token(cls.__module__))
            return
        if not self.follow:
            return  # versioned classes count by name and version
        for base in cls.__bases__:
            self.reference(h, base)
        ns = cls.__dict__
        for name in sorted(ns):
            if name in _SKIP_CLASS_ATTRS:
                continue
            value = ns[name]
            self.watch(cls, "__dict__", name, value)
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
            h.update(b"?" + ident(type(value)).encode())

    def reference(self, h: Any, value: Any) -> None:
        """User functions and classes: name now, code via the worklist; anything else: content."""
        code = _user_code(value)
        if code is None:
            self.content(h, value)
            return
        h.update(b"r" + ident(code).encode() + b"\0")
        if self.follow and id(code) not in self.seen:
            self.seen[id(code)] = code
            self.queue.append(code)

    def content(self, h: Any, value: Any) -> None:
        digest, persistable = content_hash(value)
        self.persistable = self.persistable and persistable
        h.update(b"v" + digest)


def _subchains(chains: frozenset[tuple[str, ...]], name: str) -> set[tuple[str, ...]]:
    return {chain[1:] for chain in chains if chain[0] == name and len(chain) > 1}


def _is_simple(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_is_simple(item) for item in value)
    return type(value) in _SIMPLE


def _user_code(value: Any) -> Any:
    """The user function or class ``value`` is (or wraps, like ``lru_cache``), else None."""
    if type(value) is not types.FunctionType and not isinstance(value, type):
        value = wrapped_function(value)
    if value is not None and is_user_module(value.__module__):
        return value
    return None


def used_defaults(func: types.FunctionType) -> tuple[Any, Any]:
    """``func``'s ``__defaults__`` and ``__kwdefaults__``, each None where the code has no
    parameter it could fill (a call ignores it then; the cache need not watch it)."""
    code = func.__code__
    defaults = func.__defaults__ if code.co_argcount else None
    return defaults, func.__kwdefaults__ if code.co_kwonlyargcount else None


def wrapped_function(value: Any) -> types.FunctionType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, (types.FunctionType, type, types.ModuleType)):
        return None
    else:
        try:  # functools.wraps, lru_cache, cache; a proxy's __getattr__ may raise anything
            value = getattr(value, "__wrapped__", None)
        except Exception:  # noqa: BLE001 - not a wrapper, whatever it raised
            return None
    return value if type(value) is types.FunctionType else None


@functools.lru_cache(maxsize=4096)
def code_digest(
    code: types.CodeType,
) -> tuple[bytes, tuple[str, ...], frozenset[tuple[str, ...]]]:
    """Digest of normalized code, the global names it (and nested code) uses, and the
    attribute chains read from globals (``pkg.sub.helper`` -> ``("pkg", "sub", "helper")``).

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
    chains: set[tuple[str, ...]] = set()
    chain: list[str] = []
    for ins in dis.get_instructions(code):
        if ins.opname in _SKIP_OPS:
            continue
        h.update(ins.opname.encode() + b"\0")
        if ins.opname in _ATTR_OPS and chain and len(chain) < _MAX_CHAIN:
            chain.append(ins.argval)
        elif len(chain) > 1:
            chains.add(tuple(chain))
        if ins.opname not in _ATTR_OPS:
            chain = [ins.argval] if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") else []
        if ins.opcode in _HASCONST:
            const = code.co_consts[ins.arg] if ins.arg is not None else ins.argval
            if isinstance(const, types.CodeType):
                nested, nested_globals, nested_chains = code_digest(const)
                h.update(b"c" + nested)
                global_names.update(nested_globals)
                chains.update(nested_chains)
            else:
                h.update(b"v" + content_hash(const)[0])
            continue
        if ins.opname in _GLOBAL_OPS:
            global_names.add(ins.argval)
        hash_into(h, ins.argval if isinstance(ins.argval, (str, tuple)) else ins.arg)
    if len(chain) > 1:
        chains.add(tuple(chain))
    return h.digest(), tuple(sorted(global_names)), frozenset(chains)


@functools.cache
def is_user_module(name: str | None) -> bool:
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


@functools.cache
def library_token(module: str | None) -> bytes:
    """The version installed code is keyed by: ``numpy 2.4.6``, ``python 3.11`` (stdlib)."""
    top = (module or "builtins").partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "__future__"):
        return f"python {sys.version_info[0]}.{sys.version_info[1]}".encode()
    found = getattr(sys.modules.get(top), "__version__", None)
    if not isinstance(found, str):
        try:
            found = importlib.metadata.version(top)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            found = "?"  # a package without metadata: its name alone
    return f"{top} {found}".encode()


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    # The standard library's directories from where its modules live, not from
    # sysconfig.get_paths(): that expands every config variable (1 ms at a new process's
    # first key, more than a persisted hit costs).
    compiled = getattr(sys.modules.get("_struct"), "__file__", None)  # lib-dynload
    roots = {os.path.dirname(os.__file__), os.path.dirname(compiled) if compiled else ""}
    roots.update(getattr(site, "getsitepackages", list)())
    roots.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    return tuple(os.path.realpath(root) + os.sep for root in roots if root)

