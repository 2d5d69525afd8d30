"""Nodes: the immutable lazy call (``Node``), the mutable source (``Input``), and ``@node``.

Covers: building the graph (finding dependency Nodes in arguments, also nested in
list/tuple/dict/set), the per-node state the scheduler reads (cached key, the last
verified key, weak reverse edges from Inputs) and pushing an Input change downstream.
Does not cover: hashing (``keys``), running (``scheduler``) or storing (``store``).

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
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .errors import CycleError

__all__ = ["Node", "Input", "NodeOptions", "NodeFactory", "node"]

P = ParamSpec("P")
R = TypeVar("R")

_CONTAINERS = (list, tuple, dict, set, frozenset)
# Input.set() and node construction both touch reverse edges; the lock keeps a set() from
# racing another set() on an overlapping graph. Building plain nodes never takes it.
_graph_lock = threading.RLock()
_revision = 0


def current_revision() -> int:
    """The number of Input changes so far in this process (salsa's *revision*)."""
    return _revision


class NodeOptions:
    """The options given to ``@node``, shared by every Node the factory builds."""

    __slots__ = ("name", "version", "cache", "spill", "persist", "cutoff", "local")

    def __init__(
        self,
        name: str,
        *,
        version: str | None = None,
        cache: bool = True,
        spill: bool = True,
        persist: bool = True,
        cutoff: bool = True,
        local: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.cache = cache
        self.spill = spill
        self.persist = persist
        self.cutoff = cutoff
        self.local = local

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"NodeOptions({fields})"


class Node:
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
        "_prev_key",
        "_persistable",
        "_dependents",
        "_cause",
        "_last_pull",
        "_verified_at",
        "_changed_at",
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
        self._prev_key: bytes | None = None
        self._persistable = True
        self._dependents: weakref.WeakSet[Node] | None = None
        self._cause: Node | None = None
        self._last_pull: Any = None
        self._verified_at = -1  # revision at which the key and result were last checked
        self._changed_at = -1  # revision at which the result last changed
        self._set_deps(args, kwargs)

    def _set_deps(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        found: dict[Node, None] = {}
        nested = False
        for value in args:
            if isinstance(value, Node):
                found[value] = None
            elif isinstance(value, _CONTAINERS):
                nested |= _collect(value, found)
        if kwargs:
            for value in kwargs.values():
                if isinstance(value, Node):
                    found[value] = None
                elif isinstance(value, _CONTAINERS):
                    nested |= _collect(value, found)
        self.deps: tuple[Node, ...] = tuple(found)
        self._nested = nested
        for dep in found:
            if dep._dependents is not None:
                self._track()
                break

    def _track(self) -> None:
        """Keep reverse edges from tracked dependencies to this node.

        Only nodes with an Input upstream can ever go stale, so only they keep reverse
        edges (weak, so a dropped node does not stay alive through its Input).
        """
        with _graph_lock:
            if self._dependents is None:
                self._dependents = weakref.WeakSet()
            for dep in self.deps:
                if dep._dependents is not None:
                    dep._dependents.add(self)

    @property
    def name(self) -> str:
        """The function's qualified name, or the ``name=`` given to ``@node``."""
        return self.options.name

    @property
    def key(self) -> str:
        """The content key (32 hex digits of xxh3-128), computed on first use."""
        if self._key is None:
            from .scheduler import resolve_keys

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
        from .session import current_session

        return current_session().compute(self, executor=executor)[0]

    def info(self) -> Any:
        """Where this node's result lives, its size, type and timings (see ``inspection``)."""
        from .inspection import node_info

        return node_info(self)

    def explain(self) -> Any:
        """Why the last pull recomputed or reused each node of this node's graph."""
        from .inspection import explain

        return explain(self)

    def to_dot(self) -> str:
        """The graph above this node in Graphviz dot, coloured by where results live."""
        from .inspection import to_dot

        return to_dot(self)

    def visualize(self, path: str) -> str:
        """Write the graph picture to ``path`` (.dot, or .svg/.png with graphviz installed)."""
        from .inspection import visualize

        return visualize(self, path)

    def _repr_html_(self) -> str:
        from .inspection import node_html

        return node_html(self)

    def __repr__(self) -> str:
        key = self._key.hex()[:12] if self._key is not None else "?"
        return f"<Node {self.name} key={key} deps={len(self.deps)}>"


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
        super().__init__(_input_value, (value,), {}, NodeOptions(name, cache=False))
        if self._dependents is None:
            self._dependents = weakref.WeakSet()

    @property
    def value(self) -> Any:
        """The value (or Node) this Input currently holds."""
        return self.args[0]

    def set(self, value: Any) -> None:
        """Replace the value; nothing runs until something is pulled again.

        Setting an equal value (same content hash) changes nothing downstream.
        Raises ``CycleError`` if ``value`` is a Node that depends on this Input.
        """
        global _revision
        with _graph_lock:
            if isinstance(value, Node):
                _check_no_cycle(self, value)
            old_key = self._key
            self.args = (value,)
            self._set_deps(self.args, {})
            if old_key is not None:
                from .scheduler import resolve_keys

                self._key = None
                resolve_keys([self])
                if self._key == old_key:
                    return
                self._key = old_key
            _revision += 1
            _mark_stale(self)

    def __repr__(self) -> str:
        return f"<Input {self.name} value={_short_repr(self.args[0])}>"


def _input_value(value: Any) -> Any:
    """The function behind every Input: its value, as given."""
    return value


def _mark_stale(start: Input) -> None:
    """Push a change from ``start`` downstream: forget keys, remember the last verified one.

    A node without a key is already stale and so are its dependents (a dependent's key
    needs its dependencies' keys), so the walk stops there: it touches each node once.
    """
    stack: list[Node] = [start]
    while stack:
        node = stack.pop()
        if node._key is None and node is not start:
            continue
        if node._key is not None and node._prev_key is None:
            node._prev_key = node._key
        node._key = None
        node._cause = start
        if node._dependents:
            stack.extend(list(node._dependents))


def _check_no_cycle(inp: Input, value: Node) -> None:
    from .graph import path_to, walk

    for ancestor in walk([value]):
        if ancestor is inp:
            path = path_to([value], inp)
            names = [inp.name] + [n.name for n in path]
            raise CycleError(names, [inp, *path])


def _collect(container: Any, found: dict[Node, None]) -> bool:
    """Add Nodes found anywhere inside ``container`` to ``found``; True if there were any."""
    before = len(found)
    stack = [container]
    while stack:
        item = stack.pop()
        values: Iterable[Any] = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        for value in values:
            if isinstance(value, Node):
                found[value] = None
            elif isinstance(value, _CONTAINERS):
                stack.append(value)
    return len(found) > before


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value) if not hasattr(value, "shape") else f"{type(value).__name__}{value.shape}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NodeFactory(Generic[P, R]):
    """What ``@node`` returns: calling it builds a Node; ``.func`` is the plain function."""

    def __init__(self, func: Callable[P, R], options: NodeOptions) -> None:
        self.func = func
        self.options = options
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Node:
        return Node(self.func, args, kwargs, self.options)

    def __repr__(self) -> str:
        return f"<lazygraph node factory {self.options.name}>"


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
) -> Any:
    """Turn a function into a node factory: calling it builds a Node and runs nothing.

    Options: ``name`` (shown in reports), ``version`` (replaces the code fingerprint in the
    key), ``cache`` (keep results), ``spill``/``persist`` (allow disk tiers), ``cutoff``
    (hash results for early cutoff), ``local`` (always run in this process).

    >>> import lazygraph
    >>> @lazygraph.node(name="load", version="1")
    ... def load(path):
    ...     return path.upper()
    >>> load("a.csv").name
    'load'
    """

    def wrap(f: Callable[..., Any]) -> NodeFactory[Any, Any]:
        if not callable(f):
            raise TypeError(f"@node expects a function (got {type(f).__name__})")
        if version is not None and not isinstance(version, str):
            raise TypeError(f"version must be a str (got {type(version).__name__})")
        qualname = getattr(f, "__qualname__", None) or repr(f)
        # A function defined inside another is named by its own part: "outer.<locals>.f" -> "f"
        label = name if name is not None else qualname.rsplit("<locals>.", 1)[-1]
        options = NodeOptions(
            label,
            version=version,
            cache=cache,
            spill=spill,
            persist=persist,
            cutoff=cutoff,
            local=local,
        )
        return NodeFactory(f, options)

    if func is not None:
        return wrap(func)
    return wrap
