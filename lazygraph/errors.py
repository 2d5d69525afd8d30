"""Every error lazygraph raises, each also deriving from the built-in a caller would catch.

Covers: the exception hierarchy, how messages are shaped, and the line a warning names
(``user_stacklevel``). Does not cover: where the
errors are raised (the scheduler, config and store modules do that).

>>> issubclass(ConfigError, ValueError) and issubclass(ConfigError, LazyGraphError)
True
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = [
    "LazyGraphError",
    "ConfigError",
    "NodeError",
    "CycleError",
    "CacheSecurityError",
    "IteratorResultError",
    "iterator_result",
    "user_stacklevel",
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

    def __init__(
        self,
        cycle: Sequence[str],
        nodes: Sequence[object] = (),
        *,
        reason: str = "an Input was set to a node that depends on it",
    ) -> None:
        self.cycle = list(cycle)
        self.nodes = list(nodes)
        self.reason = reason
        super().__init__("cycle in the graph: " + " -> ".join(self.cycle) + "; " + reason)

    def __reduce__(self) -> Any:
        return _cycle, (self.cycle, self.reason)


def _cycle(cycle: list[str], reason: str) -> CycleError:
    return CycleError(cycle, reason=reason)


class IteratorResultError(LazyGraphError, TypeError):
    """A node returned a generator or iterator, which a cache would hand back exhausted."""


def iterator_result(value: object) -> IteratorResultError | None:
    """The error for a node result that is an iterator (a generator, ``map``...), else None.

    Called on each result whose type is not a known fast one, so it is one type lookup.

    >>> iterator_result([1, 2]) is None, type(iterator_result(iter([1, 2]))).__name__
    (True, 'IteratorResultError')
    """
    if not hasattr(type(value), "__next__"):
        return None
    return IteratorResultError(
        f"the node returned a {type(value).__name__}, an iterator: cached, it would come "
        "back exhausted on the next pull; return a list instead (list(...))"
    )


class NodeError(LazyGraphError, RuntimeError):
    """A node's function raised; the original exception is ``__cause__``.

    The error raised is also an instance of the original exception's type wherever that
    type can be subclassed (a class made once per type), so ``except ValueError:`` around a
    ``compute()`` catches a node's ``ValueError``. ``node`` is the name of the failing node,
    ``path`` the names from the pulled node down to it, ``key`` the failing node's key (hex)
    when known. The message stays a few lines long however deep the graph, or the nesting of
    ``compute()`` calls inside node functions.

    >>> err = NodeError("parse", ["report", "clean", "parse"], ValueError("bad row"))
    >>> print(err)
    node 'parse' failed with ValueError: bad row
      path: report -> clean -> parse
    >>> isinstance(err, ValueError), isinstance(err, LazyGraphError)
    (True, True)
    """

    _original_type: type[BaseException] | None = None  # set on the classes made per type

    def __new__(
        cls,
        node: str,
        path: Sequence[str],
        exc: BaseException,
        *,
        key: str | None = None,
        detail: str | None = None,
    ) -> NodeError:
        if cls is NodeError:
            cls = typed_node_error(type(exc))
        # The original type's constructor makes the instance: its C layout (OSError's) may
        # differ from RuntimeError's, and each type's __new__ accepts only its own layout.
        maker = cls._original_type or RuntimeError
        return maker.__new__(cls)

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
        self.detail = detail
        inner = exc if isinstance(exc, NodeError) else None
        # A failure inside a compute() called by the node's function: name the innermost
        # failing node once instead of repeating every level of nesting.
        self.failed: str = inner.failed if inner is not None else node
        self.reason: str = _clip(detail or (
            inner.reason if inner is not None else f"{type(exc).__name__}: {exc}"
        ), 400)
        message = f"node {node!r} failed with {self.reason}"
        if inner is not None:
            message += f"\n  in a compute() inside it, where node {self.failed!r} failed"
        if len(self.path) > 1:
            message += "\n  path: " + _short_path(self.path)
        BaseException.__init__(self, message)  # not the original type's __init__

    def __str__(self) -> str:
        # The message as given, not the original type's rendering (KeyError quotes it).
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> Any:
        # The class is made at run time: pickle by constructor call, which makes it again.
        return (
            _rebuild,
            (self.node, self.path, self.original, self.key, self.detail),
            None,
        )


def _rebuild(
    node: str, path: list[str], exc: BaseException, key: str | None, detail: str | None
) -> NodeError:
    return NodeError(node, path, exc, key=key, detail=detail)


# Original exception type -> its NodeError class. Never emptied: exception classes are few
# and long-lived, and a made class holds its base alive anyway.
_TYPED: dict[type, type[NodeError]] = {}
_TYPED_LOCK = threading.Lock()


def typed_node_error(original: type[BaseException]) -> type[NodeError]:
    """The NodeError class that is also ``original`` (NodeError itself if none can be made).

    >>> issubclass(typed_node_error(KeyError), KeyError)
    True
    >>> typed_node_error(KeyError) is typed_node_error(KeyError)
    True
    """
    base = getattr(original, "_original_type", None) or original  # a nested NodeError's
    made = _TYPED.get(base)
    if made is not None:
        return made
    with _TYPED_LOCK:
        made = _TYPED.get(base)
        if made is None:
            made = _TYPED[base] = _make_typed(base)
    return made


def _make_typed(base: type[BaseException]) -> type[NodeError]:
    if base is NodeError or not issubclass(base, Exception) or issubclass(base, NodeError):
        return NodeError
    try:
        made: type[NodeError] = type(
            "NodeError",
            (NodeError, base),
            {"__module__": __name__, "__qualname__": "NodeError", "_original_type": base},
        )
    except Exception:  # noqa: BLE001 - layout or metaclass conflicts, a final type: plain
        return NodeError
    return made


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_path(path: list[str]) -> str:
    """The path's names; a long one shows its ends and how many nodes lie between."""
    if len(path) <= 8:
        return " -> ".join(path)
    return (
        " -> ".join(path[:3])
        + f" -> … ({len(path) - 6} more) … -> "
        + " -> ".join(path[-3:])
    )


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` of a warning raised by lazygraph that names the user's line (the cell or
    script line that called ``compute()``), however deep in lazygraph it is raised.

    Python's default filter shows a warning once per (text, line): pointed at a line inside
    lazygraph, the same warning for a second node would never show again in that process.
    """
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
