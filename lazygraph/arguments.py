"""Leaves inside call arguments: finding them, and THE one container rebuild that swaps them.

A node's arguments may hold dependency Nodes inside list/tuple/dict/set/frozenset (and
their subclasses). ``find_deps`` finds them when a Node is built; ``substitute`` rebuilds
the containers with each one replaced: by its value (the pull), by a placeholder and back
(the processes executor's ``template``/``fill``), by a task reference (dask). The rebuilt
container keeps its type: a ``defaultdict`` keeps its ``default_factory``, an
``OrderedDict``/``Counter``/namedtuple/other subclass stays one where it can be rebuilt.
Self-referencing containers (``a = [1]; a.append(a)``) are walked once and rebuilt with
the same cycle. This module imports nothing of lazygraph: the leaf type is a parameter.

Covers: containers inside arguments. Does not cover: hashing them (``hashing``), or other
objects that hold Nodes in attributes (they are opaque values, as they always were).

>>> from collections import OrderedDict
>>> class Leaf(str):
...     pass
>>> substitute([Leaf("a"), OrderedDict(k=Leaf("b"))], str.upper, kind=Leaf)
['A', OrderedDict([('k', 'B')])]
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CONTAINERS",
    "NOT_ITERATORS",
    "find_deps",
    "is_iterator",
    "iterator_argument",
    "substitute",
]

CONTAINERS = (list, tuple, dict, set, frozenset)
_PLAIN = frozenset(CONTAINERS)


def find_deps(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    kind: type | tuple[type, ...],
    func: Callable[..., Any] | None = None,
) -> tuple[list[Any], bool]:
    """The ``kind`` leaves in ``args``/``kwargs`` in argument order, each once, and whether a
    container argument holds one (it must then be rebuilt with ``substitute``).

    An iterator among them (also inside a container) raises ``TypeError`` naming the
    argument (``func``'s parameter, when given): keying it would consume it (S1.11).

    >>> find_deps((1, "a", ["b", "a"]), {"k": "c"}, kind=str)
    (['a', 'b', 'c'], True)
    """
    found: dict[Any, None] = {}
    nested = False
    pairs: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    for where, value in pairs:
        if isinstance(value, kind):
            found[value] = None
        elif isinstance(value, CONTAINERS):
            try:
                nested |= _collect(value, found, kind)
            except _Iterator as exc:
                raise iterator_argument(func, where, exc.value, inside=True) from None
        elif type(value) not in NOT_ITERATORS and is_iterator(value):
            raise iterator_argument(func, where, value)
    return list(found), nested


# Types seen in arguments that are not iterators: the per-argument check (``type(v) not in
# NOT_ITERATORS``) is then one dict lookup; hasattr on a type costs ~150 ns when it misses.
NOT_ITERATORS: dict[type, bool] = dict.fromkeys((int, float, str, bytes, bool, type(None)), True)


def is_iterator(value: Any) -> bool:
    """Whether ``value`` is an iterator (has ``__next__``); remembers types that are not.

    >>> is_iterator(iter([])), is_iterator([])
    (True, False)
    """
    t = type(value)
    if hasattr(t, "__next__"):
        return True
    if len(NOT_ITERATORS) < 4096:  # bounded: classes made in a loop would pile up
        NOT_ITERATORS[t] = True
    return False


class _Iterator(Exception):
    """An iterator found inside a container argument (reported naming the argument)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def iterator_argument(
    func: Callable[..., Any] | None, where: int | str, value: Any, *, inside: bool = False
) -> TypeError:
    """The error for an iterator argument: it cannot be keyed without consuming it.

    ``where`` is a position or keyword; the message names the parameter when ``func``'s
    signature says which one it is.

    >>> def f(rows): ...
    >>> print(iterator_argument(f, 0, iter([])))  # doctest: +ELLIPSIS
    argument 'rows' is a list_iterator, an iterator: ...
    """
    name = where
    if isinstance(where, int) and func is not None:
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):  # builtins without a signature: keep the position
            params = []
        if where < len(params) and params[where].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            name = params[where].name
    label = f"argument {name!r}" if isinstance(name, str) else f"positional argument {name}"
    kind = type(value).__name__
    held = f"holds a {kind}" if inside else f"is a {kind}"
    return TypeError(
        f"{label} {held}, an iterator: a node's key cannot be computed without consuming "
        "it; pass a list (list(...)) or a Node returning one"
    )


