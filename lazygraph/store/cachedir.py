"""What the ``lazygraph cache`` command reports about a cache directory, and where it is.

Covers: the default location (``$LAZYGRAPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/lazygraph``,
else ``~/.cache/lazygraph``), the pure functions behind ``cache info|ls|clear`` and
plain-text formatting for them (the CLI prints; nothing here does). Any file may be in a
cache directory: only entry files (``<even number of hex digits>.joblib``) are listed or
removed; other files are counted and left alone, entries that do not authenticate (or cannot
be read) are listed as such and removed by ``clear``.

Does not cover: the directory checks (``dirtrust``: a directory another user could change
is refused, with the fix) or the entry format and authentication (``files``).

>>> import tempfile
>>> cache_info(Path(tempfile.mkdtemp()))["entries"]
0
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..units import format_bytes
from .entryindex import entry_key
from .files import EntryInfo, FileTier
from .secret import load_secret

__all__ = [
    "ENV_CACHE_DIR",
    "default_cache_dir",
    "cache_info",
    "cache_ls",
    "cache_clear",
    "parse_age",
    "format_age",
    "format_info",
    "format_ls",
]

ENV_CACHE_DIR = "LAZYGRAPH_CACHE_DIR"
_AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def default_cache_dir() -> Path:
    """The cache directory the CLI uses without ``--dir``.

    >>> default_cache_dir().name
    'lazygraph'
    """
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache_home).expanduser() / "lazygraph"


def cache_ls(directory: str | os.PathLike[str], *, secret: bytes | None = None) -> list[EntryInfo]:
    """Every entry of a cache directory, most recently used first (empty when it is absent).

    Entries that fail authentication are listed too, with ``meta`` None (``valid`` False).

    >>> import tempfile
    >>> cache_ls(Path(tempfile.mkdtemp()) / "nothing-here")
    []
    """
    tier = _open(directory, secret)
    if tier is None:
        return []
    try:
        return sorted(tier.entries(), key=lambda info: info.last_used, reverse=True)
    finally:
        tier.close()


def cache_info(
    directory: str | os.PathLike[str], *, secret: bytes | None = None, largest: int = 10
) -> dict[str, Any]:
    """Size, entry count and the largest entries of a cache directory.

    Keys: ``directory``, ``exists``, ``entries``, ``bytes``, ``invalid`` (entries that fail
    authentication or cannot be read), ``oldest`` (creation time, epoch seconds, or None),
    ``largest`` (a list of EntryInfo, biggest first), ``others`` (files that are not entries,
    left alone).

    >>> import tempfile
    >>> info = cache_info(Path(tempfile.mkdtemp()) / "absent")
    >>> info["exists"], info["entries"], info["bytes"]
    (False, 0, 0)
    """
    if isinstance(largest, bool) or not isinstance(largest, int):
        raise TypeError(f"largest must be an int (got {type(largest).__name__})")
    if largest < 0:
        raise ValueError(f"largest must be >= 0 (got {largest})")
    entries = cache_ls(directory, secret=secret)
    created = [info.created for info in entries]
    path = Path(directory).expanduser()
    return {
        "directory": str(path),
        "exists": os.path.isdir(path),
        "entries": len(entries),
        "bytes": sum(info.nbytes for info in entries),
        "invalid": sum(not info.valid for info in entries),
        "oldest": min(created) if created else None,
        "largest": sorted(entries, key=lambda info: info.nbytes, reverse=True)[:largest],
        "others": _other_files(path),
    }


def cache_clear(
    directory: str | os.PathLike[str],
    *,
    older_than: float | None = None,
    function: str | None = None,
    secret: bytes | None = None,
) -> int:
    """Remove entries; returns how many. With no filter, removes every entry.

    ``older_than`` (seconds) keeps entries used more recently than that (like ccache's
    ``--evict-older-than``); ``function`` keeps entries whose function name does not match
    (a name or a glob like ``"load_*"``; entries failing authentication have no name and
    never match it).

    >>> import tempfile
    >>> cache_clear(Path(tempfile.mkdtemp()) / "absent", older_than=60.0)
    0
    """
    if older_than is not None:
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
            raise TypeError(
                f"older_than must be seconds as a number (got {type(older_than).__name__}); "
                'use parse_age("7d") for text'
            )
        if not older_than >= 0:
            raise ValueError(f"older_than must be >= 0 seconds (got {older_than})")
    if function is not None and not isinstance(function, str):
        raise TypeError(f"function must be a name or glob str (got {type(function).__name__})")
    tier = _open(directory, secret)
    if tier is None:
        return 0
    now = time.time()
    removed = 0
    try:
        for info in tier.entries():
            if older_than is not None and now - info.last_used < older_than:
                continue
            if function is not None and not fnmatch.fnmatchcase(info.function or "", function):
                continue
            key = bytes.fromhex(info.key)  # an entry's name: an even number of hex digits
            tier.discard(key)
            removed += key not in tier  # not counted when it could not be removed (logged)
    finally:
        tier.close()
    return removed


def parse_age(text: str) -> float:
    """Seconds in an age like ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or ``"30"``.

    >>> parse_age("7d"), parse_age("1.5h"), parse_age("30")
    (604800.0, 5400.0, 30.0)
    """
    if not isinstance(text, str):
        raise TypeError(f'an age must be text like "7d" (got {type(text).__name__})')
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise ConfigError(f'an age must look like "30s", "15m", "12h", "7d" or "2w" (got {text!r})')
    return float(match.group(1)) * _AGE_UNITS.get(match.group(2) or "s", 1.0)


def format_age(seconds: float) -> str:
    """A duration for people, one unit.

    >>> format_age(42), format_age(7200), format_age(3 * 86400)
    ('42s', '2.0h', '3.0d')
    """
    for unit, span in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{max(seconds, 0.0):.0f}s"


def format_ls(entries: list[EntryInfo], *, now: float | None = None) -> str:
    """The table ``lazygraph cache ls`` prints: key, size, age, last use, function.

    >>> format_ls([]).splitlines()[0].split()
    ['KEY', 'SIZE', 'AGE', 'USED', 'FUNCTION']
    """
    now = time.time() if now is None else now
    lines = [f"{'KEY':<16} {'SIZE':>10} {'AGE':>7} {'USED':>7}  FUNCTION"]
    for info in entries:
        name = info.function if info.valid else "(unauthenticated: will be recomputed)"
        lines.append(
            f"{info.key[:16]:<16} {format_bytes(info.nbytes):>10} "
            f"{format_age(now - info.created):>7} {format_age(now - info.last_used):>7}  {name}"
        )
    return "\n".join(lines)


def format_info(info: dict[str, Any], *, now: float | None = None) -> str:
    """The text ``lazygraph cache info`` prints for a ``cache_info`` result.

    >>> print(format_info({"directory": "/c", "exists": False, "entries": 0, "bytes": 0}))
    /c: no cache here yet
    """
    if not info["exists"]:
        return f"{info['directory']}: no cache here yet"
    text = f"{info['directory']}: {info['entries']} entries, {format_bytes(info['bytes'])}"
    if info.get("invalid"):
        text += f" ({info['invalid']} failing authentication, removed on next use)"
    largest = info.get("largest") or []
    if largest:
        text += "\nlargest:\n" + format_ls(list(largest), now=now)
    others = info.get("others") or 0
    if others:
        text += f"\nalso {others} {'file' if others == 1 else 'files'} that are not entries "
        text += "(left alone)"
    return text


def _open(directory: str | os.PathLike[str], secret: bytes | None) -> FileTier | None:
    path = Path(directory).expanduser()
    if not os.path.lexists(path):
        return None
    if secret is None:
        # Without a secret file no entry can authenticate; a random key says so honestly
        # and avoids creating a secret just to list a directory.
        secret = load_secret() or os.urandom(32)
    return FileTier(path, secret=secret)


def _other_files(directory: Path) -> int:
    """Files in ``directory`` that are neither entries nor temp files (never touched)."""
    try:
        with os.scandir(directory) as listing:
            return sum(
                1
                for item in listing
                if entry_key(item.name) is None
                and not item.name.startswith(".lgtmp-")
                and not item.is_dir(follow_symlinks=False)
            )
    except OSError:
        return 0
