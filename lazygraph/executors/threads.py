"""The thread-pool executor: independent branches of a pull run in parallel on threads.

Covers: ``ThreadExecutor`` (a ``concurrent.futures.ThreadPoolExecutor`` of ``workers``
threads; numpy, pandas and torch work that releases the GIL scales with cores) and its
backend for the shared loop. Does not cover: the loop itself (``pool``), or what crosses a
process boundary (``processes``, ``dask``). Values pass by reference, as under "sync".

>>> import lazygraph
>>> @lazygraph.node
... def inc(x):
...     return x + 1
>>> with lazygraph.Session(executor="threads", workers=2, progress=False) as s:
...     s.compute(inc(1), inc(inc(1)))
(2, 3)
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import nesting
from ..errors import LazyGraphError
from .pool import PoolRun, checked_workers

if TYPE_CHECKING:
    from ..node import Node
    from ..scheduler import Pull

__all__ = ["ThreadExecutor"]

_perf = time.perf_counter


def _timed_call(pull: Pull, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run in a worker thread: the node's value and how long its function took.

    The frame says which node this thread runs for which pull, for pulls nested in it.
    """
    frame = nesting.push(pull, n, worker=True)
    try:
        start = _perf()
        value = pull.call(n, args, kwargs)
        return value, _perf() - start
    finally:
        nesting.pop(frame, worker=True)


class ThreadExecutor:
    """Runs independent nodes in parallel on a pool of ``workers`` threads.

    The pool starts on first use and is shut down by ``close()`` (idempotent; a later
    ``run`` starts a new pool). One executor may serve several pulls at once.

    >>> import lazygraph
    >>> ex = ThreadExecutor(workers=2)
    >>> @lazygraph.node
    ... def double(x):
    ...     return 2 * x
    >>> with lazygraph.Session(progress=False) as s:
    ...     s.compute(double(4), executor=ex)
    (8,)
    >>> ex.close()
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = checked_workers(workers)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, pull: Pull) -> None:
        """Run every node of ``pull.order``; raise the first ``NodeError``.

        A pull nested in a node this pool runs (its function called ``compute()``) runs
        in that worker thread: queued behind the workers that wait for it, it would
        never start once they are all waiting (S7.2).
        """
        if nesting.in_worker():
            pull.run_all()
            return
        PoolRun(pull, _ThreadBackend(self._get_pool(), pull)).run()

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lazygraph")
            return self._pool

    def close(self) -> None:
        """Shut the pool down, waiting for nodes still running; idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ThreadExecutor(workers={self.workers})"


class _ThreadBackend:
    """Runs ``pull.call`` on the pool; nothing has to cross a process boundary."""

    def __init__(self, pool: ThreadPoolExecutor, pull: Pull) -> None:
        self.pool = pool
        self.pull = pull

    def local(self, n: Node) -> bool:
        return False

    def submit(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        try:
            return self.pool.submit(_timed_call, self.pull, n, args, kwargs)
        except RuntimeError as exc:  # the pool was shut down: Session.close() in another thread
            raise LazyGraphError("this Session is closed; create a new one") from exc

    def receive(self, n: Node, future: Future[Any]) -> tuple[Any, float]:
        value, seconds = future.result()  # a NodeError from pull.call propagates as is
        return value, seconds

    def interrupted(self) -> None:
        """Threads cannot be stopped: nodes already running finish and are dropped."""
