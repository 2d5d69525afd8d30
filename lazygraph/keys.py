"""Node keys: a code fingerprint plus the content of the arguments, resolved over a graph.

Covers: ``node_key``/``prefixed_key`` (a fingerprint plus the arguments' content, where a
Node argument contributes its own key), ``resolve_keys`` (key every node above some roots
that has none, dependencies first), ``key_one`` (the new-Node hit path) and noticing code
changes (a new fingerprint for a node factory starts a new revision). Duck-typed over
nodes: it reads ``_key``, ``deps``, ``func``, ``args``, ``kwargs``, ``options`` and writes
``_key``/``_persistable``, and of the options ``_ignored`` (arguments left out of the key)
and its own bookkeeping; ``node`` registers how a Node argument is encoded. Does not
cover: fingerprints (``fingerprint``), hashing values (``hashing``), staleness
(``incremental``).

>>> def double(x):
...     return 2 * x
>>> fp = function_fingerprint(double)
>>> key, persistable = node_key(fp, (21,), {})
>>> len(key), persistable
(16, True)
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from .context import current_session
from .fingerprint import (
    CHECK_ERRORS,
    SCHEME,
    cache_entry,
    function_fingerprint,
    rebound_names,
    still_valid,
)
from .graph import toposort
from .hashing import encode_scalars, hash_into
from .incremental import graph_lock, new_revision
from .redefinitions import (
    forget_redefined,
    note_redefined,
    outdated,
    outdated_name,
    redefined_note,
)

__all__ = [
    "SCHEME",
    "function_fingerprint",
    "current_definition",
    "key_current",
    "key_one",
    "keyed_arguments",
    "needs_refresh",
    "node_key",
    "prefixed_key",
    "refresh_redefined",
    "resolve_keys",
]

_digest = xxhash.xxh3_128_digest
# The code fingerprint last seen per function identity (module, qualname, node name), so a
# re-run notebook cell that redefines a node function can be told apart from a new one.
_code_seen: dict[tuple[str, str, str], bytes] = {}
# S3.9, process-wide like _code_seen: per function identity, the last few key prefixes and
# what each fingerprint was made of (to name what changed for a node keyed with an older
# one); the fingerprint entries factories key with (a pull checks them before it plans).
_history: dict[tuple[str, str, str], list[tuple[bytes, tuple[Any, ...]]]] = {}
_HISTORY = 8
_factory_entries: weakref.WeakSet[Any] = weakref.WeakSet()
_changed_entries: weakref.WeakSet[Any] = weakref.WeakSet()  # of factories whose code changed


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
    """``node_key`` with ``SCHEME + fingerprint`` joined once by the caller (a pull keys
    every node of a function with the same prefix).

    >>> fp = function_fingerprint(len)
    >>> prefixed_key(SCHEME + fp, (1,), {}) == node_key(fp, (1,), {})
    True
    """
    if not kwargs:
        data = encode_scalars(args)
        if data is not None:  # same digest as the streaming path below, in one shot
            return _digest(prefix + data), True
    h = xxhash.xxh3_128(prefix)
    persistable = hash_into(h, args)
    if kwargs:  # the args tuple is self-delimiting, so this stays unambiguous
        persistable = hash_into(h, tuple(sorted(kwargs.items()))) and persistable
    return h.digest(), persistable


# -- resolving the keys of a graph ----------------------------------------------------------


def resolve_keys(roots: Iterable[Any]) -> None:
    """Compute the key of every node above ``roots`` that has none, dependencies first.

    Only stale or never-keyed nodes are visited: a node with a key has keyed ancestors.
    Raises ``CycleError`` if the stale part of the graph has a cycle. Holds the graph lock,
    so an ``Input.set()`` in another thread cannot leave a key built from a mix of values.
    """
    with graph_lock:
        _resolve(roots)


def _resolve(roots: Iterable[Any]) -> None:
    stack = [n for n in roots if n._key is None]
    expanded: set[Any] = set()  # Nodes hash by identity
    prefixes: dict[Any, bytes] = {}  # SCHEME + fingerprint, per factory's options
    while stack:
        n = stack[-1]
        if n._key is not None:
            stack.pop()
            continue
        if n not in expanded:
            pending = []  # a loop, not a comprehension: cheaper for a few items on 3.11
            for d in n.deps:
                if d._key is None:
                    pending.append(d)
            if pending:
                expanded.add(n)
                for d in pending:
                    if d in expanded:
                        toposort(stack)  # raises CycleError naming the cycle
                stack.extend(pending)
                continue
        stack.pop()
        prefix = prefixes.get(n.options)
        if prefix is None:
            prefix = prefixes[n.options] = _key_prefix(n)
        _set_key(n, prefix)


def key_one(n: Any) -> None:
    """Key ``n``, whose dependencies all have keys (the new-Node hit path)."""
    if n._dependents is None:  # no Input upstream: no set() can race with this key
        _set_key(n, _key_prefix(n))
        return
    with graph_lock:
        if n._key is None:
            _set_key(n, _key_prefix(n))


def _key_prefix(n: Any) -> bytes:
    """``SCHEME`` + ``n``'s code fingerprint, from its factory while the cache entry is valid."""
    options, func = n.options, n.func
    entry = options._fp_entry
    if entry is not None and entry.valid and entry.ref() is func:
        try:  # still_valid(entry), without its call: the new-Node hit path
            if entry.check(func):
                return options._key_prefix
        except CHECK_ERRORS:
            pass
    fp = function_fingerprint(n.func, options.version)
    entry = options._fp_entry = cache_entry(n.func, options.version)
    # A global keyed by identity (a lock, a socket) makes every key of the function local.
    options._code_persistable = entry is None or entry.persistable
    options._key_prefix = SCHEME + fp
    if entry is not None:
        _factory_entries.add(entry)
    if options._fingerprint != fp:
        _code_changed(n, fp)
        if options._code_changed_at >= 0 and entry is not None:
            _changed_entries.add(entry)
        history = _history.setdefault(_ident(n), [])
        history.append((options._key_prefix, entry.parts if entry is not None else ()))
        del history[:-_HISTORY]
    return options._key_prefix


