"""The loop every pool executor shares: which planned node may start, and driving a pull.

Covers: ``Readiness`` (a count of unfinished planned dependencies per node; the Dask
executor uses it too), the ``Backend`` protocol a pool plugs in, and ``PoolRun``, the loop
that drives one pull through any pool: submit the nodes whose dependencies are finished,
finish each result in the coordinating thread (``Pull.prepare`` and ``Pull.finish`` are not
thread-safe, so they never run in a worker), stop at the first error, cancel on an
interrupt. Does not cover: a particular pool (``threads``, ``processes``) or Dask (``dask``),
which does its own loop over ``Readiness``.

Semantics are the sync executor's: dependency order, each node run at most once per pull,
the first ``NodeError`` raised after the nodes already running have finished (their results
stay cached), results passed by reference (``is``-identical) where no process boundary lies
between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any, Protocol

from .. import nesting
from ..errors import ConfigError, LazyGraphError, NodeError

if TYPE_CHECKING:
    from ..node import Node
    from ..scheduler import Pull

__all__ = ["Backend", "PoolRun", "Readiness", "checked_workers"]

log = logging.getLogger(__name__)
_perf = time.perf_counter
# While a node waits for a key another pull is computing, poll the pool this often, so our
# own running nodes are finished (and their keys released) instead of blocking on the wait.
_DEFER_POLL_S = 0.05
# Futures cancelled by the pool's shutdown (Session.close() in another thread) never wake a
# wait() on them (CPython's cancel() notifies no waiter): the loop looks again this often.
_CANCEL_POLL_S = 0.1
_CLOSED = "this Session is closed; create a new one"


class Readiness:
    """Which planned nodes may start: a count of unfinished planned dependencies per node.

    Dependencies are matched by key, not by Node object: two Nodes with one key are one
    piece of work (the plan holds only the first). Ready nodes form a stack, so a branch is
    followed to its end before the next starts and intermediate values are released early.

    >>> class N:
    ...     def __init__(self, key, *deps): self._key, self.deps = key, deps
    >>> a = N(b"a"); b = N(b"b", a); c = N(b"c", a)
    >>> r = Readiness([a, b, c])
    >>> [n._key for n in r.ready]
    [b'a']
    >>> r.ready.pop()._key
    b'a'
    >>> r.done(a)
    >>> [r.ready.pop()._key, r.ready.pop()._key]
    [b'b', b'c']
    """

    def __init__(self, order: Sequence[Node]) -> None:
        planned = {n._key for n in order}
        self.waiting: dict[bytes, int] = {}
        self.dependents: dict[bytes, list[Node]] = {}
        ready: list[Node] = []
        for n in order:
            keys = {d._key for d in n.deps if d._key in planned}
            if not keys:
                ready.append(n)
                continue
            self.waiting[n._key] = len(keys)  # type: ignore[index]
            for dk in keys:
                self.dependents.setdefault(dk, []).append(n)  # type: ignore[arg-type]
        ready.reverse()  # a stack: the first planned node is popped first
        self.ready = ready

    def done(self, n: Node) -> None:
        """Mark ``n`` finished; dependents whose last dependency it was become ready."""
        for m in reversed(self.dependents.pop(n._key, ())):  # type: ignore[arg-type]
            left = self.waiting[m._key] - 1  # type: ignore[index]
            if left:
                self.waiting[m._key] = left  # type: ignore[index]
            else:
                del self.waiting[m._key]  # type: ignore[arg-type]
                self.ready.append(m)


class Backend(Protocol):
    """What a pool executor plugs into ``PoolRun``."""

    def local(self, n: Node) -> bool:
        """True if ``n`` must run in the coordinating thread (``pull.call``)."""
        ...

    def submit(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Start ``n``; raise ``NodeError`` if it cannot be sent to a worker."""
        ...

    def receive(self, n: Node, future: Future[Any]) -> tuple[Any, float]:
        """The value and compute seconds of a done future; ``NodeError`` if it failed."""
        ...

    def interrupted(self) -> None:
        """The coordinating thread was interrupted: stop what still runs, if possible."""
        ...


