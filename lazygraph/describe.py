"""One-line summaries of values for reports: what a result is, at a glance, and its size.

Covers: :func:`summarize` (``float32[10000, 3] 117 KiB``, ``DataFrame 5 rows × 2 cols (...)``,
``Tensor float32[3] on cuda:0``, ``list of 3 items``). numpy, pandas and torch values are
described by their handler modules (``lazygraph.handlers``); builtins and look-alikes with a
``shape`` and a ``dtype`` (cupy, xarray, jax) here. Does not cover: rendering reports (the
views: ``inspection``, ``explain``) or measuring sizes (``sizing``).

>>> summarize({"a": 1}, nbytes=232)
'dict of 1 key 232 B'
"""

from __future__ import annotations

import logging
from typing import Any

from .handlers import registry
from .sizing import sizeof
from .units import format_bytes

__all__ = ["summarize"]

log = logging.getLogger(__name__)


def summarize(value: Any, nbytes: int | None = None) -> str:
    """A one-line description of ``value``: shape, dtype, device, rows and columns, size.

    ``nbytes`` is the size to show (the store's estimate); measured when not given. Never
    raises: a value that cannot be described is shown by its type name.

    >>> import numpy as np
    >>> summarize(np.zeros((10_000, 3), dtype="float32"))
    'float32[10000, 3] 117 KiB'
    >>> summarize([1, 2, 3], nbytes=80)
    'list of 3 items 80 B'
    """
    try:
        size = format_bytes(sizeof(value) if nbytes is None else nbytes)
        return f"{_describe(value)} {size}"
    except Exception as exc:  # a display must not fail on an odd object; say what it is
        log.debug("summarizing a %s failed: %r", type(value).__name__, exc)
        return type(value).__name__


def _describe(value: Any) -> str:
    """The summary without its size."""
    handler = registry.handler_for(type(value))
    if handler is not None and handler.describe is not None:
        return handler.describe(value)
    kind = type(value).__name__
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, complex)):
        return f"{kind} {value!r:.40}"
    if isinstance(value, str):
        return f"str of {len(value):,} chars"
    if isinstance(value, (bytes, bytearray)):
        return kind
    if isinstance(value, dict):
        return f"{kind} of {_plural(len(value), 'key')}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{kind} of {_plural(len(value), 'item')}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:  # cupy, xarray, jax, ... by duck type
        return f"{kind} {dtype}[{', '.join(map(str, shape))}]"
    return kind


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"