def keyed_arguments(n: Any) -> tuple[tuple, dict[str, Any]]:
    """The arguments of ``n`` that its key covers: all but those ``@node(ignore=...)`` names.

    ``options._ignored`` is ``(positions, names)`` of the bound call (``node`` binds every
    call to the signature first, so an argument has one place whichever way it was passed).
    """
    ignored = n.options._ignored
    if ignored is None:
        return n.args, n.kwargs
    positions, names = ignored
    args = tuple(a for i, a in enumerate(n.args) if i not in positions)
    return args, {k: v for k, v in n.kwargs.items() if k not in names}


def _set_key(n: Any, prefix: bytes) -> None:
    options = n.options
    if options._ignored is None:
        args, kwargs = n.args, n.kwargs
    else:
        args, kwargs = keyed_arguments(n)
    data = None if kwargs else encode_scalars(args)
    if data is not None:  # prefixed_key's one-shot path, without its call: once per node
        key, persistable = _digest(prefix + data), options._code_persistable
    else:
        key, persistable = prefixed_key(prefix, args, kwargs)
        persistable = persistable and options._code_persistable
    if persistable:
        for dep in n.deps:
            if not dep._persistable:
                persistable = False
                break
    n._persistable = persistable
    n._key = key


def _code_changed(n: Any, fp: bytes) -> None:
    """Note a fingerprint that differs from the one ``n``'s factory used before.

    A factory keying for the first time is compared with the last factory of the same name
    (a re-run cell: explain() says "code changed"). A factory whose own fingerprint changed
    (a helper it calls was redefined) starts a new revision, so stale nodes built from it
    are not backdated to results of the old code.
    """
    options = n.options
    ident = _ident(n)
    if options._fingerprint is None:
        seen = _code_seen.get(ident)
        options._replaced = seen is not None and seen != fp
    else:
        options._code_changed_at = new_revision()
    options._fingerprint = fp
    _code_seen[ident] = fp


def _ident(n: Any) -> tuple[str, str, str]:
    func = n.func
    module = getattr(func, "__module__", None) or ""
    return (module, getattr(func, "__qualname__", ""), n.options.name)


# -- nodes keyed with definitions that changed since (S3.9) ----------------------------------


def key_current(n: Any) -> bool:
    """False when keyed ``n`` was keyed with a function, helper or global that has been
    redefined or rebound since (its key no longer says what running it would compute).

    Cheap while nothing changed (the fingerprint check of the new-Node hit path); a node of
    a factory whose code changed before is re-keyed to compare.
    """
    options, func, key = n.options, n.func, n._key
    entry = options._fp_entry
    if entry is None or key is None:
        return True
    try:
        if not (entry.valid and entry.ref() is func and entry.check(func)):
            return False
    except CHECK_ERRORS:
        return False
    return options._code_changed_at < 0 or _key_under(n, options._key_prefix) == key


def _key_under(n: Any, prefix: bytes) -> bytes:
    args, kwargs = keyed_arguments(n)
    return prefixed_key(prefix, args, kwargs)[0]


def needs_refresh(n: Any) -> bool:
    """Whether a pull must pass keyed ``n`` to ``refresh_redefined`` before using its key
    (the re-pull fast path asks: False in the common case, at the cost of one check)."""
    return not key_current(n) or bool(outdated) and outdated_name(n) is not None


