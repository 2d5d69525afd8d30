"""What lazygraph knows about pandas values: hash, size, freeze, describe and ship them.

Imported by ``handlers.registry`` the first time a pandas type is seen. Covers DataFrame,
Series, Index (MultiIndex, RangeIndex), extension arrays and their dtypes. Columns that are
numpy arrays go through ``handlers.numpy``. Does not cover: other pandas objects
(Timestamp, Period, offsets...: pickled and sized as plain objects).

Hashing: values column by column (numeric columns as buffers, strings joined per block of
4096 and hashed as UTF-8), index (with its ``freq``), columns, dtypes, names, ``attrs``
and ``flags``. Block layout does not
matter. Strings in object columns are hashed by their text: a ``str`` subclass element
hashes like a plain ``str``. Values under a missing-value mask are ignored.

Sizing: per block (or column) buffers named by address, so a DataFrame built on an array
without a copy shares the array's buffer; the index and columns too.

>>> import pandas as pd
>>> _describe(pd.DataFrame({"a": [1, 2]}))
'DataFrame 2 rows × 1 cols (a: int64)'
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pandas as pd

from .base import HashWalk, SizeWalk, TypeHandler, header, text, type_token
from .numpy import dtype_token, hash_array_data

__all__ = ["HANDLERS"]

# The objects around the buffers, counted for values inside containers only (see
# handlers.numpy's _ARRAY_OBJECT): the DataFrame with its manager and blocks, a Series, an Index.
_FRAME_OBJECT, _SERIES_OBJECT, _INDEX_OBJECT = 500, 300, 200


# -- hash ---------------------------------------------------------------------------------


def _dtype_token(dtype: Any) -> bytes:
    if isinstance(dtype, np.dtype):
        return dtype_token(dtype)
    return text(f"{type(dtype).__qualname__}|{dtype}|{getattr(dtype, 'storage', '')}")


def _hash_dtype(walk: HashWalk, h: Any, dtype: Any) -> None:
    h.update(b"X" + _dtype_token(dtype))
    categories = getattr(dtype, "categories", None)
    if categories is not None:
        _hash_index(walk, h, categories)
        walk.feed(h, dtype.ordered)


def _hash_frame(walk: HashWalk, h: Any, df: Any) -> None:
    h.update(b"R" + type_token(df) + header(b"n", df.shape[1]))
    _hash_index(walk, h, df.columns)
    _hash_index(walk, h, df.index)
    for _, column in df.items():
        _hash_values(walk, h, column.array)
    walk.feed(h, df.attrs)
    h.update(b"T" if df.flags.allows_duplicate_labels else b"F")


def _hash_series(walk: HashWalk, h: Any, ser: Any) -> None:
    h.update(b"Q" + type_token(ser))
    walk.feed(h, ser.name)
    _hash_index(walk, h, ser.index)
    _hash_values(walk, h, ser.array)
    walk.feed(h, ser.attrs)
    h.update(b"T" if ser.flags.allows_duplicate_labels else b"F")


def _hash_index(walk: HashWalk, h: Any, idx: Any) -> None:
    h.update(b"x" + type_token(idx) + header(b"n", len(idx)))
    walk.feed(h, list(idx.names))
    if isinstance(idx, pd.RangeIndex):
        h.update(struct.pack("<qqq", idx.start, idx.stop, idx.step))
    elif isinstance(idx, pd.MultiIndex):
        for level, codes in zip(idx.levels, idx.codes, strict=True):
            _hash_index(walk, h, level)
            hash_array_data(walk, h, codes)
    else:
        _hash_values(walk, h, idx.array)
    freq = getattr(idx, "freq", None)  # DatetimeIndex/TimedeltaIndex: index.freq is observable
    if freq is not None and not isinstance(idx, pd.PeriodIndex):  # a period dtype holds it
        h.update(b"f" + text(freq.freqstr))


def _hash_extension_array(walk: HashWalk, h: Any, arr: Any) -> None:
    h.update(b"W" + type_token(arr))
    _hash_values(walk, h, arr)


def _hash_values(walk: HashWalk, h: Any, arr: Any) -> None:
    """Hash a column's values (an ExtensionArray or ndarray) with its dtype, without a copy."""
    _hash_dtype(walk, h, arr.dtype)
    h.update(header(b"n", len(arr)))
    if isinstance(arr, np.ndarray):
        hash_array_data(walk, h, arr)
    elif isinstance(arr, pd.Categorical):
        hash_array_data(walk, h, arr.codes)
    elif isinstance(getattr(arr, "_ndarray", None), np.ndarray):
        # numpy-backed arrays (numbers, python strings, datetimes, periods): the values
        # are the ndarray, the dtype token above carries the unit, timezone or frequency.
        hash_array_data(walk, h, arr._ndarray)
    elif isinstance(getattr(arr, "_mask", None), np.ndarray):
        _hash_masked(walk, h, arr._data, arr._mask)
    else:  # arrow-backed, sparse, interval...: their Python values, slower but exact
        hash_array_data(walk, h, np.asarray(arr, dtype=object))


