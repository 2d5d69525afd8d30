"""The per-user secret that authenticates cache entries, and the keyed MAC built on it.

Covers: where the secret lives (``$LAZYGRAPH_SECRET_FILE``, else
``$XDG_CONFIG_HOME/lazygraph/secret``, else ``~/.config/lazygraph/secret``), creating it once
(32 random bytes, file mode 0600, directory 0700, safe when two processes race), refusing a
secret file that another user owns or could read, and ``mac`` / ``verify_mac``: blake2b keyed
with the secret, 32-byte tags, compared in constant time.

Does not cover: what is authenticated (``files.py`` decides that) or the cache directory's
own checks (``cachedir.py``). The secret lives *outside* the cache directory on purpose: a
copied or shared cache directory carries no key that would let its files pass as ours.

>>> tag = mac(b"k" * 32, b"header")
>>> len(tag), verify_mac(b"k" * 32, tag, b"header"), verify_mac(b"x" * 32, tag, b"header")
(32, True, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from lazygraph.errors import CacheSecurityError

__all__ = [
    "ENV_SECRET_FILE",
    "SECRET_BYTES",
    "default_secret_path",
    "load_secret",
    "load_or_create_secret",
    "mac",
    "mac_stream",
    "verify_mac",
]

ENV_SECRET_FILE = "LAZYGRAPH_SECRET_FILE"
SECRET_BYTES = 32
_TAG_BYTES = 32


def default_secret_path() -> Path:
    """Where the secret lives: ``$LAZYGRAPH_SECRET_FILE``, else under the XDG config home.

    >>> default_secret_path().name
    'secret'
    """
    override = os.environ.get(ENV_SECRET_FILE)
    if override:
        return Path(override).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join("~", ".config")
    return Path(config_home).expanduser() / "lazygraph" / "secret"


def load_secret(path: Path | None = None) -> bytes | None:
    """Read the secret, or return None when no secret file exists yet (nothing is created).

    Raises CacheSecurityError when the file exists but is not safe to trust.

    >>> import tempfile
    >>> load_secret(Path(tempfile.mkdtemp()) / "absent") is None
    True
    """
    path = default_secret_path() if path is None else Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise CacheSecurityError(
                f"secret file {path} is a symbolic link; lazygraph only trusts a regular file "
                f"it owns (remove the link, or point {ENV_SECRET_FILE} at the real file)"
            ) from exc
        raise
    try:
        _check_secret_stat(path, os.fstat(fd))
        data = os.read(fd, SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != SECRET_BYTES:
        raise CacheSecurityError(
            f"secret file {path} must hold exactly {SECRET_BYTES} bytes (got {len(data)}); "
            "delete it to create a new one (entries cached under the old secret are then "
            "recomputed)"
        )
    return data


def load_or_create_secret(path: Path | None = None) -> bytes:
    """Return the per-user secret, creating it (0600, in a 0700 directory) on first use.

    >>> import tempfile
    >>> where = Path(tempfile.mkdtemp()) / "lazygraph" / "secret"
    >>> first = load_or_create_secret(where)
    >>> first == load_or_create_secret(where), oct(where.stat().st_mode & 0o777)
    (True, '0o600')
    """
    path = default_secret_path() if path is None else Path(path)
    existing = load_secret(path)
    if existing is not None:
        return existing
    _create_secret(path)
    created = load_secret(path)
    if created is None:  # deleted between our link() and our read: another process's doing
        raise CacheSecurityError(f"secret file {path} vanished right after it was created")
    return created


def mac(secret: bytes, *parts: bytes) -> bytes:
    """A 32-byte blake2b MAC keyed with ``secret`` over ``parts`` (each length-prefixed).

    Length prefixes make ``mac(s, b"ab", b"c")`` differ from ``mac(s, b"a", b"bc")``.

    >>> mac(b"s" * 32, b"ab", b"c") != mac(b"s" * 32, b"a", b"bc")
    True
    """
    digest = hashlib.blake2b(key=secret, digest_size=_TAG_BYTES, person=b"lazygraph-mac-v1")
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def mac_stream(secret: bytes, label: bytes) -> Any:
    """A keyed blake2b to ``update`` with a stream too long to join first; ``label`` leads.

    ``mac_stream(s, b"a").update(b"bc")`` tags differently from ``mac(s, b"a", b"bc")``.

    >>> stream = mac_stream(b"s" * 32, b"pickle"); stream.update(b"data")
    >>> len(stream.digest())
    32
    """
    digest = hashlib.blake2b(key=secret, digest_size=_TAG_BYTES, person=b"lazygraph-str-v1")
    digest.update(len(label).to_bytes(8, "little"))
    digest.update(label)
    return digest


def verify_mac(secret: bytes, tag: bytes, *parts: bytes) -> bool:
    """True when ``tag`` is ``mac(secret, *parts)``; compared in constant time.

    >>> verify_mac(b"s" * 32, mac(b"s" * 32, b"x"), b"x")
    True
    """
    return hmac.compare_digest(tag, mac(secret, *parts))


def _check_secret_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CacheSecurityError(f"secret file {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise CacheSecurityError(
            f"secret file {path} is owned by uid {st.st_uid}, expected uid {os.geteuid()} "
            f"(this user); remove it or set {ENV_SECRET_FILE} to a file of your own"
        )
    if st.st_mode & 0o077:
        raise CacheSecurityError(
            f"secret file {path} has mode {oct(st.st_mode & 0o777)}, expected 0o600 (only "
            f"its owner may read it); fix with: chmod 600 {path}"
        )


def _create_secret(path: Path) -> None:
    """Write a fresh secret to a temp file and link it into place unless one appeared."""
    _make_private_parents(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails with EEXIST instead of replacing: when two processes race, both end up
        # using whichever secret was linked first.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _make_private_parents(directory: Path) -> None:
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a racing process made it first
            os.mkdir(candidate, 0o700)
