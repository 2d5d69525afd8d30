"""Cache directories: the safety checks, and what the ``lazygraph cache`` command reports.

Covers: the default location (``$LAZYGRAPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/lazygraph``,
else ``~/.cache/lazygraph``); creating a directory private to the user (0700, missing
parents too); refusing one that another user owns or that group/others may write to, with
the ``chmod``/``chown`` that fixes it; and the pure functions behind ``cache info|ls|clear``
plus plain-text formatting for them (the CLI prints; nothing here does).

Does not cover: the entry format or authentication (``files.py``). Parent directories are
not checked: an attacker who could swap a parent still cannot forge an entry, because every
entry is authenticated with the per-user secret before it is unpickled.

>>> import tempfile
>>> private = ensure_private_dir(Path(tempfile.mkdtemp()) / "a" / "b")
>>> oct(private.stat().st_mode & 0o777), oct(private.parent.stat().st_mode & 0o777)
('0o700', '0o700')
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CacheSecurityError, ConfigError

if TYPE_CHECKING:
    from .files import EntryInfo, FileTier

__all__ = [
    "ENV_CACHE_DIR",
    "default_cache_dir",
    "ensure_private_dir",
    "check_private_dir",
    "check_private_stat",
    "cache_info",
    "cache_ls",
    "cache_clear",
    "parse_age",
    "format_bytes",
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


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, then check it is safe to use.

    Raises ConfigError when ``path`` is a file or not writable, CacheSecurityError when it
    belongs to someone else or others may write to it.

    >>> import tempfile
    >>> ensure_private_dir(Path(tempfile.mkdtemp()) / "cache").is_dir()
    True
    """
    directory = Path(os.path.abspath(Path(path).expanduser()))
    missing = []
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            os.mkdir(candidate, 0o700)
        except FileExistsError:
            continue  # another process made it first; the check below still applies
        except OSError as exc:
            raise ConfigError(
                f"cache_dir {directory} could not be created ({exc.strerror}: {candidate}); "
                "pass a directory you can write to"
            ) from exc
        os.chmod(candidate, 0o700)  # a umask cannot widen the mode, but may narrow it
    check_private_dir(directory)
    return directory


def check_private_dir(path: str | os.PathLike[str], *, writable: bool = True) -> None:
    """Raise unless ``path`` is a directory of this user that group and others cannot write.

    >>> import tempfile
    >>> check_private_dir(tempfile.mkdtemp()) is None
    True
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"cache_dir {path} does not exist") from exc
    check_private_stat(path, st)
    if writable and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cache_dir {path} is not writable (read-only filesystem or missing permission); "
            "pass a directory you can write to"
        )


def check_private_stat(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """The checks of ``check_private_dir`` on a stat result (e.g. ``os.fstat`` of an open dir).

    >>> check_private_stat("/tmp", os.stat("/tmp"))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    lazygraph.errors.CacheSecurityError: cache directory /tmp is writable by others...
    """
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cache_dir {path} must be a directory (got a file or other object)")
    me = os.geteuid()
    if st.st_uid != me:
        raise CacheSecurityError(
            f"cache directory {path} is owned by {_user(st.st_uid)}, not by you "
            f"({_user(me)}): entries in it could have been planted by its owner. Use a "
            f"directory of your own, or if it is yours: chown {_user(me)} {path}"
        )
    if st.st_mode & 0o022:
        who = (
            "group and others"
            if st.st_mode & 0o022 == 0o022
            else ("its group" if st.st_mode & 0o020 else "others")
        )
        raise CacheSecurityError(
            f"cache directory {path} is writable by {who} (mode {oct(st.st_mode & 0o777)}), "
            f"so they could plant or replace entries; expected 0o700. Fix with: chmod 700 {path}"
        )


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
    authentication), ``oldest`` (creation time, epoch seconds, or None), ``largest`` (a list
    of EntryInfo, biggest first).

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
    return {
        "directory": str(Path(directory).expanduser()),
        "exists": os.path.isdir(Path(directory).expanduser()),
        "entries": len(entries),
        "bytes": sum(info.nbytes for info in entries),
        "invalid": sum(not info.valid for info in entries),
        "oldest": min(created) if created else None,
        "largest": sorted(entries, key=lambda info: info.nbytes, reverse=True)[:largest],
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
            tier.discard(bytes.fromhex(info.key))
            removed += 1
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


def format_bytes(nbytes: int) -> str:
    """A byte count for people.

    >>> format_bytes(512), format_bytes(3 * 1024**3 // 2)
    ('512 B', '1.5 GiB')
    """
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


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
    return text


def _open(directory: str | os.PathLike[str], secret: bytes | None) -> FileTier | None:
    from .files import FileTier
    from .secret import load_secret

    path = Path(directory).expanduser()
    if not os.path.lexists(path):
        return None
    if secret is None:
        # Without a secret file no entry can authenticate; a random key says so honestly
        # and avoids creating a secret just to list a directory.
        secret = load_secret() or os.urandom(32)
    return FileTier(path, secret=secret)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
