"""Shipping big values between processes as memory-mapped files instead of pickled copies.

Covers: deciding whether a value is worth a file (:func:`bulky`), where the files go
(:func:`transport_dir`: ``/dev/shm`` when it has room, as joblib does), writing one in the
spill tier's format and mapping it back (:func:`write_file`, :func:`read_file`), packing a
result for the way back (:func:`pack`), and :class:`MappedFiles`: which live values are
backed by which file, so a file lives exactly as long as the value mapped from it.
Does not cover: the worker pool or the pull (``processes``), or the spill tier itself
(``store``): this only borrows its file format.

Files are uncompressed (joblib's pickler, arrays raw) and mapped back on the other side:
``mmap_mode="r"`` for results in the parent (read-only, like spilled entries),
``mmap_mode="c"`` for arguments in a worker (copy-on-write: a function that writes into its
argument works, the file never changes).

>>> import numpy as np, tempfile
>>> ref = write_file(np.arange(4), tempfile.mkdtemp())
>>> read_file(ref, mmap_mode="r").tolist()
[0, 1, 2, 3]
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import logging
import os
import pickle
import tempfile
import types
import weakref
from typing import Any

from ..handlers.registry import holds_buffers
from ..sizing import sizeof

__all__ = [
    "FileRef",
    "MappedFiles",
    "TransportError",
    "bulky",
    "pack",
    "pickled",
    "read_file",
    "transport_dir",
    "unlink_quiet",
    "write_file",
]

log = logging.getLogger(__name__)

_SHM = "/dev/shm"
_SHM_MIN_FREE = 2 * 10**9  # joblib's rule: use /dev/shm only when it has this much room
_SUFFIX = ".joblib"
LOCAL_HINT = "; mark the node @node(local=True) to run it in this process"


class FileRef:
    """A value written to a file in the spill format; opened memory-mapped on the other side."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return FileRef, (self.path,)


class TransportError(Exception):
    """A value could not cross the process boundary (raised in a worker, read here)."""


def transport_dir() -> str:
    """Where transport directories go: ``/dev/shm`` if it has room (as joblib does), else tmp.

    >>> os.path.isdir(transport_dir())
    True
    """
    try:
        stats = os.statvfs(_SHM)
        if stats.f_bavail * stats.f_frsize >= _SHM_MIN_FREE and os.access(_SHM, os.W_OK):
            return _SHM
    except (OSError, AttributeError):  # no /dev/shm (macOS), or no statvfs (Windows)
        pass
    return tempfile.gettempdir()


def bulky(value: Any, threshold: int) -> bool:
    """True if ``value`` should travel as a memory-mapped file rather than by pickle.

    That is: it holds raw buffers (numpy, pandas, torch CPU data, or containers of them;
    the handler registry knows which) of at least ``threshold`` bytes.

    >>> import numpy as np
    >>> bulky(np.zeros(1000), 4000), bulky(np.zeros(10), 4000), bulky([1] * 1000, 10)
    (True, False, False)
    """
    return holds_buffers(value) and sizeof(value) >= threshold


def write_file(value: Any, directory: str) -> FileRef:
    """Write ``value`` in the spill format to a new file in ``directory``.

    Raises ``OSError`` (disk full) or ``UnspillableError`` (not picklable); leaves no file.
    """
    from ..store.entryfile import dump

    fd, path = tempfile.mkstemp(suffix=_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            dump(value, file)
    except BaseException:
        unlink_quiet(path)
        raise
    return FileRef(path)


def read_file(ref: FileRef, *, mmap_mode: str) -> Any:
    """Load a value written by ``write_file``, its arrays memory-mapped."""
    import joblib

    return joblib.load(ref.path, mmap_mode=mmap_mode)


def unlink_quiet(path: str) -> None:
    """Remove ``path``; a file already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def pickled(obj: Any) -> bytes:
    """``obj`` pickled with cloudpickle (lambdas, closures, functions of ``__main__``).

    Functions pickled by value keep their file name (cloudpickle writes ``<dynamic-code>``),
    so a traceback from a worker shows the user's file and line (S7.1).
    """
    import cloudpickle

    pickler = _pickler_class()
    if pickler is None:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


@functools.cache
def _pickler_class() -> Any:
    """cloudpickle's Pickler with a code reducer that keeps ``co_filename``; None if this
    cloudpickle does not have the (private) reducer to wrap."""
    import cloudpickle

    reduce_code = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)
    table = getattr(cloudpickle.Pickler, "dispatch_table", None)
    if reduce_code is None or table is None:
        return None

    def keep_filename(code: types.CodeType) -> Any:
        rebuild, args = reduce_code(code)
        return rebuild, tuple(
            code.co_filename if isinstance(a, str) and a == "<dynamic-code>" else a
            for a in args
        )

    return type(
        "_FilenamePickler",
        (cloudpickle.Pickler,),
        {"dispatch_table": collections.ChainMap({types.CodeType: keep_filename}, table)},
    )


def pack(value: Any, directory: str, threshold: int) -> bytes | FileRef:
    """A result as it travels back: a file for bulky data, else cloudpickled bytes.

    Raises ``TransportError`` when the value cannot be pickled either.
    """
    if bulky(value, threshold):
        try:
            return write_file(value, directory)
        except Exception as exc:  # disk full, or unpicklable parts: try plain pickling
            log.warning(
                "writing a %s result to %s failed (%s); pickling it instead",
                type(value).__name__,
                directory,
                exc,
            )
    try:
        return pickled(value)
    except Exception as exc:  # PicklingError, TypeError, AttributeError...: any means "no"
        raise TransportError(
            f"its result (a {type(value).__name__}) cannot be sent back from a worker "
            f"process ({type(exc).__name__}: {exc})" + LOCAL_HINT
        ) from None


class MappedFiles:
    """Which live values are mapped from which transport file; a file dies with its value.

    A result read back memory-mapped uses its file as its memory, so passing it to another
    node later ships the same file again at no cost. Values that cannot be weakly
    referenced (tuples, lists) are not tracked: their caller removes the file after the pull
    (the mappings stay valid after an unlink).
    """

    def __init__(self) -> None:
        # id(value) -> (weak reference, path) for results whose file is still their memory
        self._files: dict[int, tuple[weakref.ref[Any], str]] = {}

    def track(self, value: Any, path: str) -> bool:
        """Keep ``path`` while ``value`` (mapped from it) lives; False if it can't be tracked."""
        try:
            ref = weakref.ref(value)
        except TypeError:
            return False
        files = self._files
        files[id(value)] = (ref, path)
        weakref.finalize(value, _forget, files, id(value), path)
        return True

    def file_of(self, value: Any) -> str | None:
        """The file ``value`` is mapped from, if it is tracked and the file still exists."""
        entry = self._files.get(id(value))
        if entry is not None and entry[0]() is value:
            if os.path.exists(entry[1]):
                return entry[1]
            # Its file went away (swept after an interrupt, or removed by hand): the value
            # is still mapped here, so it travels as a fresh file instead.
            self._files.pop(id(value), None)
        return None

    def sweep(self, directory: str) -> None:
        """Remove the files in ``directory`` no live value maps (left by killed workers)."""
        live = {path for _, path in list(self._files.values())}
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if path not in live:
                unlink_quiet(path)

    def clear(self) -> None:
        """Forget every tracked value (their directory is being removed)."""
        self._files.clear()


def _forget(files: dict[int, Any], ident: int, path: str) -> None:
    """A tracked value died: its file is no longer anyone's memory."""
    entry = files.get(ident)
    if entry is not None and entry[1] == path:
        del files[ident]
    unlink_quiet(path)
