"""File descriptors that a KeyboardInterrupt cannot leak.

Python runs signal handlers between bytecodes, and right after a C call such as ``os.open``
returns: a Ctrl-C landing there raises before the descriptor reaches any ``try``, and the
descriptor stays open for the life of the process (seen as "lazygraph-spill-….joblib
(deleted)" once the spill directory is removed). ``guarded`` defers the signals that have
Python handlers from just before the open until the descriptor is covered by the
``finally`` that closes it. Only the main thread runs Python signal handlers, so other
threads open without deferring.

Covers: opening and closing around a ``with`` block. Does not cover: what is opened
(``store.entryload``) or descriptors held by memory maps (``np.memmap`` keeps its own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["guarded"]

# Signals a Python handler may be installed for (SIGINT by default; pytest-timeout uses
# SIGALRM). Synchronous faults (SIGSEGV...) are never deferred.
_CANDIDATES = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGALRM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT")
    if hasattr(signal, name)
)


@contextlib.contextmanager
def guarded(open_fd: Callable[[], int | None]) -> Iterator[int | None]:
    """``open_fd()`` (an fd, or None), closed when the block ends, whatever interrupts it.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     with guarded(lambda: os.open(f.name, os.O_RDONLY)) as fd:
    ...         os.fstat(fd).st_size
    0
    """
    deferred = _deferrable()
    try:
        if deferred:
            # A signal already caught runs its handler right after this call, before the
            # open; one arriving later waits in the kernel until the fd is guarded below.
            signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
        fd = open_fd()
        try:
            if deferred:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, deferred)  # handlers may run now
                deferred = ()
            yield fd
        finally:
            if fd is not None:
                os.close(fd)
    finally:
        if deferred:  # open_fd raised (or a handler did) while the signals were deferred
            signal.pthread_sigmask(signal.SIG_UNBLOCK, deferred)


def _deferrable() -> tuple[int, ...]:
    """The signals to defer: those with a Python handler, not already blocked; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return ()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    return tuple(
        sig for sig in _CANDIDATES if callable(signal.getsignal(sig)) and sig not in blocked
    )
