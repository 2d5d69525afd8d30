"""The Dask executor: hand the planned part of a graph to a ``dask.distributed`` cluster.

Covers: ``DaskExecutor(client=None)``: which Client it uses (the given one, else Dask's
current one, found the way ``dask.compute`` finds it), turning the plan into a Dask graph,
sending cached values as data, bringing results back into the local store, and errors.
Does not cover: scheduling, data transfer or worker memory (Dask does all of it: there is
no cluster code here) or the local pools (``threads``, ``processes``).

How a pull runs. Every planned node becomes one Dask task whose key is
``"<name>-<lazygraph key>"``, so equal work has one key and Dask computes it once, even when
two pulls (or two processes sharing the cluster) ask for it at the same time. Values the
pull already has (store hits, ``Input`` values, nodes marked ``@node(local=True)``, which run
here) are scattered to the cluster once per pull and referenced by the tasks that need them:
a cached result is never recomputed on the cluster. Results are gathered as they complete
and finished here in dependency order (``Pull.finish``), so they land in the local store
and a re-pull is served locally. The graph goes to Dask in one piece; only a node that may
be *backdated* (early cutoff after an ``Input.set``) waits until its dependencies are back,
since whether it runs at all depends on their results.

A node error on the cluster raises the same ``NodeError`` as locally, naming the node that
failed (not a dependent that Dask marked as failed with it), with the original exception
as ``__cause__``. On an error or an interrupt, this pull's tasks are released (Dask cancels
what no one else needs); results that already arrived stay cached. ``compute_seconds`` of a
node run on the cluster is measured from here: from when its inputs were ready to when its
result was known, an upper bound on the time the function took.

>>> import lazygraph
>>> ex = DaskExecutor()           # uses the current dask.distributed Client when it runs
>>> ex
DaskExecutor(client=None)
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, LazyGraphError, NodeError
from ..node import Node, _input_value
from .processes import fill, template
from .threads import Readiness

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["DaskExecutor", "dask_key"]

log = logging.getLogger(__name__)
_perf = time.perf_counter
_NO_CLIENT = (
    "executor='dask' needs a dask.distributed Client: create one before computing "
    "(from dask.distributed import Client; client = Client() or Client('tcp://scheduler:8786')) "
    "or pass executor=lazygraph.DaskExecutor(client)"
)


def dask_key(n: Node) -> str:
    """The Dask key of ``n``: its name and its lazygraph key, e.g. ``"load-3f2a..."``."""
    return f"{n.name}-{n.key}"


def _call_template(
    func: Any, args_t: Any, kwargs_t: Any, keys: tuple[Any, ...], *values: Any
) -> Any:
    """Run on a worker: fill the argument template with dependency values, call ``func``."""
    filled = dict(zip(keys, values, strict=True))
    return func(*fill(args_t, filled), **fill(kwargs_t, filled))


def _release_all(futures: list[Any]) -> None:
    for future in futures:
        future.release()


class DaskExecutor:
    """Runs pulls on a ``dask.distributed`` cluster; results land in the local store.

    ``client``: a ``distributed.Client``; None uses Dask's current client at each run
    (``distributed.get_client()``), and fails with a ``ConfigError`` if there is none.

    >>> from dask.distributed import Client, LocalCluster
    >>> import lazygraph
    >>> @lazygraph.node
    ... def inc(x):
    ...     return x + 1
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client, lazygraph.Session(progress=False) as s:
    ...         s.compute(inc(inc(1)), executor=DaskExecutor(client))
    (3,)
    """

    def __init__(self, client: Any = None) -> None:
        self.client = client

    def run(self, pull: Pull) -> None:
        """Run every node of ``pull.order`` on the cluster; raise the first ``NodeError``."""
        _DaskRun(pull, self._get_client()).run()

    def _get_client(self) -> Any:
        if self.client is not None:
            return self.client
        try:
            from distributed import get_client
        except ImportError as exc:
            raise ConfigError(
                "executor='dask' needs dask.distributed, which is not installed "
                "(pip install 'lazygraph[dask]')"
            ) from exc
        try:
            return get_client()
        except ValueError as exc:  # Dask's "No global client found"
            raise ConfigError(_NO_CLIENT) from exc

    def close(self) -> None:
        """Nothing to release: the client and its cluster belong to the caller."""

    def __repr__(self) -> str:
        return f"DaskExecutor(client={self.client!r})"


class _DaskRun:
    """One pull on the cluster: waves of tasks out, results back, finished in order."""

    def __init__(self, pull: Pull, client: Any) -> None:
        from distributed import as_completed

        self.pull = pull
        self.client = client
        self.readiness = Readiness(pull.order)
        self.nodes: dict[bytes, Node] = {n._key: n for n in pull.order}  # type: ignore[misc]
        self.unsubmitted: list[Node] = [n for n in pull.order if self._remote(n)]
        self.remote: dict[bytes, Any] = {}  # key -> Future: tasks submitted, values scattered
        self.submitted: set[bytes] = set()
        self.cleared: set[bytes] = set()  # prepared here, run on the cluster (may backdate)
        self.awaiting: set[bytes] = set()  # dependencies finished, result not back yet
        self.arrived: dict[bytes, tuple[Any, float]] = {}
        self.submitted_at: dict[bytes, float] = {}
        self.available_at: dict[bytes, float] = {}  # finished on the cluster, or here
        self.unfetched: set[bytes] = set()  # submitted, result not gathered yet
        # results a node running here (local, or one that may backdate) waits for
        self.needed_here: set[bytes] = {
            d._key  # type: ignore[misc]
            for n in pull.order
            if self._local(n) or self._may_backdate(n)
            for d in n.deps
        }
        self.finished: set[bytes] = set()
        self.wave_needed = True
        self.error: NodeError | None = None
        self.completed = as_completed(loop=client.loop)  # not Dask's default client

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._advance()
            while len(self.finished) < len(self.nodes) and self.error is None:
                if self.completed.is_empty():
                    left = len(self.nodes) - len(self.finished)
                    raise LazyGraphError(  # a bug in this module, not in the user's graph
                        f"the Dask executor has {left} nodes left and nothing running"
                    )
                self._receive(self.completed.next_batch(block=True))
                self._advance()
            if self.error is not None:
                self._wind_down()
                raise self.error
        finally:
            self._release()

    def _release(self) -> None:
        """Let go of this pull's tasks and data; Dask drops what no one else still wants."""
        futures = list(self.remote.values())
        self.remote.clear()
        loop = getattr(self.client, "loop", None)
        if futures and loop is not None and self.client.status == "running":
            # One hand-off to Dask's event loop, instead of one wake-up of it per future
            # (each release() from this thread schedules its own callback there).
            loop.add_callback(_release_all, futures)
        else:
            _release_all(futures)

    def _advance(self) -> None:
        """Submit what can go to the cluster, then handle what is ready here; repeat."""
        while True:
            if self.wave_needed and self.error is None:
                self.wave_needed = False
                self._submit_wave()  # first: a node ready here may be one to submit
            self._drain_ready()  # may run local nodes, and so need another wave
            if not self.wave_needed or self.error is not None:
                return

    # -- which node does what ------------------------------------------------------------

    @staticmethod
    def _local(n: Node) -> bool:
        return n.options.local or n.func is _input_value

    @staticmethod
    def _may_backdate(n: Node) -> bool:
        return n._prev_key is not None

    def _remote(self, n: Node) -> bool:
        return not self._local(n)

    def _drain_ready(self) -> None:
        """Handle nodes whose planned dependencies have all finished."""
        ready = self.readiness.ready
        while ready:
            n = ready.pop()
            k: bytes = n._key  # type: ignore[assignment]
            if k in self.arrived:
                self._finish(n)
            elif k in self.submitted:
                self.awaiting.add(k)
            elif self.error is None:
                self._start_here(n)

    def _start_here(self, n: Node) -> None:
        """A local node runs now; a node that may backdate is prepared, then submitted."""
        pull = self.pull
        prepared = pull.prepare(n)
        if prepared is None:
            self._done(n)
            return
        if not self._local(n):
            self.cleared.add(n._key)  # type: ignore[arg-type]
            self.awaiting.add(n._key)  # type: ignore[arg-type]
            self.wave_needed = True
            return
        start = _perf()
        try:
            value = pull.call(n, *prepared)
        except NodeError as exc:
            pull.release_claim(n)
            self.error = self.error or exc
            return
        except BaseException:
            pull.release_claim(n)
            raise
        pull.finish(n, value, _perf() - start)
        self._done(n)

    def _finish(self, n: Node) -> None:
        """Take ``n``'s result from the cluster (unless another pull produced it meanwhile)."""
        k: bytes = n._key  # type: ignore[assignment]
        value, seconds = self.arrived.pop(k)
        if k in self.cleared or self.pull.prepare(n) is not None:
            self.pull.finish(n, value, seconds)
        self._done(n)

    def _done(self, n: Node) -> None:
        self.finished.add(n._key)  # type: ignore[arg-type]
        self.available_at.setdefault(n._key, _perf())  # type: ignore[arg-type]
        if n._key not in self.remote:
            self.wave_needed = True  # dependents waiting for this value can go now
        self.readiness.done(n)

    # -- out: waves of tasks -------------------------------------------------------------

    def _submit_wave(self) -> None:
        wave: dict[str, Any] = {}
        nodes: dict[str, Node] = {}
        keep: list[Node] = []
        data: dict[bytes, Node] = {}
        for n in self.unsubmitted:
            if n._key in self.finished:
                continue  # backdated, or produced by another pull: nothing to run
            if not self._can_submit(n, data):
                keep.append(n)
                continue
            self.submitted.add(n._key)  # type: ignore[arg-type]
            nodes[dask_key(n)] = n
        self.unsubmitted = keep
        if not nodes:
            return
        self._scatter(data)
        for dkey, n in nodes.items():
            wave[dkey] = self._task(dkey, n)
        try:
            futures = self.client.get(wave, list(wave), sync=False)
        except Exception as exc:
            raise self._unsendable(nodes, exc) from exc
        now = _perf()
        inner = {d._key for n in nodes.values() for d in n.deps}
        watched = []
        for dkey, future in zip(wave, futures, strict=True):
            k: bytes = nodes[dkey]._key  # type: ignore[assignment]
            self.remote[k] = future
            self.submitted_at[k] = now
            self.unfetched.add(k)
            if k not in inner or k in self.needed_here:
                watched.append(future)
        # Watch only the wave's last tasks (and those a node here waits for): when they are
        # done, so is everything before them, and a failure reaches them. Watching every
        # task would cost a callback and a wake-up of Dask's event loop per task.
        self.completed.update(watched)

    def _can_submit(self, n: Node, data: dict[bytes, Node]) -> bool:
        """True if every planned dependency is submitted or finished (values go as data)."""
        k = n._key
        if self._may_backdate(n) and k not in self.cleared:
            return False
        needed: dict[bytes, Node] = {}
        for d in n.deps:
            dk: bytes = d._key  # type: ignore[assignment]
            if dk in self.submitted or dk in self.remote:
                continue
            if dk in self.nodes and dk not in self.pull.values:
                return False  # planned and not finished yet
            needed[dk] = d
        data.update(needed)
        return True

    def _scatter(self, data: dict[bytes, Node]) -> None:
        """Send values this pull already has to the cluster, once each."""
        if not data:
            return
        keys = list(data)
        values = self.pull.values
        # Fresh random keys, not the node's: a scatter is an RPC that can overtake the
        # release of the same key by an earlier pull (sent on the batched stream), and the
        # scheduler would then drop the new data as released.
        futures = self.client.scatter([values[k] for k in keys], hash=False)
        self.remote.update(zip(keys, futures, strict=True))

    def _task(self, dkey: str, n: Node) -> Any:
        from dask.task_spec import Task, TaskRef

        def ref(d: Node) -> Any:
            future = self.remote.get(d._key)  # type: ignore[arg-type]
            if future is not None:
                return future
            # the planned node of that key names the task (another Node may share the key)
            return TaskRef(dask_key(self.nodes.get(d._key, d)))  # type: ignore[arg-type]

        if not n._nested and "_data_producer" not in n.kwargs:
            args = [ref(a) if isinstance(a, Node) else a for a in n.args]
            kwargs = {k: ref(v) if isinstance(v, Node) else v for k, v in n.kwargs.items()}
            return Task(dkey, n.func, *args, **kwargs)
        args_t, kwargs_t = template(n)
        keys = tuple(d._key for d in n.deps)
        return Task(dkey, _call_template, n.func, args_t, kwargs_t, keys, *map(ref, n.deps))

    def _unsendable(self, nodes: dict[str, Node], exc: Exception) -> NodeError:
        """A NodeError naming the node whose task could not be sent (pickled), if found."""
        import cloudpickle

        culprit = next(iter(nodes.values()))
        for n in nodes.values():
            try:
                cloudpickle.dumps((n.func, n.args, n.kwargs))
            except Exception:
                culprit = n
                break
        detail = (
            f"its task could not be sent to the Dask cluster ({type(exc).__name__}: {exc}); "
            "mark the node @node(local=True) to run it in this process"
        )
        return self.pull.node_error(culprit, exc, detail=detail)

    # -- back: results and errors --------------------------------------------------------

    def _receive(self, batch: list[Any]) -> None:
        """Note watched tasks that ended; bring results back when needed, else all at once.

        A gather is a round trip, so results wait on the cluster until nothing watched is
        running, unless a node that runs here (local, or deciding early cutoff) needs one.
        """
        now = _perf()
        needed = False
        for future in batch:
            if future.status != "finished":
                if self.error is None:
                    self.error = self._node_error(future)
                continue
            k = self._key_of(future)
            self.available_at[k] = now
            needed = needed or k in self.needed_here
        if needed or self.error is not None or self.completed.is_empty():
            self._fetch()

    def _fetch(self) -> None:
        """Gather every finished, not yet gathered result; finish what can be finished."""
        remote = self.remote
        keys = [k for k in self.unfetched if remote[k].status == "finished"]
        if not keys:
            return
        values = self._gather([remote[k] for k in keys])
        self.unfetched.difference_update(keys)
        now = _perf()
        for k, value in zip(keys, values, strict=True):
            n = self.nodes[k]
            # from when it could start (submitted, inputs ready) to when it was seen done
            ready = [self.available_at.get(d._key, 0.0) for d in n.deps]  # type: ignore[arg-type]
            start = max([self.submitted_at[k], *ready])
            done_at = self.available_at.setdefault(k, now)
            self.arrived[k] = (value, max(done_at - start, 0.0))
        for k in keys:
            if k in self.awaiting:
                self.awaiting.discard(k)
                self._finish(self.nodes[k])

    def _gather(self, futures: list[Any]) -> list[Any]:
        try:
            return list(self.client.gather(futures))
        except Exception:  # find which result cannot come back, and name its node
            values = []
            for future in futures:
                try:
                    values.append(self.client.gather(future))
                except Exception as exc:
                    n = self.nodes[self._key_of(future)]
                    detail = (
                        "its result could not be brought back from the Dask cluster "
                        f"({type(exc).__name__}: {exc})"
                    )
                    raise self.pull.node_error(n, exc, detail=detail) from exc
            return values

    def _key_of(self, future: Any) -> bytes:
        return bytes.fromhex(future.key.rsplit("-", 1)[1])

    def _node_error(self, future: Any) -> NodeError:
        """The NodeError of the node that failed first (Dask fails its dependents too)."""
        n = self.nodes[self._key_of(future)]
        while True:
            for d in n.deps:
                dep_future = self.remote.get(d._key)  # type: ignore[arg-type]
                if d._key in self.nodes and dep_future is not None and dep_future.status == "error":
                    n, future = self.nodes[d._key], dep_future
                    break
            else:
                break
        if future.status != "error":
            exc: BaseException = RuntimeError(f"Dask task {future.key!r} was {future.status}")
            detail = f"its task on the Dask cluster was {future.status} (by another client?)"
            error = self.pull.node_error(n, exc, detail=detail)
            error.__cause__ = exc
            return error
        exc = future.exception()
        tb = future.traceback()
        if tb is not None:
            exc = exc.with_traceback(tb)
        error = self.pull.node_error(n, exc)
        error.__cause__ = exc
        return error

    def _wind_down(self) -> None:
        """After an error: keep the results that are ready, drop the rest."""
        try:
            self._fetch()
        except NodeError as exc:
            log.debug("a result could not come back after the first error: %s", exc)
        self._drain_ready()
