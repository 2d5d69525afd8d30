"""File inputs: ``lazygraph.file(path)``, a source node whose key follows a file's content.

Covers: :func:`file` (a file, a directory or a glob pattern), :class:`FileInput` (an Input
re-checked at the start of every pull) and :class:`FilePath` (its value: the path, a
``str`` whose hashing token is the path and the content digest). The check costs one
``stat`` per file while sizes and mtimes stay put; a file whose size or mtime moved is
hashed again (xxh3-128, streamed), and only a changed digest sets the Input, so a ``touch``
recomputes nothing. Directories count every regular file below them, globs every match,
by relative name and content. Does not cover: reading files (the user's nodes do), watching
for changes between pulls (nothing runs until a pull), or staleness (``Input.set``).

>>> import os, tempfile, lazygraph
>>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
>>> _ = open(path, "w").write("hello")
>>> @lazygraph.node
... def size(p):
...     return len(open(p).read())
>>> n = size(lazygraph.file(path))
>>> with lazygraph.Session(progress=False):
...     first = n.compute()
...     _ = open(path, "a").write(" world")
...     second = n.compute()
>>> first, second
(5, 11)
"""

from __future__ import annotations

import glob
import os
import stat
import threading
from typing import Any

import xxhash

from .incremental import watch
from .node import Input

__all__ = ["FileInput", "FilePath", "file"]

_CHUNK = 1 << 20
_GLOB_CHARS = frozenset("*?[")
# (size, mtime_ns, inode) per file: the fast check. Content digests are keyed by it.
Stamp = tuple[int, int, int]


class FilePath(str):
    """A path (the ``str`` itself) keyed by its content: ``__lazygraph_token__`` is the path
    and a digest of what it names."""

    __slots__ = ("digest",)
    digest: bytes

    def __new__(cls, path: str, digest: bytes) -> FilePath:
        made = super().__new__(cls, path)
        made.digest = digest
        return made

    def __lazygraph_token__(self) -> bytes:
        return os.fsencode(str(self)) + b"\0" + self.digest

    def __reduce__(self) -> Any:
        return FilePath, (str(self), self.digest)


class FileInput(Input):
    """An Input whose value is a :class:`FilePath`, refreshed at the start of every pull."""

    __slots__ = ("_scan",)

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        text = os.fspath(path)
        if not isinstance(text, str):
            raise TypeError(f"file() expects a str or os.PathLike path (got {path!r})")
        self._scan = _Scan(text)
        super().__init__(FilePath(text, self._scan.digest()), name=name or f"file:{text}")
        watch(self)

    def refresh(self) -> None:
        """Stat the file(s); when a size or mtime moved, hash them and ``set`` a new digest
        if the content changed. Called by every pull (through ``incremental.watch``)."""
        scan = self._scan
        with scan.lock:
            if not scan.moved():
                return
            digest = scan.digest()
        if digest != self.args[0].digest:
            self.set(FilePath(scan.path, digest))



class _Scan:
    """The files a path names, their stamps and content digests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.stamps: dict[str, Stamp] = {}
        self.digests: dict[str, tuple[Stamp, bytes]] = {}

    def files(self) -> dict[str, Stamp]:
        """Every regular file the path names, with its stamp (missing ones are left out)."""
        if _GLOB_CHARS & set(self.path):
            names = glob.glob(self.path, recursive=True)
        elif os.path.isdir(self.path):
            names = [os.path.join(root, f) for root, _, fs in os.walk(self.path) for f in fs]
        else:
            names = [self.path]
        found = {}
        for name in names:
            try:
                st = os.stat(name)
            except OSError:  # vanished between listing and stat: as if never there
                continue
            if stat.S_ISREG(st.st_mode):
                found[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return found

    def moved(self) -> bool:
        """Whether any file appeared, vanished or has another size/mtime since the last scan."""
        return self.files() != self.stamps

    def digest(self) -> bytes:
        """The digest of every file's relative name and content (re-hashing moved ones)."""
        self.stamps = self.files()
        h = xxhash.xxh3_128()
        h.update(b"file-source-v1\0" + str(len(self.stamps)).encode())
        for name in sorted(self.stamps):
            # by name relative to a directory, so a copied tree keeps its key; the path
            # itself is in FilePath's token
            h.update(os.fsencode(os.path.relpath(name, self.path)) + b"\0")
            h.update(self._content(name, self.stamps[name]))
        self.digests = {n: self.digests[n] for n in self.stamps if n in self.digests}
        return h.digest()

    def _content(self, name: str, stamp: Stamp) -> bytes:
        known = self.digests.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        h = xxhash.xxh3_128()
        try:
            with open(name, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        except OSError as exc:  # unreadable: the reader node will fail with the real error
            h.update(f"unreadable: {type(exc).__name__}".encode())
        self.digests[name] = (stamp, h.digest())
        return h.digest()


def file(path: str | os.PathLike[str], *, name: str | None = None) -> FileInput:
    """A source node for a file, a directory or a glob: its value is the path (a ``str``),
    its key follows the content, re-checked at the start of every pull (SPEC S1.12).

    >>> import tempfile, lazygraph
    >>> folder = tempfile.mkdtemp()
    >>> src = lazygraph.file(folder)
    >>> src.value == folder, isinstance(src.value, str)
    (True, True)
    """
    return FileInput(path, name=name)
