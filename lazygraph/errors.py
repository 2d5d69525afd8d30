"""Every error lazygraph raises, each also deriving from the built-in a caller would catch.

Covers: the exception hierarchy and how messages are shaped. Does not cover: where the
errors are raised (the scheduler, config and store modules do that).

>>> issubclass(ConfigError, ValueError) and issubclass(ConfigError, LazyGraphError)
True
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "LazyGraphError",
    "ConfigError",
    "NodeError",
    "CycleError",
    "CacheSecurityError",
]


class LazyGraphError(Exception):
    """Base class of every error lazygraph raises."""


class ConfigError(LazyGraphError, ValueError):
    """A configuration value is missing, malformed or out of range.

    >>> str(ConfigError('memory_limit must be a size like "2GB" (got "2XB")'))
    'memory_limit must be a size like "2GB" (got "2XB")'
    """


class CacheSecurityError(LazyGraphError, PermissionError):
    """A cache directory or entry is not safe to use (wrong owner, writable by others...)."""


class CycleError(LazyGraphError, ValueError):
    """The graph has a cycle; ``cycle`` lists the node names around it.

    >>> str(CycleError(["a", "b", "a"]))
    'cycle in the graph: a -> b -> a; an Input was set to a node that depends on it'
    """

    def __init__(self, cycle: Sequence[str], nodes: Sequence[object] = ()) -> None:
        self.cycle = list(cycle)
        self.nodes = list(nodes)
        super().__init__(
            "cycle in the graph: "
            + " -> ".join(self.cycle)
            + "; an Input was set to a node that depends on it"
        )


class NodeError(LazyGraphError, RuntimeError):
    """A node's function raised; the original exception is ``__cause__``.

    ``node`` is the name of the failing node, ``path`` the names from the pulled node down to
    it, ``key`` the failing node's key (hex) when known.

    >>> err = NodeError("parse", ["report", "clean", "parse"], ValueError("bad row"))
    >>> print(err)
    node 'parse' failed with ValueError: bad row
      path: report -> clean -> parse
    """

    def __init__(
        self,
        node: str,
        path: Sequence[str],
        exc: BaseException,
        *,
        key: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.node = node
        self.path = list(path)
        self.key = key
        self.original = exc
        reason = detail or f"{type(exc).__name__}: {exc}"
        message = f"node {node!r} failed with {reason}"
        if len(self.path) > 1:
            message += "\n  path: " + " -> ".join(self.path)
        super().__init__(message)
