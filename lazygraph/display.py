"""Where the lower layers find the views that render them: a registry of view functions.

Views (``inspection``, ``explain``) sit above everything they show, so nothing below them
imports them. A low-level object that can be shown (``Node.info()``, ``Stats.__str__``,
``Session.report()``) asks this registry for the function registered under a name; the view
modules register theirs when ``lazygraph`` is imported (``lazygraph/__init__.py`` imports
them), which every import of a submodule does first.

Covers: registering and finding view functions. Does not cover: rendering itself.

>>> register("shout", lambda text: text.upper())
>>> show("shout", "hi")
'HI'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import LazyGraphError

__all__ = ["register", "show", "view"]

# Process-wide on purpose: the views are modules, loaded once per process.
_VIEWS: dict[str, Callable[..., Any]] = {}


def register(name: str, func: Callable[..., Any]) -> None:
    """Make ``func`` the view called ``name`` (a later registration replaces it)."""
    _VIEWS[name] = func


def view(name: str) -> Callable[..., Any]:
    """The view function registered as ``name``; ``LazyGraphError`` if none is."""
    try:
        return _VIEWS[name]
    except KeyError:
        raise LazyGraphError(
            f"no view named {name!r} is registered (expected one of {sorted(_VIEWS)}); "
            "views register when the lazygraph package is imported"
        ) from None


def show(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the view ``name`` with the given arguments."""
    return view(name)(*args, **kwargs)
