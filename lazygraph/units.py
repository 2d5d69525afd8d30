"""Sizes in bytes: parsing what users write ("2GB", "512MiB", "10%") and formatting for humans.

Covers: the one parser of size options and the one byte formatter every view uses. Does not
cover: which options are sizes or their defaults (``config``).

>>> parse_size("1.5 GB", name="memory_limit"), format_bytes(1536)
(1500000000, '1.5 KiB')
"""

from __future__ import annotations

import math
import numbers
import re

from .errors import ConfigError

__all__ = ["format_bytes", "parse_size", "shown"]

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40, "pi": 2**50, "pib": 2**50,
}  # fmt: skip
_SIZE_RE = re.compile(r"([+-]?\s*(?:\d+\.?\d*|\.\d+))(e[+-]?\d+)?\s*([a-z]*)", re.IGNORECASE)
_SIZE_HINT = (
    'use an int of bytes or a string such as "512MiB" or "1.5 GB" '
    "(units B, KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB powers of 1024)"
)


def shown(value: object) -> str:
    """How a received value appears in an error message: strings quoted, others typed."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (int, float)):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def _size_error(
    name: str, value: object, *, percent: bool = False, negative: bool = False
) -> ConfigError:
    hint = _SIZE_HINT + (', or a percentage such as "10%"' if percent else "")
    what = "a non-negative size" if negative else "a size"
    return ConfigError(f'{name} must be {what} like "2GB" (got {shown(value)}); {hint}')


def _fraction_error(name: str, value: object, *, percent: bool) -> ConfigError:
    share = '"50%" for a share of memory, or ' if percent else ""
    return ConfigError(
        f"{name} is a number of bytes, so {shown(value)} would be less than one byte; "
        f'give a size such as {share}"512MB"'
    )


def parse_size(value: object, *, name: str, total: int | None = None) -> int:
    """Return ``value`` as a number of bytes; raise :class:`ConfigError` if it is not a size.

    Accepts non-negative ints and finite floats (bytes, rounded down) and strings made of a
    number and an optional unit, case-insensitive: ``B``, ``KB``/``K``, ``MB``/``M``, ``GB``/``G``,
    ``TB``/``T``, ``PB`` (powers of 1000) and ``KiB``/``Ki`` ... ``PiB`` (powers of 1024).
    ``"1e9"`` is accepted, as Python accepts ``1e9``.  With ``total`` given, ``"10%"`` means
    10% of ``total``.  A size is a byte count: a number between 0 and 1 (``0.5``, ``"0.5"``),
    most likely meant as a fraction of memory, is refused rather than rounded down to 0 (say
    ``"50%"``).  Every bad value, wrong types included, raises ``ConfigError`` (a
    ``ValueError``), so one ``except`` catches any bad configuration.

    >>> parse_size("2GB", name="memory_limit"), parse_size("512 mib", name="memory_limit")
    (2000000000, 536870912)
    >>> parse_size("10%", name="min_available", total=2000)
    200
    >>> parse_size("2XB", name="memory_limit")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    lazygraph.errors.ConfigError: memory_limit must be a size like "2GB" (got "2XB"); use ...
    """
    if isinstance(value, bool):
        raise _size_error(name, value, percent=total is not None)
    if isinstance(value, numbers.Integral):
        number: float = int(value)
    elif isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        number = _parse_size_text(value, name=name, total=total)
    else:
        raise _size_error(name, value, percent=total is not None)
    if not math.isfinite(number) or number < 0:
        raise _size_error(name, value, percent=total is not None, negative=number < 0)
    if 0 < number < 1:
        raise _fraction_error(name, value, percent=total is not None)
    return int(number)


def _parse_size_text(text: str, *, name: str, total: int | None) -> float:
    stripped = text.strip()
    if stripped.endswith("%") and total is not None:
        try:
            percent = float(stripped[:-1])
        except ValueError:
            raise _size_error(name, text, percent=True) from None
        if not 0 <= percent <= 100:
            raise ConfigError(f'{name} must be a percentage from 0% to 100% (got "{text}")')
        return total * percent / 100
    match = _SIZE_RE.fullmatch(stripped)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise _size_error(name, text, percent=total is not None)
    return float(match.group(1).replace(" ", "") + (match.group(2) or "")) * unit



def format_bytes(nbytes: float) -> str:
    """A byte count in powers of 1024 with about three significant digits.

    >>> format_bytes(512), format_bytes(120_000), format_bytes(1536), format_bytes(2.04e9)
    ('512 B', '117 KiB', '1.5 KiB', '1.9 GiB')
    """
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.0f} {unit}" if abs(size) >= 99.95 else f"{size:.1f} {unit}"