def _collect(container: Any, found: dict[Any, None], kind: type | tuple[type, ...]) -> bool:
    """Add the leaves found anywhere inside ``container`` to ``found``; True if any.

    True even when those leaves were already found elsewhere: the container still has to be
    rebuilt. Each container is walked once (by identity), so a cycle ends.
    """
    seen = False
    walked: set[int] = {id(container)}
    stack = [container]
    while stack:
        item = stack.pop()
        values: Iterable[Any] = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        for value in values:
            if isinstance(value, kind):
                found[value] = None
                seen = True
            elif isinstance(value, CONTAINERS):
                if id(value) not in walked:
                    walked.add(id(value))
                    stack.append(value)
            elif type(value) not in NOT_ITERATORS and is_iterator(value):
                raise _Iterator(value)
    return seen


def substitute(obj: Any, swap: Callable[[Any], Any], *, kind: type | tuple[type, ...]) -> Any:
    """``obj`` with every ``kind`` leaf (also inside containers) replaced by ``swap(leaf)``.

    A container holding no leaf is returned as it is (not copied); one that does is rebuilt
    with its type. Shared and self-referencing containers stay shared and self-referencing.

    >>> import collections
    >>> d = collections.defaultdict(list, {"x": 1})
    >>> out = substitute((d, [2, "y"]), lambda s: s * 2, kind=str)
    >>> out, out[0].default_factory
    ((defaultdict(<class 'list'>, {'xx': 1}), [2, 'yy']), <class 'list'>)
    """
    if isinstance(obj, kind):
        return swap(obj)
    if not isinstance(obj, CONTAINERS):
        return obj
    return _Rebuild(swap, kind).value(obj)


class _Rebuild:
    """One ``substitute`` call: the swap, and the containers rebuilt so far (by identity)."""

    __slots__ = ("swap", "kind", "done")

    def __init__(self, swap: Callable[[Any], Any], kind: type | tuple[type, ...]) -> None:
        self.swap = swap
        self.kind = kind
        # id -> (original, rebuilt); the original is held so its id is not reused meanwhile.
        # A mutable container is entered here before its items are rebuilt, so an item that
        # refers back to it (a cycle) gets the new container.
        self.done: dict[int, tuple[Any, Any]] = {}

    def value(self, obj: Any) -> Any:
        if isinstance(obj, self.kind):
            return self.swap(obj)
        if not isinstance(obj, CONTAINERS):
            return obj
        done = self.done.get(id(obj))
        if done is not None:
            return done[1]
        if isinstance(obj, dict):
            return self._dict(obj)
        if isinstance(obj, list):
            return self._list(obj)
        return self._immutable(obj)

    def _dict(self, obj: dict[Any, Any]) -> Any:
        new = {} if type(obj) is dict else _empty_like(obj, dict)
        self.done[id(obj)] = (obj, new)
        same = True
        for k, v in obj.items():
            k2, v2 = self.value(k), self.value(v)
            same = same and k2 is k and v2 is v
            new[k2] = v2
        return self._keep_if(same, obj, new)

    def _list(self, obj: list[Any]) -> Any:
        new = [] if type(obj) is list else _empty_like(obj, list)
        self.done[id(obj)] = (obj, new)
        same = True
        for item in obj:
            item2 = self.value(item)
            same = same and item2 is item
            new.append(item2)
        return self._keep_if(same, obj, new)

    def _immutable(self, obj: Any) -> Any:
        """A tuple, set or frozenset (or subclass): rebuilt from its items after them.

        None can be part of a cycle on its own (a set's items are hashable, so immutable;
        a cycle through a tuple passes through a list or dict, entered before it).
        """
        items = [self.value(item) for item in obj]
        if all(new is old for new, old in zip(items, obj, strict=True)):
            new: Any = obj
        elif type(obj) in _PLAIN:
            new = type(obj)(items)
        elif hasattr(obj, "_fields"):  # a namedtuple takes its fields as arguments
            new = type(obj)(*items)
        else:
            try:
                new = type(obj)(items)
            except TypeError:  # a subclass whose constructor takes something else
                new = (tuple if isinstance(obj, tuple) else set if isinstance(obj, set)
                       else frozenset)(items)
        self.done[id(obj)] = (obj, new)
        return new

    def _keep_if(self, same: bool, obj: Any, new: Any) -> Any:
        """The original when nothing inside changed (no copy for a leaf-free container)."""
        if same:
            self.done[id(obj)] = (obj, obj)
            return obj
        return new


def _empty_like(obj: Any, plain: type) -> Any:
    """An empty container of ``obj``'s type with its attributes (a defaultdict's factory).

    ``copy.copy`` reproduces a subclass with its state without calling its ``__init__``
    (whose parameters we cannot know); emptied, it is refilled with the rebuilt items. A
    type that cannot be copied that way becomes the plain ``list``/``dict``.
    """
    try:
        new = copy.copy(obj)
        new.clear()
    except Exception:  # noqa: BLE001 - any failure of a foreign class: fall back to plain
        return plain()
    return new
