"""Directories lazygraph trusts with its files, and the open handle every file goes through.

Covers: creating a cache directory private to the user (0700, missing parents too);
refusing one that another user owns or that group/others may write to; refusing one that
another user could swap for their own, as OpenSSH refuses such a home directory: below a
directory others may write to without the sticky bit, below one another user owns, or
reached through a symbolic link another user owns. Each refusal says how to fix it. And
``DirHandle``: the checked directory held open, so that files are opened, renamed and
removed relative to its descriptor, never through its path again.

Does not cover: the files inside (``store.files``) or the secret (``store.secret``). The
checks are of this moment: a parent made writable later cannot redirect what a running
session reads (it holds the directory open, see ``DirHandle.moved``), and the next session
refuses it.

>>> import tempfile
>>> private = ensure_private_dir(Path(tempfile.mkdtemp()) / "a" / "b")
>>> oct(private.stat().st_mode & 0o777), oct(private.parent.stat().st_mode & 0o777)
('0o700', '0o700')
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import threading
import weakref
from pathlib import Path

from ..errors import CacheSecurityError, ConfigError, LazyGraphError

__all__ = [
    "DirHandle",
    "check_ancestors",
    "check_private_dir",
    "check_private_stat",
    "ensure_private_dir",
]

_MAX_LINKS = 40  # as the kernel's limit on symbolic links followed in one path


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, then check it is safe to use.

    Raises ConfigError when ``path`` is a file or not writable, CacheSecurityError when it or
    a parent could be changed by another user. Nothing is created below an unsafe parent.

    >>> import tempfile
    >>> ensure_private_dir(Path(tempfile.mkdtemp()) / "cache").is_dir()
    True
    """
    directory = Path(os.path.abspath(Path(path).expanduser()))
    check_ancestors(directory)
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


def check_ancestors(directory: Path) -> None:
    """Raise CacheSecurityError if another user could put their own directory at ``directory``.

    Walks the absolute path from ``/`` as the kernel resolves it, following symbolic links:
    each directory passed through must belong to this user or root, and others may write to
    it only with the sticky bit set (as /tmp: then they cannot rename what is not theirs);
    each link must belong to this user or root. Components that do not exist yet are not
    checked (``ensure_private_dir`` creates them 0700).

    >>> check_ancestors(Path("/")) is None
    True
    """
    # Plain strings, not Path objects: a session opening its cache_dir pays this walk in
    # every new process, and pathlib's joins cost more than the lstat calls (issue 17).
    pending = _parts(str(directory))
    current = "/"
    _check_parent(directory, current, os.lstat(current))
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = current + part if current == "/" else f"{current}/{part}"
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise ConfigError(
                f"cache_dir {directory}: cannot examine {candidate} ({exc.strerror}); pass a "
                "directory you can reach"
            ) from exc
        if stat.S_ISLNK(st.st_mode):
            links += 1
            _check_link(directory, candidate, st, links)
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending[:0] = _parts(target)
            continue
        if pending:  # a parent; the directory itself gets check_private_stat
            _check_parent(directory, candidate, st)
        current = candidate


def _parts(path: str) -> list[str]:
    """The components of ``path`` as the kernel walks them ("." and empty ones dropped).

    >>> _parts("/a//b/./../c/"), _parts("x")
    (['a', 'b', '..', 'c'], ['x'])
    """
    return [part for part in path.split("/") if part not in ("", ".")]


def _check_parent(directory: Path, parent: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        return  # creating below it fails with its own message
    if st.st_uid not in (0, os.geteuid()):
        raise CacheSecurityError(
            f"cache_dir {directory} is below {parent}, which belongs to {_user(st.st_uid)}: "
            "they could move the cache away and put a directory of their own in its place. "
            "Use a cache_dir whose parent directories belong to you or root"
        )
    if st.st_mode & stat.S_ISVTX:
        return  # others may write, never rename what is not theirs (as /tmp)
    others = bool(st.st_mode & 0o002)
    # Asked last: the group lookup reads the group database (the first time, its NSS modules)
    group = not others and bool(st.st_mode & 0o020) and not _group_is_only_me(st.st_gid, parent)
    if others or group:
        who = "other users" if others else f"the other members of group {_group(st.st_gid)}"
        bits = "go-w" if others and st.st_mode & 0o020 else ("o-w" if others else "g-w")
        raise CacheSecurityError(
            f"cache_dir {directory} is below {parent}, which {who} may write to (mode "
            f"{oct(st.st_mode & 0o7777)}, no sticky bit): they could move the cache away and "
            f"put a directory of their own in its place. Use a cache_dir elsewhere, or fix "
            f"with: chmod {bits} {parent} (or chmod +t {parent} for a shared directory, as "
            "/tmp is)"
        )


def _check_link(directory: Path, link: str, st: os.stat_result, links: int) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise CacheSecurityError(
            f"cache_dir {directory} is reached through the symbolic link {link}, which "
            f"belongs to {_user(st.st_uid)}: they could point it elsewhere. Use the real path "
            f"({os.path.realpath(directory)}) if you trust it, or a link of your own"
        )
    if links > _MAX_LINKS:
        raise ConfigError(f"cache_dir {directory}: too many levels of symbolic links")


class DirHandle:
    """A checked directory held open: files are reached through ``fd``, never the path again.

    ``with handle as fd:`` uses the descriptor; ``close`` releases it once the last user is
    done, so a write still in flight when the store closes (or at exit) finishes in the
    directory it started in, and never meets a closed or reused descriptor number.

    >>> import tempfile
    >>> handle = DirHandle(Path(tempfile.mkdtemp()))
    >>> with handle as fd:
    ...     os.path.samestat(os.fstat(fd), os.stat(handle.path)), handle.moved()
    (True, False)
    >>> handle.close(); handle.closed
    True
    """

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            check_private_stat(path, st)  # the directory we hold, not one swapped in since
        except BaseException:
            os.close(fd)
            raise
        self.path = path
        self._fd = fd
        self._identity = (st.st_dev, st.st_ino)
        self._users = 0
        self._closing = False
        self._lock = threading.Lock()
        self._release = weakref.finalize(self, os.close, fd)
        # Not at exit: the process is ending and its descriptors with it, while a daemon
        # writer may still be renaming a file through this one (closing it under that writer
        # is how "Bad file descriptor" appeared at exit).
        self._release.atexit = False

    @property
    def closed(self) -> bool:
        return self._closing

    def __enter__(self) -> int:
        with self._lock:
            if self._closing:
                raise LazyGraphError(f"the file tier over {self.path} is closed")
            self._users += 1
        return self._fd

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._users -= 1
            last = self._closing and self._users == 0
        if last:
            self._release()

    def moved(self) -> bool:
        """True when the path no longer leads to the directory held (moved, replaced, gone)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def close(self) -> None:
        """Release the descriptor now, or when its last user is done. Idempotent."""
        with self._lock:
            self._closing = True
            idle = self._users == 0
        if idle:
            self._release()


def _group_is_only_me(gid: int, path: str) -> bool:
    """True when ``gid`` is this user's own group, lists no other member, and ``path`` has no
    access ACL (whose mask would show as group write while granting it to named users).

    Users whose *primary* group it is are not listed in it; finding them would mean reading
    every account, so such a group is trusted (a user-private group, the usual case).
    """
    if gid != os.getegid() or _has_acl(path):
        return False
    try:
        members = grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
    return all(member == _user(os.geteuid()) for member in members)


def _has_acl(path: str) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path, follow_symlinks=False)
    except (OSError, AttributeError):  # no xattrs here (or no os.listxattr: macOS)
        return False


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
