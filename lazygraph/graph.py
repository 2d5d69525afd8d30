"""Pure functions over the node graph: walking, ordering, cycles and paths.

Covers: read-only traversals of ``Node.deps`` that never recurse (a 100,000-node chain is
fine). Does not cover: keys, the store or running anything (see ``scheduler``).

>>> class N:
...     def __init__(self, name, *deps):
...         self.name, self.deps = name, deps
>>> a = N("a"); b = N("b", a); c = N("c", a, b)
>>> [n.name for n in toposort([c])]
['a', 'b', 'c']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar


class GraphNode(Protocol):
    """Anything with a ``name`` and a tuple of ``deps``."""

    @property
    def name(self) -> str: ...

    @property
    def deps(self) -> Sequence[Any]: ...


N = TypeVar("N", bound=GraphNode)


def walk(roots: Iterable[N]) -> Iterator[N]:
    """Yield every node reachable from ``roots`` once, roots first (depth-first pre-order).

    >>> class N:
    ...     def __init__(self, name, *deps): self.name, self.deps = name, deps
    >>> a = N("a"); b = N("b", a)
    >>> [n.name for n in walk([b, a])]
    ['b', 'a']
    """
    seen: set[int] = set()
    stack = list(roots)[::-1]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(reversed(node.deps))


def toposort(roots: Iterable[N]) -> list[N]:
    """Return the nodes reachable from ``roots``, every node after its dependencies.

    Raises ``CycleError`` when the graph has a cycle.
    """
    order: list[N] = []
    state: dict[int, int] = {}  # 1 = on the current path, 2 = emitted
    for root in roots:
        if id(root) in state:
            continue
        stack: list[tuple[N, int]] = [(root, 0)]
        state[id(root)] = 1
        while stack:
            node, index = stack[-1]
            deps = node.deps
            if index == len(deps):
                stack.pop()
                state[id(node)] = 2
                order.append(node)
                continue
            stack[-1] = (node, index + 1)
            dep = deps[index]
            seen = state.get(id(dep))
            if seen is None:
                state[id(dep)] = 1
                stack.append((dep, 0))
            elif seen == 1:
                _raise_cycle([n for n, _ in stack], dep)
    return order


def path_to(roots: Iterable[N], target: Any) -> list[N]:
    """Return the dependency path from one of ``roots`` down to ``target`` (inclusive).

    ``target`` matches by identity. Returns ``[target]`` when it is not reachable.
    """
    parent: dict[int, N | None] = {}
    stack: list[N] = []
    for root in roots:
        if id(root) not in parent:
            parent[id(root)] = None
            stack.append(root)
    while stack:
        node = stack.pop()
        if node is target:
            path = [node]
            up = parent[id(node)]
            while up is not None:
                path.append(up)
                up = parent[id(up)]
            return path[::-1]
        for dep in node.deps:
            if id(dep) not in parent:
                parent[id(dep)] = node
                stack.append(dep)
    return [target]


def _raise_cycle(path: list[Any], repeated: Any) -> None:
    from .errors import CycleError

    start = next(i for i, n in enumerate(path) if n is repeated)
    cycle = path[start:] + [repeated]
    raise CycleError([n.name for n in cycle], cycle)
