"""Redefinitions (SPEC S3.9): nodes built before their function, or a helper they were keyed
with, was redefined say so.

Covers: the newest definition per node function name (``note_definition``: a notebook cell
run again with other code makes the old function *outdated*), the once-per-node warnings
(``warn_outdated`` for a replaced node function, ``note_redefined`` for a replaced helper or
global, both an ``OutdatedDefinitionWarning`` pointed at the user's line) and what
``explain()`` says (``redefined_note``). Does not cover: noticing that a helper changed or
re-keying (``keys.refresh_redefined``, with the fingerprint cache's checks).

Process-wide like the revision (``incremental``): functions belong to no session.

>>> import warnings
>>> issubclass(OutdatedDefinitionWarning, UserWarning)
True
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

from .errors import user_stacklevel
from .repull import attention

__all__ = [
    "OutdatedDefinitionWarning",
    "forget_redefined",
    "kept_old_result",
    "note_definition",
    "note_redefined",
    "outdated",
    "outdated_name",
    "redefined_note",
    "warn_outdated",
]


# Functions of @node factories that a newer definition of the same name replaced (a notebook
# cell run again with other code): id -> (weak reference, name). Process-wide like the
# revision (functions belong to no session); empty outside notebooks, so a pull pays one
# truth test.
outdated: dict[int, tuple[Any, str]] = {}
_definitions: dict[tuple[str, str, str], Any] = {}  # (module, qualname, name) -> weak ref
_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def note_definition(func: Any, name: str) -> None:
    """Record ``func`` as the newest definition of ``name``; the one it replaces, if its
    code differs, is *outdated* (nodes built from it warn when computed)."""
    qualname = getattr(func, "__qualname__", "")
    if "<locals>" in qualname:  # made by a call (a loop, a test): not a redefinition
        return
    ident = (getattr(func, "__module__", None) or "", qualname, name)
    try:
        ref = weakref.ref(func)
    except TypeError:
        return
    previous = _definitions.get(ident)
    _definitions[ident] = ref
    old = previous() if previous is not None else None
    if old is None or old is func:
        return
    if getattr(old, "__code__", None) == getattr(func, "__code__", None):
        return  # the same cell run again unchanged: its nodes compute what the new one would
    key = id(old)

    def drop(dead: Any) -> None:
        if outdated.get(key, (None,))[0] is dead:
            del outdated[key]
            if not outdated:
                attention.discard("outdated")

    outdated[key] = (weakref.ref(old, drop), name)
    attention.add("outdated")


def outdated_name(n: Any) -> str | None:
    """The name whose newer definition ``n``'s function was replaced by, else None."""
    found = outdated.get(id(n.func))
    if found is None or found[0]() is not n.func:
        return None
    return found[1]


def warn_outdated(nodes: Any) -> None:
    """Warn once per node built from a replaced definition (a notebook cell run again).

    Called by a pull with the nodes it looked at, only while ``outdated`` is not empty.
    """
    for n in nodes:
        name = outdated_name(n)
        if name is None or n in _warned:
            continue
        _warned.add(n)
        warnings.warn(
            f"{name}: this node was built from an older definition of `{name}`; rebuild "
            "the graph to use the new one (its result is the old code's)",
            OutdatedDefinitionWarning,
            stacklevel=user_stacklevel(),
        )


# Nodes keyed with a helper or global that was redefined since (found by keys before a pull
# plans): node -> (the names, what was done: "kept", "rekeyed" or "rebuilt").
_redefined: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def note_redefined(n: Any, names: tuple[str, ...], how: str) -> None:
    """Record that ``n`` was keyed with older definitions of ``names`` and ``how`` the pull
    dealt with it; warn once per node unless it was rebuilt on request."""
    _redefined[n] = (names, how)
    if how == "rebuilt" or n in _warned:
        return
    _warned.add(n)
    quoted = ", ".join(f"`{name}`" for name in names)
    if how == "kept":
        tail = "rebuild the graph to use the new one (its result is the old code's)"
    else:
        tail = ("no result of it was stored, so it ran with the current one under a new key; "
                "rebuild the graph to use the new definitions throughout")
    warnings.warn(
        f"{n.name}: this node was built from an older definition of {quoted}; {tail}",
        OutdatedDefinitionWarning,
        stacklevel=user_stacklevel(),
    )


def kept_old_result(n: Any) -> bool:
    """Whether ``n`` kept a result of replaced code (its verified result is no baseline)."""
    return bool(_redefined) and _redefined.get(n, ((), ""))[1] == "kept"


def forget_redefined(n: Any) -> None:
    """``n`` is being keyed afresh (an Input upstream was set): its key will be current."""
    _redefined.pop(n, None)


def redefined_note(n: Any) -> str | None:
    """What ``explain()`` says about a node keyed with since redefined helpers, else None."""
    found = _redefined.get(n)
    if found is None:
        return None
    names, how = found
    quoted = ", ".join(f"`{name}`" for name in names)
    if how == "kept":
        return f"built from an older definition of {quoted} (rebuild the graph)"
    if how == "rekeyed":
        return f"built from an older definition of {quoted}; ran with the current one"
    return f"rebuilt against the current definition of {quoted}"


class OutdatedDefinitionWarning(UserWarning):
    """A node built from a function that has since been redefined was computed."""
