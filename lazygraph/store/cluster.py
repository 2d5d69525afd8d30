"""The cluster tier: results that stay on a Dask cluster, held by reference under their key.

Covers: ``Remote`` (one result on the cluster: its Dask future, the bytes the workers
report, its content digest when one was computed there), ``OnDisk`` (an entry the workers
load themselves) and ``ClusterTier``, the ``Tier``
over them: an LRU of futures under a byte budget (``cluster_limit``; by default half the
workers' memory limits), so a long session does not pin the cluster's memory; Dask's own
spilling does the rest. ``get`` brings exactly one value to this process; ``ref`` hands
the future on without moving anything (what a later pull on the cluster uses). Letting go
of a future (``discard``, ``evict``, ``close``) lets Dask drop the data once no one else
wants it.

Does not cover: running anything (``executors.dask``), the client's life (the caller's),
or the workers' own persisted entries (``executors.dask_worker``). Imports no Dask: the
futures come from the executor, and a value ``put`` here is scattered through the client
the tier was made with.

>>> tier = ClusterTier(None, max_bytes=100)     # no client: holds only Remote values
>>> tier.hold(b"k" * 16, Remote(None, nbytes=60))
>>> tier.hold(b"j" * 16, Remote(None, nbytes=60))  # over 100 bytes: the older one goes
>>> b"k" * 16 in tier, b"j" * 16 in tier, tier.sizes()
(False, True, (1, 60))
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, KeysView
from typing import Any

from .base import MISSING, Entry, Result

__all__ = ["ClusterTier", "OnDisk", "Remote", "default_cluster_limit"]

log = logging.getLogger(__name__)


class Remote:
    """A result that lives on the cluster: ``future`` (a Dask future), its ``nbytes``.

    ``digest`` is its content hash (``hashing.content_hash``) when a worker computed it, so
    early cutoff compares results without bringing them here.
    """

    __slots__ = ("future", "nbytes", "digest")

    def __init__(self, future: Any, *, nbytes: int = 0, digest: bytes | None = None) -> None:
        self.future = future
        self.nbytes = nbytes
        self.digest = digest

    def __repr__(self) -> str:
        key = getattr(self.future, "key", None)
        return f"<Remote {key} {self.nbytes} B>"


class OnDisk:
    """A persisted result that the workers load themselves from the shared ``cache_dir``
    (what a pull on the cluster plans for an entry on disk instead of loading it here)."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"<OnDisk {self.key.hex()[:12]}>"


