"""Nodes: the immutable lazy call (``Node``), the mutable source (``Input``), and ``@node``.

Covers: building the graph (dependency Nodes in arguments, also nested in containers:
``arguments``), the per-node state the pull reads (cached key, the last verified key while
stale, weak reverse edges from Inputs, salsa's bookkeeping) and ``Input.set``. Does not
cover: keys (``keys``), staleness and revisions (``incremental``), running (``scheduler``,
reached through the current session in ``context``), storing (``store``) or showing
(``info()``/``explain()``/... call the views registered in ``display``).

>>> import lazygraph
>>> @lazygraph.node
... def add(a, b):
...     return a + b
>>> total = add(1, add(2, 3))      # builds two nodes, runs nothing
>>> total.name, len(total.deps)
('add', 1)
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .arguments import CONTAINERS as _CONTAINERS
from .arguments import NOT_ITERATORS as _NOT_ITERATORS
from .arguments import find_deps, is_iterator, iterator_argument
from .binding import bind_arguments
from .context import current_session as _current_session
from .display import show
from .errors import CycleError
from .graph import path_to, walk
from .hashing import register_encoder, token_header
from .incremental import graph_lock, mark_stale, new_revision, wait_for_pulls
from .incremental import input_value as _input_value
from .keys import resolve_keys
from .node_ops import BindsLikeAMethod, NodeOps, call_method
from .options import NodeOptions, checked_options
from .redefinitions import note_definition
from .repull import attention as _attention
from .store.base import MISSING as _MISSING

__all__ = ["AttributeNode", "Node", "Input", "NodeOptions", "NodeFactory", "node"]

P = ParamSpec("P")
R = TypeVar("R")

_NODE_TOKEN = token_header(16)
# Argument types that are never a Node, a container or an iterator (checked before the
# isinstance tests: a leaf's arguments are mostly these).
_SCALAR_TYPES = frozenset((int, float, str, bytes, bool, complex, type(None)))


class Node(NodeOps):
    """One lazy call ``func(*args, **kwargs)``; hashable by identity, immutable once built.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def double(x):
    ...     return 2 * x
    >>> n = double(21)
    >>> with lazygraph.Session():
    ...     n.compute()
    42
    """

    __slots__ = (
        "func",
        "args",
        "kwargs",
        "deps",
        "options",
        "_nested",
        "_key",
        "_verified_key",
        "_persistable",
        "_dependents",
        "_cause",
        "_last_pull",
        "_verified_at",
        "_changed_at",
        "_result_hash",
        "__weakref__",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: NodeOptions,
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self._key: bytes | None = None
        # While stale: the key it had when last verified (its result is the baseline for
        # backdating and early cutoff). None while clean.
        self._verified_key: bytes | None = None
        self._persistable = True
        # Weak edges to the dependents, only on nodes with an Input upstream (see _Edge).
        self._dependents: dict[int, _Edge] | None = None
        self._cause: Node | None = None
        self._last_pull: Any = None
        self._verified_at = -1  # revision at which the key and result were last checked
        self._changed_at = -1  # revision at which the result last changed
        self._result_hash: bytes | None = None  # of the last verified result, when known
        self._set_deps(args, kwargs)

    def _set_deps(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        deps: list[Node] = []
        nested = False
        for value in args:  # the common call: positional scalars and Nodes, no containers
            if isinstance(value, Node):
                deps.append(value)
            elif type(value) in _SCALAR_TYPES:
                continue
            elif isinstance(value, _CONTAINERS):
                nested = True
            elif type(value) not in _NOT_ITERATORS and is_iterator(value):  # S1.11
                raise iterator_argument(self.func, [a is value for a in args].index(True), value)
        if nested or kwargs:
            deps, nested = find_deps(args, kwargs, kind=Node, func=self.func)
        elif not deps:  # f(1, "a"): a leaf, or a cell run again
            self.deps: tuple[Node, ...] = ()
            self._nested = False
            return
        elif len(deps) == 2:
            if deps[0] is deps[1]:  # f(x, x) depends on x once
                del deps[1]
        elif len(deps) > 2:
            deps = list(dict.fromkeys(deps))
        # f(a, b) with Nodes a, b: the arguments are the dependencies; sharing the tuple
        # saves an object per node.
        same = len(deps) == len(args) and not nested and not kwargs
        self.deps = args if same else tuple(deps)
        self._nested = nested
        for dep in deps:
            if dep._dependents is not None:
                self._track()
                break

    def _track(self) -> None:
        """Keep reverse edges from tracked dependencies to this node.

        Only nodes with an Input upstream can ever go stale, so only they keep reverse
        edges (weak, so a dropped node does not stay alive through its Input).
        """
        with graph_lock:
            if self._dependents is None:
                self._dependents = {}
            for dep in self.deps:
                edges = dep._dependents
                if edges is not None:
                    edge = _Edge(self, dep)
                    edges[id(edge)] = edge

    @property
    def name(self) -> str:
        """The function's qualified name, or the ``name=`` given to ``@node``."""
        return self.options.name

    @property
    def key(self) -> str:
        """The content key (32 hex digits of xxh3-128), computed on first use."""
        if self._key is None:
            resolve_keys([self])
        assert self._key is not None
        return self._key.hex()

    def __lazygraph_token__(self) -> bytes:
        if self._key is None:
            self.key  # noqa: B018 - resolves the key of this node and its dirty ancestors
        assert self._key is not None
        return self._key

    def compute(self, *, executor: Any = None) -> Any:
        """Pull this node in the current Session and return its value (the very object)."""
        session = _current_session()
        # Session.compute's re-pull fast path, without its layer; while anything asks for
        # attention (file sources, replaced definitions, keys to re-check: ``repull``) that
        # layer looks closer first.
        if executor is None and not _attention:
            value = session._memory_hit(self)
            if value is not _MISSING:
                return value
        return session.compute(self, executor=executor)[0]

    def forget(self) -> None:
        """Drop this node's result from every tier: memory, weak, spill files and cache_dir.

        The next pull runs it again (joblib's ``func.clear()`` for one call). Nodes built
        from equal arguments share the key, so they lose it too.

        >>> import lazygraph
        >>> @lazygraph.node
        ... def double(x):
        ...     return 2 * x
        >>> with lazygraph.Session(progress=False) as session:
        ...     _ = double(2).compute(); double(2).forget(); _ = double(2).compute()
        ...     session.stats().computes
        2
        """
        if self._key is None:
            resolve_keys([self])
        _current_session().store.forget([self._key])

    def info(self) -> Any:
        """Where this node's result lives, its size, type and timings (see ``inspection``)."""
        return show("node_info", self)

    def explain(self) -> Any:
        """Why the last pull recomputed or reused each node of this node's graph."""
        return show("explain", self)

    def explain_key(self) -> Any:
        """What this node's key is made of: code, helpers, globals, arguments (text + HTML)."""
        return show("explain_key", self)

    def to_dot(self) -> str:
        """The graph above this node in Graphviz dot, coloured by where results live."""
        return show("to_dot", self)

    def visualize(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Draw the graph above this node: to a file, or as a picture a notebook shows.

        With ``path`` (.dot; .svg/.png/.pdf need Graphviz's ``dot`` program) it writes the
        file and returns the path; without one it returns a ``lazygraph.picture.Picture``.
        """
        return show("visualize", self, path)

    def _repr_html_(self) -> str:
        return show("node_html", self)

    def _derive(self, func: Callable[..., Any], args: tuple[Any, ...], label: str) -> Node:
        return Node(func, args, {}, _derived_options(label))

    def _attribute(self, name: str) -> AttributeNode:
        return AttributeNode(getattr, (self, name), {}, _derived_options(f".{name}"))

    def __repr__(self) -> str:
        key = self._key.hex()[:12] if self._key is not None else "?"
        return f"<Node {self.name} key={key} deps={len(self.deps)}>"


class AttributeNode(Node):
    """``node.lazy.name``: ``getattr(value, name)`` as a Node; calling it builds a method call.

    >>> import lazygraph
    >>> text = lazygraph.Input("a,b", name="text")
    >>> with lazygraph.Session(progress=False):
    ...     text.lazy.split(",").compute()
    ['a', 'b']
    """

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        owner, name = self.args
        return Node(call_method, (owner, name, *args), kwargs, _derived_options(f".{name}()"))


class Input(Node):
    """A mutable source value; ``set()`` changes it and marks what depends on it stale.

    >>> import lazygraph
    >>> x = lazygraph.Input(2, name="x")
    >>> @lazygraph.node
    ... def square(v):
    ...     return v * v
    >>> sq = square(x)
    >>> with lazygraph.Session():
    ...     first = sq.compute()
    ...     x.set(3)
    ...     second = sq.compute()
    >>> first, second
    (4, 9)
    """

    __slots__ = ()

    def __init__(self, value: Any, *, name: str = "input") -> None:
        if not isinstance(name, str):
            raise TypeError(f"Input name must be a str (got {type(name).__name__})")
        super().__init__(_input_value, (value,), {}, NodeOptions(name, cache=False))
        if self._dependents is None:
            self._dependents = {}

    @property
    def value(self) -> Any:
        """The value (or Node) this Input currently holds."""
        return self.args[0]

    def set(self, value: Any) -> None:
        """Replace the value; nothing runs until something is pulled again.

        Setting an equal value (same content hash) changes nothing downstream. Waits for
        pulls running in other threads to finish, so each pull sees one value.
        Raises ``CycleError`` if ``value`` is a Node that depends on this Input.
        """
        with graph_lock:
            wait_for_pulls()
            if isinstance(value, Node):
                _check_no_cycle(self, value)
            old_key = self._key
            self.args = (value,)
            self._set_deps(self.args, {})
            if old_key is not None:
                self._key = None
                resolve_keys([self])
                if self._key == old_key:
                    return
                self._key = old_key
            new_revision()
            mark_stale(self)

    def __repr__(self) -> str:
        return f"<Input {self.name} value={_short_repr(self.args[0])}>"


_derived_options = functools.lru_cache(maxsize=1024)(NodeOptions)  # one per label


class _Edge(weakref.ref):  # a weakref.ref[Node]
    """A reverse edge: a weak reference to a dependent that removes itself when it dies.

    A WeakSet per node costs several objects and microseconds to build; this is one object
    per edge, and the owner's dict still counts only live dependents.
    """

    __slots__ = ("owner",)

    def __new__(cls, dependent: Node, owner: Node) -> _Edge:
        return super().__new__(cls, dependent, _drop_edge)

    def __init__(self, dependent: Node, owner: Node) -> None:
        super().__init__(dependent, _drop_edge)  # type: ignore[call-arg]  # typeshed: no __init__
        self.owner = weakref.ref(owner)


def _drop_edge(edge: weakref.ReferenceType[Any]) -> None:
    owner = edge.owner()  # type: ignore[attr-defined]
    if owner is not None and owner._dependents is not None:
        owner._dependents.pop(id(edge), None)


def _check_no_cycle(inp: Input, value: Node) -> None:
    for ancestor in walk([value]):
        if ancestor is inp:
            path = path_to([value], inp)
            names = [inp.name] + [n.name for n in path]
            raise CycleError(names, [inp, *path])


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value) if not hasattr(value, "shape") else f"{type(value).__name__}{value.shape}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NodeFactory(BindsLikeAMethod, Generic[P, R]):
    """What ``@node`` returns: calling it builds a Node; ``.func`` is the plain function."""

    def __init__(self, func: Callable[P, R], options: NodeOptions) -> None:
        self.func = func
        self.options = options
        self._bind, self._arity, options._ignored = bind_arguments(func, options.ignore)
        functools.update_wrapper(self, func)
        note_definition(func, options.name)  # S3.9: nodes of a replaced definition warn

    # Typed loosely on purpose: any argument may be a Node standing in for the value the
    # function expects, which ParamSpec cannot express.
    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        # S1.10: f(1), f(a=1), f(1, b=<default>) are one call. All parameters given by
        # position is already the bound form: that check is all the common call costs.
        if (kwargs or len(args) != self._arity) and self._bind is not None:
            args, kwargs = self._bind(args, kwargs)
        return Node(self.func, args, kwargs, self.options)

    def __repr__(self) -> str:
        return f"<lazygraph node factory {self.options.name}>"

    def clear(self) -> None:
        """Drop every result of this function, whatever its arguments, from every tier of
        the current session and from its cache_dir (entries other processes wrote too).

        Entries are found by the function's name (``@node(name=...)``), as
        ``lazygraph cache clear --function`` finds them.
        """
        store = _current_session().store
        store.forget(store.keys_of(self.options.name))


@overload
def node(func: Callable[P, R]) -> NodeFactory[P, R]: ...


@overload
def node(
    func: None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    cache: bool = True,
    spill: bool = True,
    persist: bool = True,
    cutoff: bool = True,
    local: bool = False,
    nout: int | None = None,
    ignore: Iterable[str] = (),
) -> Callable[[Callable[P, R]], NodeFactory[P, R]]: ...


def node(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    cache: bool = True,
    spill: bool = True,
    persist: bool = True,
    cutoff: bool = True,
    local: bool = False,
    nout: int | None = None,
    ignore: Iterable[str] = (),
) -> Any:
    """Turn a function into a node factory: calling it builds a Node and runs nothing.

    Options: ``name`` (shown in reports), ``version`` (replaces the code fingerprint in the
    key), ``cache`` (keep results), ``spill``/``persist`` (allow disk tiers), ``cutoff``
    (hash results for early cutoff), ``local`` (always run in this process), ``nout`` (a
    call unpacks into that many Nodes), ``ignore`` (names of arguments left out of the key,
    like joblib's: ``verbose``, ``n_jobs``). On a method (also class/static) it binds as
    they do. Calls are bound to the signature (``f(1)``, ``f(a=1)`` and
    ``f(1, b=<default>)`` are one key); a call that does not fit fails when the Node is
    built, with a ``TypeError``.

    >>> import lazygraph
    >>> @lazygraph.node(name="load", version="1")
    ... def load(path):
    ...     return path.upper()
    >>> load("a.csv").name
    'load'
    """

    def wrap(f: Callable[..., Any]) -> Any:
        if isinstance(f, (classmethod, staticmethod)):  # @node above @classmethod
            return type(f)(wrap(f.__func__))
        flags = {"cache": cache, "spill": spill, "persist": persist, "cutoff": cutoff,
                 "local": local}
        return NodeFactory(f, checked_options(f, name=name, version=version, flags=flags,
                                              nout=nout, ignore=ignore))

    if func is not None:
        return wrap(func)
    return wrap


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
