"""The one registry of per-type knowledge about third-party libraries (numpy, pandas, torch,
scikit-learn).

Covers: :func:`handler_for` (the :class:`~lazygraph.handlers.base.TypeHandler` of a type,
looked up along its MRO), and the questions asked of a value through it: :func:`holds_buffers`
(ship it to a worker process as a file?) and :func:`device` (where its data lives). The
first time a type whose module is under ``numpy``, ``pandas``, ``torch`` or ``sklearn`` is
seen, that library's handler module is imported (``lazygraph.handlers.numpy`` ...): the
library itself is already loaded then, since one of its objects exists, and ``import
lazygraph`` imports none of them. Does not cover: builtins and containers (``hashing`` and
``sizing`` handle them) or walking values (the callers' walks, which hand themselves to
the handlers).

>>> handler_for(int) is None
True
>>> import numpy as np
>>> handler_for(np.ndarray).hash is not None, holds_buffers([np.zeros(3)])
(True, True)
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from .base import TypeHandler

__all__ = ["LIBRARIES", "device", "handler_for", "holds_buffers"]

#: Top-level modules that have a handler module here, imported on first sight of their types.
LIBRARIES = ("numpy", "pandas", "torch", "sklearn")

# Process-wide on purpose: what a library's types are does not change within a process.
_BY_BASE: dict[type, TypeHandler] = {}  # the types each handler module declares
_LOADED: set[str] = set()
_FOUND: dict[type, TypeHandler | None] = {}  # every type asked about: the answer, cached
_MAX_FOUND = 10_000  # a bound, whatever code defines classes on the fly
_SHIP_SAMPLE = 64  # container items looked at by holds_buffers


def handler_for(kind: type) -> TypeHandler | None:
    """The handler of ``kind`` or its nearest base that has one; None for other types.

    >>> import pandas as pd
    >>> handler_for(type(pd.DataFrame())) is handler_for(pd.DataFrame)
    True
    """
    try:
        return _FOUND[kind]
    except KeyError:
        pass
    found = None
    for cls in kind.__mro__:
        module = cls.__module__
        root = module.partition(".")[0] if isinstance(module, str) else ""
        if root in LIBRARIES and root not in _LOADED:
            _load(root)
        found = _BY_BASE.get(cls)
        if found is not None:
            break
    # Classes made in a function (a loop, a test) would pile up; module-level ones are few.
    if len(_FOUND) < _MAX_FOUND and "<locals>" not in kind.__qualname__:
        _FOUND[kind] = found
    return found


def _load(root: str) -> None:
    # A type claiming a module that is not imported (a pickled stub, a fake) loads nothing.
    if root not in sys.modules:
        return
    module = _import_handlers(root)
    # Two threads may both get here: the import lock lets one run the module, and updating
    # with the same entries twice is harmless. _LOADED is set last, so no thread skips the
    # load and then misses an entry.
    _BY_BASE.update(module.HANDLERS)
    _LOADED.add(root)


def _import_handlers(root: str) -> ModuleType:
    if root == "numpy":
        from . import numpy

        return numpy
    if root == "pandas":
        from . import pandas

        return pandas
    if root == "sklearn":
        from . import sklearn

        return sklearn
    from . import torch

    return torch


def holds_buffers(value: Any, *, depth: int = 2) -> bool:
    """Whether ``value`` is (or a list/tuple/dict within ``depth`` levels holds) buffer data:
    a numeric numpy array, a pandas object, a torch CPU tensor. Such values travel to and
    from worker processes as memory-mapped files; anything else is pickled. Never raises.

    >>> import numpy as np
    >>> holds_buffers(np.zeros(3)), holds_buffers(np.array([object()])), holds_buffers("x")
    (True, False, False)
    >>> holds_buffers({"a": [np.zeros(3)]}), holds_buffers([[[np.zeros(3)]]])
    (True, False)
    """
    kind = type(value)
    if depth and kind in (list, tuple):
        return any(holds_buffers(v, depth=depth - 1) for v in value[:_SHIP_SAMPLE])
    if depth and kind is dict:
        items = list(value.values())[:_SHIP_SAMPLE]
        return any(holds_buffers(v, depth=depth - 1) for v in items)
    handler = handler_for(kind)
    if handler is None or handler.holds_buffers is None:
        return False
    try:
        return handler.holds_buffers(value)
    except Exception:  # an odd object is simply not shipped as a file
        return False


def device(value: object) -> str | None:
    """Where ``value``'s data lives ("cpu", "cuda:0", "meta"), or None when unknown.

    Never raises; a tensor whose device cannot be read counts as unknown.

    >>> import torch
    >>> device(torch.zeros(2)), device([1])
    ('cpu', None)
    """
    handler = handler_for(type(value))
    if handler is None or handler.device is None:
        return None
    try:
        return handler.device(value)
    except Exception:  # any object may define .device; a broken one is on no known device
        return None