def default_cluster_limit(client: Any) -> int:
    """Half the memory the cluster's workers may use (their ``memory_limit``s), or 1 GiB
    per worker when a worker has none. Dask's workers start spilling at 60%: results this
    tier keeps leave them room for the tasks still to run.
    """
    workers = client.scheduler_info().get("workers", {})
    total = sum(int(w.get("memory_limit") or 2**31) for w in workers.values())
    return max(total // 2, 2**20)


class ClusterTier:
    """Results on a Dask cluster by key, least recently used first, under ``max_bytes``.

    ``client`` is the ``distributed.Client`` the futures belong to (None: the tier holds
    ``Remote`` values handed to it and cannot scatter). Thread-safe.
    """

    name = "cluster"

    def __init__(self, client: Any, *, max_bytes: int) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self._held: OrderedDict[bytes, Remote] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._closed = False

    # -- the Tier protocol -----------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        """Bring the value under ``key`` here (one transfer), or MISSING. Never raises."""
        remote = self.ref(key)
        if remote is None or self.client is None:
            return MISSING
        try:
            return self.client.gather(remote.future)
        except Exception as exc:  # lost with its worker, or cancelled: recompute it
            log.info("result %s could not come back from the cluster (%s)", key.hex()[:12], exc)
            self.discard(key)
            return MISSING

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def put(self, entry: Entry) -> None:
        """Hold ``entry.value``: a ``Remote`` as it is, any other value scattered first."""
        value = entry.value
        if not isinstance(value, Remote):
            if self.client is None or self._closed:
                return
            [future] = self.client.scatter([value], hash=False)
            value = Remote(future, nbytes=entry.nbytes)
        self.hold(entry.key, value)

    def discard(self, key: bytes) -> None:
        with self._lock:
            remote = self._held.pop(key, None)
            if remote is not None:
                self._bytes -= remote.nbytes
        if remote is not None:
            _release([remote])

    def evict(self) -> int:
        """Let go of the least recently used result: its bytes, 0 when empty. Never raises."""
        try:
            with self._lock:
                if not self._held:
                    return 0
                _, remote = self._held.popitem(last=False)
                self._bytes -= remote.nbytes
            _release([remote])
            return max(remote.nbytes, 1)
        except Exception:  # the memory monitor relies on this never raising
            log.exception("evicting from the cluster tier failed")
            return -1

    def sizes(self) -> tuple[int, int]:
        return len(self._held), self._bytes

    def close(self) -> None:
        """Let go of every future (Dask frees what no one else wants). Idempotent."""
        with self._lock:
            self._closed = True
            dropped = list(self._held.values())
            self._held.clear()
            self._bytes = 0
        _release(dropped)

    # -- more than a tier ------------------------------------------------------------------

    def keys(self) -> KeysView[bytes]:
        """A live view of the keys held (for a lock-free membership test)."""
        return self._held.keys()

    def ref(self, key: bytes) -> Remote | None:
        """The ``Remote`` under ``key`` (now the most recently used), or None: nothing moves."""
        with self._lock:
            remote = self._held.get(key)
            if remote is not None:
                self._held.move_to_end(key)
            return remote

    def hold(self, key: bytes, remote: Remote) -> None:
        """Keep ``remote`` under ``key``, letting go of the oldest results past the budget.

        A result larger than the whole budget is not kept (as the memory tier does).
        """
        with self._lock:
            if self._closed or remote.nbytes > self.max_bytes:
                dropped = [remote]
            else:
                old = self._held.pop(key, None)
                self._held[key] = remote
                self._bytes += remote.nbytes - (old.nbytes if old is not None else 0)
                dropped = [old] if old is not None and old.future is not remote.future else []
                dropped += self._over_budget()
        _release(dropped)

    def take(
        self, results: Iterable[Result], *, tally: Callable[[str, float], None] | None = None
    ) -> list[Result]:
        """Hold the results that stay on the cluster (``Remote`` values); the others, in order.

        ``tally(name, seconds)`` is called for each one held (the store counts executions).
        """
        rest = []
        for result in results:
            value = result[1]
            if isinstance(value, Remote):
                self.hold(result[0], value)
                if tally is not None:
                    tally(result[4].name, result[3])
            else:
                rest.append(result)
        return rest

    def resize(self, sizes: dict[Any, int]) -> None:
        """Set the bytes of held results from ``sizes`` (Dask key -> bytes, as the workers
        report them), then let go of the oldest past the budget."""
        with self._lock:
            for remote in self._held.values():
                nbytes = sizes.get(getattr(remote.future, "key", None))
                if nbytes is not None:
                    self._bytes += nbytes - remote.nbytes
                    remote.nbytes = nbytes
            dropped = self._over_budget()
        _release(dropped)

    def _over_budget(self) -> list[Remote]:
        dropped = []
        while self._bytes > self.max_bytes and self._held:
            _, remote = self._held.popitem(last=False)
            self._bytes -= remote.nbytes
            dropped.append(remote)
        return dropped

    def __repr__(self) -> str:
        return f"<ClusterTier {len(self._held)} results, {self._bytes} B of {self.max_bytes}>"


def _release(remotes: list[Remote]) -> None:
    """Let go of futures; a closed client or a future already released is not an error.

    Many at once go to the client's event loop in one hand-off: each ``release()`` from this
    thread would wake that loop once (a socket write per future).
    """
    futures = [r.future for r in remotes if hasattr(r.future, "release")]
    if not futures:
        return
    client: Any = getattr(futures[0], "client", None)
    loop = getattr(client, "loop", None)
    try:
        if len(futures) > 1 and loop is not None and client.status == "running":
            loop.add_callback(_release_all, futures)
        else:
            _release_all(futures)
    except Exception as exc:  # the client went away first: the scheduler forgets anyway
        log.debug("releasing %d futures failed: %s", len(futures), exc)


def _release_all(futures: list[Any]) -> None:
    for future in futures:
        try:
            future.release()
        except Exception as exc:  # one already released, or its client closed
            log.debug("releasing %r failed: %s", future, exc)