def _hash_masked(walk: HashWalk, h: Any, data: Any, mask: Any) -> None:
    # Values under the mask are arbitrary: zero them (in a copy, only when there are any).
    if mask.any():
        data = data.copy()
        data[mask] = 0
    hash_array_data(walk, h, mask)
    hash_array_data(walk, h, data)


# -- size -------------------------------------------------------------------------------------


def _size_frame(walk: SizeWalk, df: Any, depth: int) -> None:
    walk.private += _FRAME_OBJECT if depth else 0
    try:
        arrays = [block.values for block in df._mgr.blocks]
    except AttributeError:  # a pandas without block managers: go column by column
        arrays = [column.array for _, column in df.items()]
    for values in arrays:
        _size_array_like(walk, values, depth + 1)
    walk.visit(df.index, depth + 1)
    walk.visit(df.columns, depth + 1)


def _size_series(walk: SizeWalk, series: Any, depth: int) -> None:
    walk.private += _SERIES_OBJECT if depth else 0
    values = getattr(series, "_values", None)
    _size_array_like(walk, series.array if values is None else values, depth + 1)
    walk.visit(series.index, depth + 1)


def _size_index(walk: SizeWalk, index: Any, depth: int) -> None:
    walk.private += _INDEX_OBJECT
    if isinstance(index, pd.RangeIndex):
        return
    if isinstance(index, pd.MultiIndex):
        for level in index.levels:
            walk.visit(level, depth + 1)
        for codes in index.codes:
            walk.visit(codes, depth + 1)
        return
    _size_array_like(walk, index._values, depth + 1)


def _size_array_like(walk: SizeWalk, values: Any, depth: int) -> None:
    """A column's array: an ndarray, or a pandas extension array over ndarrays or arrow."""
    if isinstance(values, np.ndarray):
        walk.visit(values, depth)
        return
    walk.seen.add(id(values))
    walk.private += 64
    chunked = getattr(values, "_pa_array", None)
    if chunked is not None:
        for chunk in getattr(chunked, "chunks", [chunked]):
            for buffer in chunk.buffers():
                if buffer is not None:
                    walk.add_buffer(("cpu", buffer.address), int(buffer.size), "cpu")
        return
    inner = [getattr(values, name, None) for name in ("_ndarray", "_data", "_mask", "_codes")]
    arrays = [a for a in inner if isinstance(a, np.ndarray)]
    for array in arrays:
        walk.visit(array, depth)
    if hasattr(values, "categories"):
        walk.visit(values.categories, depth)
    if not arrays and not hasattr(values, "categories"):
        walk.private += int(values.nbytes)


# -- freeze, describe, ship -------------------------------------------------------------------


def _freeze(obj: Any) -> None:
    if isinstance(obj, pd.DataFrame):
        for block in obj._mgr.blocks:
            _freeze_array_like(block.values)
    else:
        _freeze_array_like(obj._values)
    if not isinstance(obj.index, pd.RangeIndex):
        _freeze_array_like(getattr(obj.index, "_values", None))


def _freeze_array_like(values: Any) -> None:
    if isinstance(values, np.ndarray):
        values.setflags(write=False)
        return
    for name in ("_ndarray", "_data", "_mask", "_codes"):
        inner = getattr(values, name, None)
        if isinstance(inner, np.ndarray):
            inner.setflags(write=False)


def _describe(value: Any) -> str:
    if isinstance(value, pd.DataFrame):
        rows, cols = value.shape
        if not cols:
            return f"DataFrame {rows:,} rows × 0 cols"
        described = [f"{name}: {dtype}" for name, dtype in value.dtypes.items()]
        return f"DataFrame {rows:,} rows × {cols} cols ({_fit(described, limit=48)})"
    named = f" {value.name!r:.30}" if value.name is not None else ""
    return f"{type(value).__name__}{named} {len(value):,} × {value.dtype}"


def _fit(items: list[str], *, limit: int) -> str:
    """Join ``items`` with commas, ending in "…" once the text would pass ``limit`` chars."""
    shown: list[str] = []
    length = 0
    for item in items:
        if shown and length + len(item) > limit:
            return ", ".join(shown) + ", …"
        shown.append(item)
        length += len(item) + 2
    return ", ".join(shown)


def _holds_buffers(value: Any) -> bool:
    return True


HANDLERS: dict[type, TypeHandler] = {
    pd.DataFrame: TypeHandler(
        hash=_hash_frame,
        size=_size_frame,
        freeze=_freeze,
        describe=_describe,
        holds_buffers=_holds_buffers,
    ),
    pd.Series: TypeHandler(
        hash=_hash_series,
        size=_size_series,
        freeze=_freeze,
        describe=_describe,
        holds_buffers=_holds_buffers,
    ),
    pd.Index: TypeHandler(
        hash=_hash_index, size=_size_index, describe=_describe, holds_buffers=_holds_buffers
    ),
    pd.api.extensions.ExtensionArray: TypeHandler(
        hash=_hash_extension_array, holds_buffers=_holds_buffers
    ),
    pd.api.extensions.ExtensionDtype: TypeHandler(hash=_hash_dtype, holds_buffers=_holds_buffers),
}
