"""The pull: plan what is missing, run it once, record what happened.

Covers: the plan (missing nodes in dependency order, pinned hits, consumer counts so values
are released after their last consumer), running one node (arguments by reference, CUDA
out-of-memory retry, NodeError), acting on the incremental runtime's decisions (backdate a
stale node, hash a result for early cutoff, verify what the pull skipped) and the record
``explain()`` reads. Does not cover: keys (``keys``), the salsa bookkeeping and its
decisions (``incremental``), run-once claims (``claims``, the session's), which thread or
process runs a node (``executors``) or where results are kept (``store``).
docs/incremental.md explains the algorithm.

>>> import lazygraph
>>> @lazygraph.node
... def inc(x):
...     return x + 1
>>> with lazygraph.Session() as session:
...     session.compute(inc(inc(1)))
(3,)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import cuda, nesting
from .arguments import substitute
from .claims import Claims
from .config import Config
from .errors import NodeError, iterator_result
from .graph import path_to
from .incremental import (
    BACKDATED,
    Verifier,
    backdate,
    begin_pull,
    current_revision,
    end_pull,
    input_value,
    same_as_before,
    why,
)
from .keys import refresh_redefined, resolve_keys
from .node import Node
from .progress import Progress
from .record import Outcome, Record
from .sizing import FAST_FOOTPRINTS, footprint
from .store.base import MISSING, Result
from .store.store import Store

__all__ = ["Host", "Outcome", "Pull", "Record"]

_perf = time.perf_counter
_NEVER = float("inf")  # the sync loop's next bar update when there is no bar
_BATCH = 64  # small results the sync loop hands to the store per call
# Results this small with no shared buffer (one private part) may wait in a batch: 64 of
# them hold at most 4 MiB outside the store's budget. No array, frame or tensor is that.
_SMALL = 64 * 1024
_RUN_NEXT = object()  # the plan's stack marker: its dependencies are planned, order it
log = logging.getLogger(__name__)


class Host(Protocol):
    """What a pull needs of the session it runs in (``session.Session`` is one)."""

    store: Store
    claims: Claims
    config: Config


class Pull:
    """One pull of ``roots``: the plan, the values in flight, and what happened to each node.

    Executors drive it: ``order`` lists the nodes to run (dependencies first); in-process
    executors call ``run_node``; others call ``arguments``, run the function elsewhere and
    hand the value to ``finish``.
    """

    def __init__(
        self, session: Host, roots: Sequence[Node], *, find: Callable[[bytes], Any] | None = None
    ) -> None:
        self.session = session
        self.store = session.store
        self.claims = session.claims
        self._find = find  # the plan's lookup: the store's, or an executor's (dask: remote refs)
        # A cache_dir shared with other processes: persisted nodes are locked across them
        # (S5.10). An executor whose workers take the locks themselves turns it off.
        self.shared = session.config.cache_dir is not None
        self.roots = roots
        self.values: dict[bytes, Any] = {}
        self.order: list[Node] = []
        self.consumers: dict[bytes, int] = {}
        self.record = Record()
        self.books = Verifier(-1)  # the revision is known once keys are resolved
        self._running = True
        self._batch: list[Result] = []  # the sync loop's results not yet stored
        self.parent = nesting.current()  # nested in that frame: a node called compute()
        if self.parent is not None and self.parent[1] is None:
            self.parent[0].flush_batch()  # it waits in one of its nodes, in this thread
        self._frame = nesting.push(self)
        begin_pull()  # until results() or release_all_claims(): Input.set() waits
        self._started_alone = self.claims.pull_started()
        try:
            refresh_redefined(roots, cached=self.store.location)  # S3.9, before keys are used
            resolve_keys(roots)
            # after resolve_keys: a code change it noticed started a new revision
            self.revision = self.books.revision = current_revision()
            self.keep = {r._key for r in roots}
            # Values this pull holds are swapped for their memory maps once spilled, so a
            # node reading many large inputs at once does not hold them all in RAM.
            self.store.pin(self.values)
            self._plan()
        except BaseException:  # e.g. a CycleError: this pull never ran
            self._end()
            raise
        self.progress = Progress(len(self.order)) if session.config.progress else None
        self._shown = 0  # results of the sync loop's current batch the bar already counts

    def _end(self) -> None:
        if self._running:
            self._running = False
            nesting.pop(self._frame)
            self.store.unpin(self.values)
            self.books.close()
            self.claims.pull_ended()
            end_pull()

    # -- planning ------------------------------------------------------------------------

    def _plan(self) -> None:
        find = self._find or self.store.find
        misses = 0
        values, order, consumers = self.values, self.order, self.consumers
        record = self.record.log
        books = self.books
        state, twins, verified = books.visited, books.twins, books.verified
        unvisited: list[Node] = []  # may hold stale bookkeeping: see Verifier.verify_unvisited
        hits: set[int] = set()
        for root in self.roots:
            stack: list[Any] = [root]  # Nodes to visit; _RUN_NEXT: the Node below it is ready
            while stack:
                n = stack.pop()
                if n is _RUN_NEXT:
                    order.append(stack.pop())
                    continue
                k: bytes = n._key
                seen = state.get(k)
                if seen is not None:
                    if seen is not n and n._verified_key is not None:
                        twins.setdefault(id(seen), []).append(n)
                    continue
                state[k] = n
                value, where = find(k)
                if value is not MISSING:
                    values[k] = value
                    record.append((n, "hit", where))
                    if n._dependents is not None:
                        last = n._verified_key
                        if last is not None or n._changed_at < 0:
                            # stale or first verified: its dependencies may be stale too (a
                            # clean node's are not: marking them would have marked it)
                            unvisited.extend(n.deps)
                        verified(n, changed=last not in (None, k))
                        hits.add(id(n))
                    continue
                misses += n.func is not input_value  # an Input's value is set, not looked up
                stack.append(n)
                stack.append(_RUN_NEXT)
                for d in reversed(n.deps):  # reversed: the first argument runs first
                    dk: bytes = d._key
                    consumers[dk] = consumers.get(dk, 0) + 1
                    seen = state.get(dk)
                    if seen is None:
                        stack.append(d)
                    elif seen is not d and d._verified_key is not None:
                        twins.setdefault(id(seen), []).append(d)
        self.store.count_misses(misses)
        if twins and hits:  # twins of nodes already verified: no waiting for them
            unvisited.extend(books.settle_hits(hits))
        if unvisited:
            books.verify_unvisited(unvisited)

    # -- running -------------------------------------------------------------------------

    def run_all(self) -> None:
        """Run the whole plan in this thread, dependencies first (the sync executor).

        The common node (cached, never stale, plain positional arguments, claimed at once
        while no other pull started) is run and finished inline: ``run_node`` and ``finish``
        are layers of calls that cost more than the rest of its per-node work. Its result
        joins a batch that goes to the store in one call when it holds ``_BATCH`` small
        results, before any other node runs, at the end, and on an error. A result that is
        not small goes at once (the store's byte budget must see it). Claims on batched
        keys are held until they are stored, so a pull waiting for one finds it.

        It is the one function over 60 lines in the package on purpose: this loop runs once
        per node of every fresh pull, and each helper call it made would cost more than
        the rest of a small node's work (benchmarks/compare.py holds it to 5x dask).
        """
        values, claims, alone = self.values, self.claims, self._started_alone
        shared = self.shared
        claim = claims.claim
        record, revision = self.record.log, self.revision
        consumers, keep = self.consumers, self.keep
        batch = self._batch
        fast_footprint = FAST_FOOTPRINTS.get
        # The bar moves by time too: batched small results would otherwise reach it only
        # when their batch is stored (at the end, for a pull of slow nodes).
        show_at = self.progress.due if self.progress is not None else _NEVER
        try:
            for n in self.order:
                k: bytes = n._key  # type: ignore[assignment]
                options = n.options
                if (
                    n._dependents is not None
                    or n._nested
                    or n.kwargs
                    or not options.cache
                    or claims.started != alone
                    or shared
                    or claim(k, self) is not self
                ):
                    if batch:
                        self._store_batch(batch)
                    self.run_node(n)
                    continue
                deps = n.deps
                args = n.args
                if not deps:
                    pass
                elif deps is not args:  # scalars among the Nodes
                    args = tuple([values[a._key] if isinstance(a, Node) else a for a in args])  # type: ignore[index]
                elif len(args) == 1:  # every argument is a Node (Node shares the tuple)
                    args = (values[args[0]._key],)
                elif len(args) == 2:
                    args = (values[args[0]._key], values[args[1]._key])
                else:
                    args = tuple([values[a._key] for a in args])
                start = _perf()
                try:
                    value = n.func(*args)
                except Exception as exc:
                    value = self._failed(n, args, {}, exc)
                except BaseException:
                    self.release_claim(n)
                    raise
                end = _perf()
                seconds = end - start
                sizer = fast_footprint(type(value))
                if sizer is None and hasattr(type(value), "__next__"):  # S2.6: refused
                    self._failed(n, args, {}, iterator_result(value))
                parts = sizer(value) if sizer is not None else footprint(value)
                values[k] = value
                batch.append((k, value, parts, seconds, options, n._persistable))
                if n._verified_at < 0:
                    record.append(n)  # (n, "ran", "new") in the record's short form
                else:
                    record.append((n, "ran", "not cached"))
                n._verified_at = revision
                for d in deps:  # _release, inline
                    dk: bytes = d._key  # type: ignore[assignment]
                    left = consumers[dk] - 1
                    if left or dk in keep:
                        consumers[dk] = left
                    else:
                        del consumers[dk]
                        values.pop(dk, None)
                part = parts[0]
                small = len(parts) == 1 and part[0] is None and part[1] < _SMALL  # may wait
                if not small or len(batch) == _BATCH:
                    self._store_batch(batch)
                elif end >= show_at:
                    show_at = self._show_batched(len(batch))
                del args, value  # the next node must not keep this one's inputs alive
        finally:
            if batch:
                self._store_batch(batch)

    def flush_batch(self) -> None:
        """Store the sync loop's batched results now: a pull nested in this one needs them."""
        if self._batch:
            self._store_batch(self._batch)

    def _store_batch(self, batch: list[Result]) -> None:
        """Hand ``batch`` to the store, release its keys' claims and empty it."""
        try:
            self.store.insert_many(batch)
        finally:
            self.claims.release_batch(batch, self)
            if self.progress is not None:
                self.progress.tick(len(batch) - self._shown)
                self._shown = 0
            batch.clear()

    def _show_batched(self, count: int) -> float:
        """Show the bar ``count`` results of the batch being filled; when to show it next."""
        assert self.progress is not None  # _NEVER is never reached without a bar
        self.progress.tick(count - self._shown)
        self._shown = count
        return self.progress.due

    def run_node(self, n: Node) -> None:
        """Run ``n`` here (or reuse a result its inputs allow, or another pull produced)."""
        prepared = self.prepare(n)
        if prepared is None:
            return
        args, kwargs = prepared
        start = _perf()
        try:
            value = self.call(n, args, kwargs)
        except BaseException:
            self.release_claim(n)
            raise
        self.finish(n, value, _perf() - start)

    def prepare(self, n: Node) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Claim ``n`` for this pull and return its arguments, or None if it needs no run.

        None means the value is already in ``values``: backdated, or computed meanwhile by
        another pull of the same session (run-once across threads).
        """
        if n._verified_key is not None:
            old = backdate(n, self.store)
            if old is not MISSING:  # reused: the same object, now under the new key too
                self.store.count_misses(-1)  # planned as a miss, reused (a hit): not a run
                self.values[n._key] = old  # type: ignore[index]
                self.record.log.append((n, BACKDATED, ""))
                self.books.verified(n, changed=False)
                self._release(n)
                return None
        if n.options.cache:
            value = self._claim(n)
            if value is not MISSING:
                self.values[n._key] = value  # type: ignore[index]
                self.record.log.append((n, "hit", "memory"))
                if n._dependents is not None:
                    self.books.verified(n, changed=n._verified_key is not None)
                self._release(n)
                return None
        return self.arguments(n)

    def _claim(self, n: Node) -> Any:
        """Own ``n``'s key; MISSING, or the value another pull produced meanwhile."""
        k: bytes = n._key  # type: ignore[assignment]
        owner = self.claims.claim(k, self)
        if owner is self and self.claims.started == self._started_alone:
            value = MISSING  # no other pull since this one planned: nothing to re-check
        else:
            if owner is not self:
                nesting.check_not_waiting_on_itself(self, n, owner)  # CycleError (S7.2)
                self.claims.wait(k, self)
            value = self.store.find(k)[0]  # found: a hit, and the miss planned is no run
        if value is MISSING and self.shared and n.options.persist and n._persistable:
            value = self.store.lock_to_compute(k)  # another process's entry (S5.10)
        if value is not MISSING:
            self.store.count_misses(-1)
            self.release_claim(n)
        return value

    def release_claim(self, n: Node) -> None:
        """Give up ``n``'s key (finished or failed) and wake pulls waiting for it."""
        self.claims.release(n._key, self)  # type: ignore[arg-type]
        if self.shared:
            self.store.unlock(n._key)  # type: ignore[arg-type]

    def release_all_claims(self) -> None:
        """Give up every key this pull still owns (after an error or an interrupt)."""
        self.claims.release_all(self)
        self._end()

    def arguments(self, n: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``n``'s arguments with every dependency Node replaced by its value (by reference)."""
        if not n.deps:
            return n.args, n.kwargs
        values = self.values
        if n._nested:
            def value_of(d: Node) -> Any:
                return values[d._key]  # type: ignore[index]

            return (
                substitute(n.args, value_of, kind=Node),
                substitute(n.kwargs, value_of, kind=Node),
            )
        args = tuple([values[a._key] if isinstance(a, Node) else a for a in n.args])  # type: ignore[index]
        if not n.kwargs:
            return args, n.kwargs
        kwargs = {
            k: values[v._key] if isinstance(v, Node) else v  # type: ignore[index]
            for k, v in n.kwargs.items()
        }
        return args, kwargs

    def call(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``n``'s function; a CUDA out-of-memory error frees GPU entries and retries once."""
        try:
            value = n.func(*args, **kwargs)
        except Exception as exc:
            return self._failed(n, args, kwargs, exc)
        if hasattr(type(value), "__next__"):  # S2.6: a cached iterator comes back exhausted
            self._failed(n, args, kwargs, iterator_result(value))  # type: ignore[arg-type]
        return value

    def _failed(
        self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """After ``n`` raised ``exc``: retry once if it was a CUDA OOM, else raise NodeError.

        The caller's claim on ``n`` is released when this raises.
        """
        try:
            if not cuda.is_cuda_oom(exc):
                raise self.node_error(n, exc) from exc
            freed = self.store.release_cuda()
            log.warning(
                "node %s ran out of GPU memory; released %d bytes of cached tensors, "
                "retrying once",
                n.name,
                freed,
            )
            try:
                return n.func(*args, **kwargs)
            except Exception as again:
                raise self.node_error(n, again) from again
        except BaseException:
            self.release_claim(n)
            raise

    def finish(
        self,
        n: Node,
        value: Any,
        seconds: float,
        *,
        parts: tuple[tuple[Any, int, str], ...] | None = None,
        digest: bytes | None = None,
    ) -> None:
        """Take ``n``'s value: cache it, decide early cutoff, release finished inputs.

        ``parts`` (its footprint) and ``digest`` (its content hash) when the caller knows
        them: a result kept on a cluster (``store.cluster.Remote``) is neither sized nor
        hashed here.
        """
        k: bytes = n._key  # type: ignore[assignment]
        self.values[k] = value
        options = n.options
        if options.cache:
            if parts is None:
                parts = footprint(value)
            self.store.insert_many([(k, value, parts, seconds, options, n._persistable)])
            self.claims.release(k, self)
        elif n.func is not input_value:  # an Input's value is not a computation
            self.store.note_compute(options.name, seconds)
        if n._dependents is not None:
            same, digest = same_as_before(n, value, load=self.store.fetch, digest=digest)
            self.record.log.append((n, "ran", why(n, not same)))
            self.books.verified(n, changed=not same)
            if digest is not None:
                n._result_hash = digest
        else:
            # _verified_at is otherwise unused on a node that never goes stale: here it
            # tells a first computation from a recomputation after eviction.
            self.record.log.append((n, "ran", "new" if n._verified_at < 0 else "not cached"))
            n._verified_at = self.revision
        self._release(n)
        if self.progress is not None:
            self.progress.tick()

    def _release(self, n: Node) -> None:
        consumers, values, keep = self.consumers, self.values, self.keep
        for d in n.deps:
            dk = d._key
            left = consumers[dk] - 1  # type: ignore[index]
            if left or dk in keep:
                consumers[dk] = left  # type: ignore[index]
            else:
                del consumers[dk]  # type: ignore[arg-type]
                values.pop(dk, None)  # type: ignore[arg-type]

    # -- errors and the end --------------------------------------------------------------

    def node_error(self, n: Node, exc: BaseException, *, detail: str | None = None) -> NodeError:
        """A NodeError naming ``n`` and the path from the pulled node down to it."""
        path = [p.name for p in path_to(self.roots, n)]
        key = n._key.hex() if n._key is not None else None
        return NodeError(n.name, path, exc, key=key, detail=detail)

    def results(self) -> tuple[Any, ...]:
        """The values of the roots, in pull order; the pull lets go of every value."""
        try:
            results = tuple(self.values[r._key] for r in self.roots)  # type: ignore[index]
        finally:
            self._end()
        self.values.clear()
        self.consumers.clear()
        return results