def refresh_redefined(roots: Iterable[Any], *, cached: Callable[[bytes], Any]) -> None:
    """Before a pull plans: deal with the keyed nodes above ``roots`` that were built from a
    since replaced definition (their function, or a helper or global their key covers), as
    the session's ``redefined=`` says (SPEC S3.9). ``cached(key)``: where a result of that
    key is stored, ``"absent"`` if nowhere (``Store.location``).

    ``"warn"`` (the default) keeps a node whose result is stored (it is what the node was
    built from) and warns once; one that has to run is re-keyed first, with the nodes above
    it: it calls the *current* helpers (globals are looked up when called), so under its
    old key their result would pass for the old code's. ``"rebuild"`` re-keys every such
    node, and swaps a node's own function for the current definition of its name where that
    is sound (``current_definition``). Costs nothing while no factory's code changed.
    """
    if not (_changed_entries or outdated or not all(map(still_valid, _factory_entries))):
        return
    mode = getattr(getattr(current_session(), "config", None), "redefined", "warn")
    with graph_lock:
        cleared: set[Any] = set()
        for n in _walk(list(roots)):
            if n._key is None:
                continue
            if any(d in cleared for d in n.deps):
                _clear(n, cleared)
            elif mode == "rebuild" and outdated and outdated_name(n) is not None:
                names = (n.name,)
                n.func = current_definition(n.func) or n.func
                note_redefined(n, names, "rebuilt")
                _clear(n, cleared)
            elif key_current(n):
                forget_redefined(n)  # keyed afresh since (an Input set): nothing to say
            else:
                _redefined(n, mode, cached, cleared)


def _redefined(n: Any, mode: str, cached: Callable[[bytes], Any], cleared: set[Any]) -> None:
    names = _what_changed(n)
    _key_prefix(n)  # the current fingerprint (a new revision when it changed)
    if _key_under(n, n.options._key_prefix) == n._key:
        return  # rebound to equal code or content (a cell run again): nothing changed
    if mode == "rebuild":
        n.func = current_definition(n.func) or n.func
        note_redefined(n, names, "rebuilt")
    elif cached(n._key) != "absent":
        if redefined_note(n) is None:  # named once: later bindings may be in-place changes
            note_redefined(n, names, "kept")
        return  # it keeps the key of its stored result, which is the old code's
    else:
        note_redefined(n, names, "rekeyed")
    _clear(n, cleared)


def _what_changed(n: Any) -> tuple[str, ...]:
    """Names of what ``n`` was keyed with that was redefined: the bindings that moved, while
    its factory still keys with the entry ``n`` was keyed with; else the parts of that
    fingerprint (from the factory's history) whose digest differs from the current one's."""
    options = n.options
    entry = options._fp_entry
    if entry is not None and options._key_prefix and _key_under(n, options._key_prefix) == n._key:
        names = rebound_names(entry)
        if names:
            return tuple(names)
    parts = _parts_of(n)
    function_fingerprint(n.func, options.version)  # the current entry, for its parts
    return _changed_names(parts, n)


def _walk(roots: list[Any]) -> list[Any]:
    """Every node above ``roots``, dependencies first."""
    order: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((d, False) for d in reversed(n.deps) if id(d) not in seen)
    return order


def _clear(n: Any, cleared: set[Any]) -> None:
    """Forget ``n``'s key as an Input.set() would (a tracked node keeps its verified one)."""
    if n._dependents is not None and n._verified_key is None:
        n._verified_key = n._key
    n._key = None
    cleared.add(n)


def _parts_of(n: Any) -> tuple[Any, ...]:
    """What the fingerprint ``n`` was keyed with was made of (from the factory's history)."""
    for prefix, parts in reversed(_history.get(_ident(n), [])):
        if _key_under(n, prefix) == n._key:
            return parts
    return ()


def _changed_names(old: tuple[Any, ...], n: Any) -> tuple[str, ...]:
    """The helpers and globals whose digest differs between ``old`` parts and ``n``'s now."""
    entry = cache_entry(n.func, n.options.version)
    new = {(p.kind, p.name): p.digest for p in (entry.parts if entry is not None else ())}
    before = {(p.kind, p.name): p.digest for p in old}
    # the function's own digest covers everything it reads: named only when nothing else is
    names = [name for k, name in before if k != "code" and new.get((k, name)) != before[(k, name)]]
    names += [name for k, name in new if k != "code" and (k, name) not in before and before]
    return tuple(dict.fromkeys(names)) or (getattr(n.func, "__qualname__", n.options.name),)


def current_definition(func: Any) -> Any:
    """The function now bound to ``func``'s name in its own module, where swapping it in is
    sound: a module-level function (not a lambda, closure or method) whose name is still
    bound to a function of that name (or a ``@node`` factory of one). Else None.

    >>> ns = {"__name__": "cell"}
    >>> exec("def clean(x):\\n    return x", ns); old = ns["clean"]
    >>> exec("def clean(x):\\n    return x + 1", ns)
    >>> current_definition(old) is ns["clean"]
    True
    >>> current_definition(lambda x: x) is None
    True
    """
    if type(func) is not types.FunctionType or func.__closure__ is not None:
        return None
    qualname = func.__qualname__
    if qualname != func.__name__:  # a lambda, a method, a function defined in a call
        return None
    bound = func.__globals__.get(qualname)
    bound = getattr(bound, "__wrapped__", bound)  # @node factories wrap the function
    if type(bound) is not types.FunctionType or bound.__qualname__ != qualname:
        return None
    if bound.__module__ != func.__module__ or bound.__closure__ is not None:
        return None
    return bound
