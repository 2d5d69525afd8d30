"""The current session: the stack of ``with Session()`` blocks and the default session.

Lower layers (``Node.compute``) and the views find the session here without importing
``session`` (which sits above them). This module knows no Session class: ``session.py``
registers the class that makes the default session with ``set_session_factory`` when it is
imported, and everything here is duck-typed (a session has a ``closed`` attribute).

Covers: ``current_session``, ``push``/``pop`` (what ``with Session()`` does), the default
session (``replace_default`` is what ``configure`` does). Does not cover: sessions
themselves (``session``).

>>> class Fake:
...     closed = False
>>> outer, inner = Fake(), Fake()
>>> push(outer); push(inner)
>>> current_session() is inner
True
>>> pop(inner); current_session() is outer
True
>>> pop(outer)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "current_session",
    "default_session",
    "pop",
    "push",
    "replace_default",
    "set_session_factory",
]

# Process-wide on purpose: ``with Session()`` makes a session current for the whole process
# (worker threads of an executor see it too), as it always has.
_lock = threading.RLock()
_stack: list[Any] = []
_default: Any = None
_factory: Callable[[], Any] | None = None


def set_session_factory(factory: Callable[[], Any]) -> None:
    """Make ``factory()`` build the default session (``session.py`` passes ``Session``)."""
    global _factory
    _factory = factory


def push(session: Any) -> None:
    """Make ``session`` the current one (entering ``with session:``)."""
    with _lock:
        _stack.append(session)


def pop(session: Any) -> None:
    """Remove the innermost occurrence of ``session`` from the stack (leaving ``with``).

    Sessions may be left in another order than entered (threads): the innermost one goes.
    """
    with _lock:
        for i in range(len(_stack) - 1, -1, -1):
            if _stack[i] is session:
                del _stack[i]
                return


def current_session() -> Any:
    """The innermost ``with Session()``, else the default one (made on first use)."""
    global _default
    try:
        return _stack[-1]  # lock-free on the hot path; a concurrent pop falls through
    except IndexError:
        pass
    session = _default
    if session is not None and not session.closed:
        return session
    with _lock:
        if _stack:
            return _stack[-1]
        if _default is None or _default.closed:
            if _factory is None:
                raise RuntimeError(
                    "no session factory is registered (expected lazygraph.session to be "
                    "imported; import lazygraph first)"
                )
            _default = _factory()
        return _default


def replace_default(session: Any) -> Any:
    """Make ``session`` the default session; return the one it replaces (or None)."""
    global _default
    with _lock:
        old, _default = _default, session
    return old



def default_session() -> Any:
    """The default session if one was made (or configured), else None; makes none."""
    return _default
