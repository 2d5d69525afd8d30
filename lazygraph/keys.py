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

from collections.abc import Iterable
from typing import Any

import xxhash

from .fingerprint import SCHEME, cache_entry, function_fingerprint, still_valid
from .graph import toposort
from .hashing import encode_scalars, hash_into
from .incremental import graph_lock, new_revision

__all__ = [
    "SCHEME",
    "function_fingerprint",
    "key_one",
    "keyed_arguments",
    "node_key",
    "prefixed_key",
    "resolve_keys",
]

_digest = xxhash.xxh3_128_digest
# The code fingerprint last seen per function identity (module, qualname, node name), so a
# re-run notebook cell that redefines a node function can be told apart from a new one.
_code_seen: dict[tuple[str, str, str], bytes] = {}


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
    options = n.options
    entry = options._fp_entry
    if entry is not None and entry.ref() is n.func and still_valid(entry):
        return options._key_prefix
    fp = function_fingerprint(n.func, options.version)
    entry = options._fp_entry = cache_entry(n.func, options.version)
    # A global keyed by identity (a lock, a socket) makes every key of the function local.
    options._code_persistable = entry is None or entry.persistable
    options._key_prefix = SCHEME + fp
    if options._fingerprint != fp:
        _code_changed(n, fp)
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
    module = getattr(n.func, "__module__", None) or ""
    ident = (module, getattr(n.func, "__qualname__", ""), options.name)
    if options._fingerprint is None:
        seen = _code_seen.get(ident)
        options._replaced = seen is not None and seen != fp
    else:
        options._code_changed_at = new_revision()
    options._fingerprint = fp
    _code_seen[ident] = fp
