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
from .store.base import MISSING as _MISSING

__all__ = ["Node", "Input", "NodeOptions", "NodeFactory", "node"]

P = ParamSpec("P")
R = TypeVar("R")

_CONTAINERS = (list, tuple, dict, set, frozenset)
# Input.set() and node construction both touch reverse edges; the lock keeps a set() from
# racing another set() on an overlapping graph. Building plain nodes never takes it.
_graph_lock = threading.RLock()
_revision = 0
# Pulls read node keys and write salsa bookkeeping while they run; Input.set() rewrites
# both. So set() waits until no pull of another thread is running, and new pulls wait
# while a set() is pending (it would starve otherwise). A pull's own thread may set().
_quiet = threading.Condition(_graph_lock)
_pulls: dict[int, int] = {}  # thread id -> running pulls
_setters_waiting = 0


def current_revision() -> int:
    """The number of Input (and code) changes so far in this process (salsa's *revision*)."""
    return _revision


def new_revision() -> int:
    """Start a new revision (an Input or a function's code changed) and return its number."""
    global _revision
    with _graph_lock:
        _revision += 1
        return _revision


def begin_pull() -> None:
    """Register a running pull of this thread (``Input.set`` waits for it)."""
    me = threading.get_ident()
    with _quiet:
        while _setters_waiting and me not in _pulls:
            _quiet.wait()
        _pulls[me] = _pulls.get(me, 0) + 1


def end_pull() -> None:
    """Unregister a pull started by ``begin_pull`` in this thread."""
    me = threading.get_ident()
    with _quiet:
        left = _pulls.get(me, 0) - 1
        if left > 0:
            _pulls[me] = left
        else:
            _pulls.pop(me, None)
        _quiet.notify_all()


def _wait_for_pulls() -> None:
    """Wait (holding ``_graph_lock`` again on return) until only this thread pulls."""
    global _setters_waiting
    me = threading.get_ident()
    if not _pulls or list(_pulls) == [me]:
        return
    _setters_waiting += 1
    try:
        while any(thread != me for thread in _pulls):
            _quiet.wait()
    finally:
        _setters_waiting -= 1
        _quiet.notify_all()


class NodeOptions:
    """The options given to ``@node``, shared by every Node the factory builds."""

    __slots__ = (
        "_fp_entry",
        "_key_prefix",
        "name",
        "version",
        "cache",
        "spill",
        "persist",
        "cutoff",
        "local",
        "_fingerprint",
        "_code_changed_at",
        "_replaced",
    )
    _PUBLIC = ("name", "version", "cache", "spill", "persist", "cutoff", "local")

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
        # Code tracking (the scheduler's ``resolve_keys``): the fingerprint last used for
        # keys, the revision at which it last changed (a helper edited and its cell re-run)
        # and whether this factory replaced one of the same name with other code.
        self._fingerprint: bytes | None = None
        self._fp_entry: Any = None  # the keys cache entry last used (checked before reuse)
        self._key_prefix = b""  # keys.SCHEME + that entry's fingerprint
        self._code_changed_at = -1
        self._replaced = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._PUBLIC)
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
        self._prev_key: bytes | None = None
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
            elif isinstance(value, _CONTAINERS):
                nested = True
        if nested or kwargs:
            deps, nested = _find_deps(args, kwargs)
        elif len(deps) == 2:
            if deps[0] is deps[1]:  # f(x, x) depends on x once
                del deps[1]
        elif len(deps) > 2:
            deps = list(dict.fromkeys(deps))
        # f(a, b) with Nodes a, b: the arguments are the dependencies; sharing the tuple
        # saves an object per node.
        same = len(deps) == len(args) and not nested and not kwargs
        self.deps: tuple[Node, ...] = args if same else tuple(deps)
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
        with _graph_lock:
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
        session = _current_session()
        if executor is None:  # Session.compute's re-pull fast path, without its layer
            value = session._memory_hit(self)
            if value is not _MISSING:
                return value
        return session.compute(self, executor=executor)[0]

    def info(self) -> Any:
        """Where this node's result lives, its size, type and timings (see ``inspection``)."""
        from .inspection import node_info

        return node_info(self)

    def explain(self) -> Any:
        """Why the last pull recomputed or reused each node of this node's graph."""
        from .explain import explain

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
        with _graph_lock:
            _wait_for_pulls()
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
            new_revision()
            _mark_stale(self)

    def __repr__(self) -> str:
        return f"<Input {self.name} value={_short_repr(self.args[0])}>"


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


def _current_session() -> Any:
    """Replaced by ``session.current_session`` when that module loads (no per-call import)."""
    from .session import current_session

    return current_session()


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
            for edge in list(node._dependents.values()):  # a copy: the GC may drop edges
                dependent = edge()
                if dependent is not None:
                    stack.append(dependent)


def _check_no_cycle(inp: Input, value: Node) -> None:
    from .graph import path_to, walk

    for ancestor in walk([value]):
        if ancestor is inp:
            path = path_to([value], inp)
            names = [inp.name] + [n.name for n in path]
            raise CycleError(names, [inp, *path])


def _find_deps(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Node], bool]:
    """The Nodes in ``args``/``kwargs`` in argument order, each once, and whether a container
    argument holds one (it must then be rebuilt with values in place of its Nodes)."""
    found: dict[Node, None] = {}
    nested = False
    for value in (*args, *kwargs.values()):
        if isinstance(value, Node):
            found[value] = None
        elif isinstance(value, _CONTAINERS):
            nested |= _collect(value, found)
    return list(found), nested


def _collect(container: Any, found: dict[Node, None]) -> bool:
    """Add Nodes found anywhere inside ``container`` to ``found``; True if there were any.

    True even when those Nodes were already found elsewhere: the container still has to be
    rebuilt with values in place of its Nodes.
    """
    seen = False
    stack = [container]
    while stack:
        item = stack.pop()
        values: Iterable[Any] = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        for value in values:
            if isinstance(value, Node):
                found[value] = None
                seen = True
            elif isinstance(value, _CONTAINERS):
                stack.append(value)
    return seen


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value) if not hasattr(value, "shape") else f"{type(value).__name__}{value.shape}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NodeFactory(Generic[P, R]):
    """What ``@node`` returns: calling it builds a Node; ``.func`` is the plain function."""

    def __init__(self, func: Callable[P, R], options: NodeOptions) -> None:
        self.func = func
        self.options = options
        functools.update_wrapper(self, func)

    # Typed loosely on purpose: any argument may be a Node standing in for the value the
    # function expects, which ParamSpec cannot express.
    def __call__(self, *args: Any, **kwargs: Any) -> Node:
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
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str (got {type(name).__name__})")
        flags = {"cache": cache, "spill": spill, "persist": persist, "cutoff": cutoff,
                 "local": local}
        for flag, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False (got {value!r})")
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