class PoolRun:
    """One pull driven through a pool; ``run()`` returns when every planned node finished.

    On the first error: nothing new is submitted, what has not started is cancelled, what
    runs is waited for and finished (so it stays cached), then the ``NodeError`` is raised.
    On an interrupt (``KeyboardInterrupt`` while waiting): everything is cancelled, the
    backend is told (``interrupted``), and the interrupt propagates at once.
    """

    def __init__(self, pull: Pull, backend: Backend) -> None:
        self.pull = pull
        self.backend = backend
        self.readiness = Readiness(pull.order)
        self.running: dict[Future[Any], Node] = {}
        self.deferred: list[Node] = []
        self.error: NodeError | None = None

    def run(self) -> None:
        """Run every planned node, or raise the first ``NodeError``."""
        try:
            self._loop()
        except BaseException as exc:
            # Interrupted: stop the workers first. Cancelling futures first makes loky's
            # manager thread die on InvalidStateError without killing its workers.
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stop now
                self.backend.interrupted()
            self._cancel_all()
            raise
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            if self.error is None:
                self._start_ready()
            if not self.running:
                if self.error is None and (self.readiness.ready or self.deferred):
                    continue
                return
            timeout = _DEFER_POLL_S if self.deferred else _CANCEL_POLL_S
            done, _ = wait(self.running, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done or [f for f in self.running if f.cancelled()]:
                self._collect(future)

    def _start_ready(self) -> None:
        ready = self.readiness.ready
        if self.deferred:
            ready.extend(reversed(self.deferred))
            self.deferred.clear()
        while ready and self.error is None:
            n = ready.pop()
            if self.running and self._claimed_elsewhere(n):
                # prepare() would block until the other pull finishes this key, while our
                # running nodes hold keys that pull may be waiting for: a deadlock. Defer.
                self.deferred.append(n)
                continue
            self._start(n)

    def _claimed_elsewhere(self, n: Node) -> bool:
        owner = self.pull.claims.owner(n._key)  # type: ignore[arg-type]
        return owner is not None and owner is not self.pull

    def _start(self, n: Node) -> None:
        pull = self.pull
        prepared = pull.prepare(n)
        if prepared is None:  # backdated, or another pull computed it meanwhile
            self.readiness.done(n)
            return
        args, kwargs = prepared
        if self.backend.local(n):
            self._run_here(n, args, kwargs)
            return
        try:
            future = self.backend.submit(n, args, kwargs)
        except NodeError as exc:
            pull.release_claim(n)
            self._fail(exc)
            return
        except BaseException:
            pull.release_claim(n)
            raise
        self.running[future] = n

    def _run_here(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Name the node this thread runs: others of this pull run in workers meanwhile, so
        # a pull nested in this one must know which of its keys it waits inside.
        frame = nesting.push(self.pull, n)
        start = _perf()
        try:
            value = self.pull.call(n, args, kwargs)
        except NodeError as exc:
            self.pull.release_claim(n)
            self._fail(exc)
            return
        except BaseException:
            self.pull.release_claim(n)
            raise
        finally:
            nesting.pop(frame)
        self.pull.finish(n, value, _perf() - start)
        self.readiness.done(n)

    def _collect(self, future: Future[Any]) -> None:
        n = self.running.pop(future)
        if future.cancelled():  # not by this run (_fail and _cancel_all drop theirs): closed
            self.pull.release_claim(n)
            raise LazyGraphError(_CLOSED)
        try:
            value, seconds = self.backend.receive(n, future)
        except NodeError as exc:
            self.pull.release_claim(n)
            self._fail(exc)
            return
        self.pull.finish(n, value, seconds)
        self.readiness.done(n)

    def _fail(self, exc: NodeError) -> None:
        if self.error is not None:
            log.debug("another node failed after the first error: %s", exc)
            return
        self.error = exc
        for future, n in list(self.running.items()):
            if future.cancel():
                del self.running[future]
                self.pull.release_claim(n)

    def _cancel_all(self) -> None:
        for future, n in self.running.items():
            future.cancel()
            self.pull.release_claim(n)
        self.running.clear()


def checked_workers(workers: object) -> int:
    """``workers`` if it is a usable pool size (a positive int), else ``ConfigError``.

    >>> checked_workers(2)
    2
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int (got {workers!r})")
    return workers
