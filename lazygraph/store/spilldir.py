"""The life of a store's private spill directory: made on first spill, removed on close.

Covers: creating the directory (named by host and pid, so the next process can tell a dead
owner's directory from a live one), sweeping the directories of this user's processes that
died without cleaning up, and removing ours on close, at garbage collection or at exit.
Does not cover: the files inside (``store.files``) or when to spill (``store.store``).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from .files import HOST_TAG, FileTier, process_gone

log = logging.getLogger(__name__)

__all__ = ["SPILL_PREFIX", "SpillDir", "make_spill_dir"]

SPILL_PREFIX = "lazygraph-spill-"


class SpillDir:
    """A private temporary directory and its file tier, made on first ``tier()`` call.

    Thread-safe; once ``close`` ran, ``tier()`` returns None, so a late spill of a closed
    store can never leave a directory behind.

    >>> spill = SpillDir()
    >>> spill.path is None
    True
    >>> path = spill.tier().directory; path.is_dir()
    True
    >>> spill.close(); path.exists(), spill.tier()
    (False, None)
    """

    def __init__(self, base: str | None = None) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._tier: FileTier | None = None
        self.path: str | None = None
        self.closed = False

    def tier(self) -> FileTier | None:
        """The spill file tier, made now if needed; None once closed."""
        tier = self._tier
        if tier is not None:
            return tier
        with self._lock:
            if self.closed:
                return None
            if self._tier is None:
                self.path = make_spill_dir(self._base)
                # A private directory removed on close: a throwaway secret authenticates it.
                self._tier = FileTier(Path(self.path), secret=os.urandom(32), disk_limit=None)
            return self._tier

    def close(self) -> None:
        """Close the tier and remove the directory with its files. Idempotent."""
        with self._lock:
            self.closed = True
            tier, self._tier = self._tier, None
            path, self.path = self.path, None
        if tier is not None:
            tier.close()
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def make_spill_dir(base: str | None = None) -> str:
    """A new private spill directory under ``base`` (the temp dir), named by host and pid.

    First removes the spill directories of this user's processes that died without cleaning
    up (killed, or the machine lost power): nothing else would ever delete their files.
    """
    base = tempfile.gettempdir() if base is None else base
    sweep_dead_spill_dirs(base)
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{HOST_TAG}-{os.getpid()}-", dir=base)


def sweep_dead_spill_dirs(base: str) -> None:
    """Remove the spill directories under ``base`` whose owning process is gone."""
    try:
        listing = list(os.scandir(base))
    except OSError as exc:
        log.debug("cannot list %s for dead spill directories: %s", base, exc)
        return
    for item in listing:
        parts = item.name[len(SPILL_PREFIX) :].split("-")
        if not item.name.startswith(SPILL_PREFIX) or len(parts) != 3:
            continue
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and process_gone(*parts[:2]):
            log.info("removing spill directory %s left by a process that died", item.path)
            shutil.rmtree(item.path, ignore_errors=True)
