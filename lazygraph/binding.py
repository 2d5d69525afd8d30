"""Binding a call to its function's signature, once, when the Node is built (SPEC S1.10).

Covers: :func:`bind_arguments`, which turns a function into a ``bind(args, kwargs)`` that
returns the call in one canonical form (every positional-or-keyword parameter given by
position, defaults filled in, keyword-only ones by name), so ``f(1)``, ``f(a=1)`` and
``f(1, b=<its default>)`` build equal Nodes and share one key; a call that does not fit the
signature raises the ``TypeError`` there. Also where ``@node(ignore=[...])`` names sit in a
bound call. Imports nothing of lazygraph. Does not cover: keys (``keys`` leaves the ignored
arguments out) or finding Nodes in arguments (``arguments``).

The common call (all parameters given by position, or trailing defaults left out) costs a
length check and at most one tuple concatenation; other calls go through
``inspect.Signature.bind``.

>>> def f(a, b=2, *, c=3):
...     return a + b + c
>>> bind, arity, ignored = bind_arguments(f, ("c",))
>>> bind((1,), {}) == bind((), {"a": 1}) == bind((1, 2), {"c": 3}) == ((1, 2), {"c": 3})
True
>>> ignored
(frozenset(), frozenset({'c'}))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["bind_arguments"]

Bind = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]
Ignored = tuple[frozenset[int], frozenset[str]]

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)


def bind_arguments(
    func: Callable[..., Any], ignore: tuple[str, ...]
) -> tuple[Bind | None, int, Ignored | None]:
    """``(bind, arity, ignored)`` for ``func``.

    ``bind`` is None when calls need no binding (a builtin without a signature, or
    ``f(*args)``); a call of exactly ``arity`` positional arguments and no keywords is
    already bound (-1: none is); ``ignored`` is None when nothing is ignored.

    Raises ``TypeError`` when ``ignore`` names something that is not a parameter.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: bound as called
        if ignore:
            raise TypeError(f"ignore={list(ignore)!r}: {func!r} has no signature") from None
        return None, -1, None
    params = list(sig.parameters.values())
    name = getattr(func, "__qualname__", None) or repr(func)
    unknown = [item for item in ignore if item not in sig.parameters]
    if unknown:
        raise TypeError(
            f"ignore names {unknown} that are not parameters of {name}() "
            f"(its parameters: {list(sig.parameters)})"
        )
    positional = [p.name for p in params if p.kind in _POSITIONAL]
    ignored = None
    if ignore:
        at = frozenset(positional.index(item) for item in ignore if item in positional)
        ignored = (at, frozenset(item for item in ignore if item not in positional))
    if [p.kind for p in params] == [_P.VAR_POSITIONAL]:
        return None, -1, ignored  # f(*args): every call is already canonical
    if len(positional) < len(params):  # *args, keyword-only or **kwargs: the general way
        return _general(sig, name), -1, ignored
    return _simple(sig, name, params), len(params), ignored


def _simple(sig: inspect.Signature, name: str, params: list[inspect.Parameter]) -> Bind:
    """Only positional parameters: the common calls without ``Signature.bind``."""
    count = len(params)
    defaults = tuple(p.default for p in params if p.default is not _P.empty)
    required = count - len(defaults)
    general = _general(sig, name)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict]:
        given = len(args)
        if not kwargs and required <= given <= count:
            if given == count:
                return args, kwargs
            return args + defaults[given - required :], kwargs
        return general(args, kwargs)

    return bind


def _general(sig: inspect.Signature, name: str) -> Bind:
    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict]:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:  # as the call itself would fail, but now, at build time
            raise TypeError(f"{name}() {exc}") from None
        bound.apply_defaults()
        return bound.args, bound.kwargs

    return bind
