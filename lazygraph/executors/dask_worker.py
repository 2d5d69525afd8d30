"""What runs on a Dask worker: calling a node, persisting its entry there, hashing it there.

Covers: the functions the Dask executor puts in its tasks. ``call_template`` fills nested
arguments; ``persisted_call`` loads a node's entry from a shared ``cache_dir`` or computes
it and writes the entry from the worker (same format and authentication as the client's
file tier: ``store.files.FileTier`` itself, with the secret the *worker* reads from its own
user's secret file), under the cross-process key lock (``store.locks``), so two clients
or processes sharing the directory compute it once; ``digest`` hashes a result where it
lives, for early cutoff; ``load_entry`` reads an entry into a worker; ``worker_ready``
says whether a worker can do all that. Does not cover: building or watching the graph
(``executors.dask_run``).

The secret never travels in a task: a worker that cannot read its own secret file (or
finds none) does not persist, and the client then writes those entries itself.
docs/guide-executors.md states the trust model.

Process-wide state, on purpose: one ``FileTier`` and one ``KeyLocks`` per cache directory
per worker process (opening a tier checks and scans the directory; tasks run there all
day). They are closed at the worker's exit.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ..describe import summarize
from ..errors import iterator_result
from ..hashing import content_hash
from ..sizing import footprint
from ..store.base import MISSING, Entry
from ..store.files import FileTier, UnspillableError
from ..store.locks import KeyLocks
from ..store.secret import load_secret
from .processes import fill
from .transport import pickled

__all__ = [
    "Checked",
    "call_template",
    "checked",
    "digest",
    "load_entry",
    "persisted_call",
    "worker_ready",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_places: dict[str, tuple[FileTier, KeyLocks] | None] = {}


class Checked:
    """A node's function as it travels to a worker: its code keeps its file names (so a
    traceback shows the user's file and line: ``transport.pickled``), and an iterator
    result is refused (S2.6) wherever it runs."""

    __slots__ = ("func", "_bytes", "__weakref__")

    def __init__(self, func: Any) -> None:
        self.func = func
        self._bytes: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = self.func(*args, **kwargs)
        refused = iterator_result(value)
        if refused is not None:
            raise refused
        return value

    def __reduce__(self) -> Any:
        if self._bytes is None:  # once per function per client: tasks share the object
            self._bytes = pickled(self.func)
        return _unpickle_checked, (self._bytes,)


def _unpickle_checked(data: bytes) -> Checked:
    return Checked(pickle.loads(data))


_checked: weakref.WeakKeyDictionary[Any, Checked] = weakref.WeakKeyDictionary()


def checked(func: Any) -> Checked:
    """The ``Checked`` wrapper of ``func``, one per function while it lives."""
    try:
        wrapper = _checked.get(func)
        if wrapper is None:
            wrapper = _checked[func] = Checked(func)
    except TypeError:  # not weakly referenceable (or unhashable): a wrapper per task
        return Checked(func)
    return wrapper


def call_template(
    func: Any, args_t: Any, kwargs_t: Any, keys: tuple[Any, ...], *values: Any
) -> Any:
    """Fill the argument template (``processes.template``) with dependency values, call."""
    filled = dict(zip(keys, values, strict=True))
    value = func(*fill(args_t, filled), **fill(kwargs_t, filled))
    refused = iterator_result(value)
    if refused is not None:
        raise refused
    return value


def digest(value: Any) -> bytes:
    """``value``'s content hash (``hashing.content_hash``), computed where it lives."""
    return content_hash(value)[0]


def _place(cache_dir: str) -> tuple[FileTier, KeyLocks] | None:
    """This worker's file tier and key locks for ``cache_dir``, or None if it cannot persist."""
    with _lock:
        if cache_dir in _places:
            return _places[cache_dir]
        place = None
        try:
            secret = load_secret()
            if secret is not None:
                place = (FileTier(Path(cache_dir), secret=secret), KeyLocks(Path(cache_dir)))
            else:
                log.warning("no lazygraph secret on this worker: it does not persist entries")
        except Exception as exc:  # unsafe directory or secret: refused, as on the client
            log.warning("this worker cannot use cache_dir %s: %s", cache_dir, exc)
        _places[cache_dir] = place
        return place


def worker_ready(cache_dir: str) -> bool:
    """Whether this worker can read and write authenticated entries in ``cache_dir``."""
    return _place(cache_dir) is not None


def persisted_call(spec: tuple[str, bytes, str], func: Any, *args: Any, **kwargs: Any) -> Any:
    """The entry of ``spec`` = (cache_dir, key, name) if on disk, else ``func(...)`` written.

    Under the key's cross-process lock: a process computing the same key meanwhile is
    waited for, and its entry loaded.
    """
    cache_dir, key, name = spec
    place = _place(cache_dir)
    if place is None:
        return func(*args, **kwargs)
    tier, locks = place
    value = tier.get(key)
    if value is not MISSING:
        return value
    locks.acquire(key)
    try:
        value = tier.get(key)
        if value is MISSING:
            start = time.perf_counter()
            value = func(*args, **kwargs)
            _write(tier, key, value, name, time.perf_counter() - start)
    finally:
        locks.release(key)
    return value


def _write(tier: FileTier, key: bytes, value: Any, name: str, seconds: float) -> None:
    entry = Entry(key, value, footprint(value), name, seconds, True, True, True)
    entry.summary = summarize(value, entry.nbytes)
    try:
        tier.put(entry)
    except (OSError, UnspillableError) as exc:  # the result stands; it is just not persisted
        log.info("worker could not persist %s (%s: %s)", name, type(exc).__name__, exc)


def load_entry(cache_dir: str, key: bytes) -> Any:
    """Load ``key``'s entry into this worker; raises LookupError when it is gone or bad."""
    place = _place(cache_dir)
    value = MISSING if place is None else place[0].get(key)
    if value is MISSING:
        raise LookupError(
            f"the cache entry {key.hex()} in {cache_dir} is gone or fails authentication "
            "on this worker; pull again to recompute it"
        )
    return value
