"""One pull on a Dask cluster: waves of tasks out, results kept there, a few values back.

Covers: ``DaskRun``, the loop behind ``DaskExecutor.run``: turning planned nodes into Dask
tasks (keyed ``"<name>-<lazygraph key>"``, so equal work has one key and Dask runs it once,
even for two clients), referencing results the cluster already holds (``store.cluster``)
instead of sending them, scattering values only this process has, watching the tasks, and
finishing each node in dependency order (``Pull.finish``). Does not cover: finding the
client or the cluster tier (``executors.dask``) or what runs on the workers
(``executors.dask_worker``).

What comes back here. Results stay on the cluster: each finished node is handed to the
store as a ``Remote`` (its future), which the cluster tier keeps. Values travel to this
process only for the pulled nodes, for the inputs of nodes that run here
(``@node(local=True)``), and for persisted nodes when the workers cannot write the
``cache_dir`` themselves. Early cutoff needs no value either: a node whose result may be
compared later gets a second, tiny task that hashes the result on its worker
(``dask_worker.digest``), and only the 16-byte digest comes back. A node that may be
*backdated* (stale after an ``Input.set``) waits until its dependencies are finished,
since whether it runs at all depends on their digests.

Errors: a node error on the cluster raises the same ``NodeError`` as locally, naming the
node that failed (not a dependent that Dask failed with it), with the original exception
as ``__cause__``. Results finished before it are kept (on the cluster); this pull's other
tasks are released and Dask cancels what no one else needs. ``compute_seconds`` of a
cluster node is measured from here: from when its inputs were ready to when it was seen
done, an upper bound on the time the function took.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import LazyGraphError, NodeError
from ..node import Node
from ..store.base import MISSING
from ..store.cluster import ClusterTier, OnDisk, Remote
from . import dask_worker
from .dask_errors import failed, key_of, unsendable
from .pool import Readiness
from .processes import runs_here, template

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["DIGEST_PREFIX", "LOAD_PREFIX", "DaskRun", "dask_key"]

log = logging.getLogger(__name__)
_perf = time.perf_counter
DIGEST_PREFIX = "lgdigest-"
LOAD_PREFIX = "lgload-"
_CLUSTER_PARTS = ((None, 0, "cluster"),)  # a Remote costs this process nothing to hold


def dask_key(n: Node) -> str:
    """The Dask key of ``n``: its name and its lazygraph key, e.g. ``"load-3f2a..."``."""
    return f"{n.name}-{n.key}"


async def _nothing() -> None:
    """A coroutine that returns at once: run on Dask's loop, it waits for what was queued."""


def _release_all(futures: list[Any]) -> None:
    for future in futures:
        future.release()


def wants_digest(n: Node) -> bool:
    """Whether early cutoff may compare ``n``'s result later (``incremental.same_as_before``)."""
    return bool(n._dependents) and n.options.cutoff


class DaskRun:
    """One pull on the cluster. ``persist_dir``: the cache_dir the workers write, or None."""

    def __init__(self, pull: Pull, client: Any, *, tier: ClusterTier,
                 persist_dir: str | None) -> None:
        from distributed import as_completed

        self.pull, self.client, self.tier = pull, client, tier
        self.persist_dir = persist_dir
        if persist_dir is not None:
            pull.shared = False  # the workers lock persisted keys across processes themselves
        self.readiness = Readiness(pull.order)
        self.nodes: dict[bytes, Node] = {n._key: n for n in pull.order}  # type: ignore[misc]
        self.unsubmitted: list[Node] = [n for n in pull.order if not runs_here(n)]
        self.remote: dict[bytes, Any] = {}  # key -> this pull's Future (tasks, scattered values)
        self.held: dict[bytes, Any] = {}  # key -> Future the cluster tier holds (a hit)
        self.loading: dict[bytes, str] = {}  # key -> its loading task, in the wave being made
        self.digests: dict[bytes, Any] = {}  # key -> Future of its digest task
        self.submitted: set[bytes] = set()
        self.cleared: set[bytes] = set()  # prepared here, run on the cluster (may backdate)
        self.awaiting: set[bytes] = set()  # dependencies finished, result not collected yet
        self.arrived: dict[bytes, tuple[Any, Remote, float]] = {}
        self.submitted_at: dict[bytes, float] = {}
        self.available_at: dict[bytes, float] = {}  # finished on the cluster, or here
        self.unfetched: set[bytes] = set()  # submitted, not collected yet
        self.kept: list[Remote] = []  # handed to the cluster tier (sizes asked at the end)
        # finished results a node deciding here waits for (local, or one that may backdate)
        self.needed_here: set[bytes] = {
            d._key  # type: ignore[misc]
            for n in pull.order
            if runs_here(n) or n._verified_key is not None
            for d in n.deps
        }
        # values that must come to this process: the pulled nodes, a local node's inputs
        self.bring: set[bytes] = set(pull.keep)  # type: ignore[arg-type]
        self.bring.update(d._key for n in pull.order if runs_here(n) for d in n.deps)  # type: ignore[misc]
        if persist_dir is None and pull.session.config.cache_dir is not None:
            self.bring.update(k for k, n in self.nodes.items() if _persisted(n))
        self._load_here(persist_dir is None)
        self.finished: set[bytes] = set()
        self.wave_needed = True
        self.error: NodeError | None = None
        self.completed = as_completed(loop=client.loop)  # not Dask's default client

    def _load_here(self, every: bool) -> None:
        """Held results and entries on disk that this process needs (a local node's inputs)
        come here; entries on disk too when the workers cannot read them (``every``)."""
        values = self.pull.values
        for k, value in list(values.items()):
            if isinstance(value, Remote) and k in self.bring:
                found = self.tier.get(k)
            elif isinstance(value, OnDisk) and (every or k in self.bring):
                found = self.pull.store.get(k)
            else:
                continue
            if found is MISSING:
                raise LazyGraphError(f"the result {k.hex()} went away during a pull (a worker "
                                     "lost, or its entry removed); pull again to recompute it")
            values[k] = found

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
        """Ask the sizes of what the cluster tier keeps, then let go of this pull's futures."""
        self._report_sizes()
        futures = [*self.remote.values(), *self.digests.values()]
        self.remote.clear()
        self.digests.clear()
        loop = getattr(self.client, "loop", None)
        if futures and loop is not None and self.client.status == "running":
            # One hand-off to Dask's event loop, instead of one wake-up of it per future
            # (each release() from this thread schedules its own callback there).
            loop.add_callback(_release_all, futures)
            if self.error is not None:
                self._settle(len(futures))
        else:
            _release_all(futures)

    def _settle(self, count: int) -> None:
        """After a failure, wait until Dask's loop has let go of this pull's futures.

        A release is only queued there (and queues the key's release in turn); a retry
        submitted before it ran (the user fixed the input and pulled again) would share the
        failed tasks' keys, find their client-side state, and get the old error back. Two
        round trips through the loop: ``_release_all``, then the releases it queued.
        """
        try:
            for _ in range(2):
                self.client.sync(_nothing)
        except Exception as exc:  # a cluster going away: the retry will say so
            log.debug("could not wait for %d releases: %s", count, exc)

    def _report_sizes(self) -> None:
        """The bytes of each kept result, as the workers reported them (one request)."""
        kept = [r for r in self.kept if r.future.status == "finished"]
        self.kept = []
        if not kept or self.client.status != "running":
            return
        try:
            sizes = self.client.nbytes(keys=[r.future.key for r in kept], summary=False)
        except Exception as exc:  # sizes are bookkeeping: a lost answer costs accuracy only
            log.debug("could not ask the cluster for result sizes: %s", exc)
            return
        self.tier.resize({r.future.key: int(sizes.get(r.future.key, 0)) for r in kept})

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
        if not runs_here(n):
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
        """Take ``n``'s result (unless another pull produced it meanwhile)."""
        k: bytes = n._key  # type: ignore[assignment]
        value, held, seconds = self.arrived.pop(k)
        if k in self.cleared or self.pull.prepare(n) is not None:
            if value is held:  # stays on the cluster: the store's cluster tier keeps it
                self.kept.append(held)
                self.pull.finish(n, held, seconds, parts=_CLUSTER_PARTS, digest=held.digest)
            else:
                self.pull.finish(n, value, seconds)
                self.kept.append(held)
                self.tier.hold(k, held)  # also there, for later pulls on the cluster
        else:
            held.future.release()
        self._done(n)

    def _done(self, n: Node) -> None:
        self.finished.add(n._key)  # type: ignore[arg-type]
        self.available_at.setdefault(n._key, _perf())  # type: ignore[arg-type]
        if n._key not in self.remote:
            self.wave_needed = True  # dependents waiting for this value can go now
        self.readiness.done(n)

    # -- out: waves of tasks -------------------------------------------------------------

    def _submit_wave(self) -> None:
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
        wave = self._send_data(data)
        wave.update((dkey, self._task(dkey, n)) for dkey, n in nodes.items())
        hashed = self._digest_tasks(nodes, wave)
        try:
            futures = self.client.get(wave, list(wave), sync=False)
        except Exception as exc:
            raise unsendable(self.pull, nodes.values(), exc) from exc
        self._note_submitted(nodes, dict(zip(wave, futures, strict=True)), hashed)

    def _digest_tasks(self, nodes: dict[str, Node], wave: dict[str, Any]) -> dict[str, bytes]:
        """Add a hashing task for each node whose result stays there and may be compared."""
        from dask.task_spec import Task, TaskRef

        hashed = {}
        for dkey, n in nodes.items():
            if n._key not in self.bring and wants_digest(n):
                name = DIGEST_PREFIX + n.key
                wave[name] = Task(name, dask_worker.digest, TaskRef(dkey))
                hashed[name] = n._key
        return hashed  # type: ignore[return-value]

    def _note_submitted(self, nodes: dict[str, Node], futures: dict[str, Any],
                        hashed: dict[str, bytes]) -> None:
        now = _perf()
        inner = {d._key for n in nodes.values() for d in n.deps}
        watched = []
        for dkey, future in futures.items():
            if dkey in hashed:
                self.digests[hashed[dkey]] = future
                watched.append(future)
                continue
            if dkey.startswith(LOAD_PREFIX):
                self.remote[key_of(future)] = future  # loaded there: referenced, not collected
                continue
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
        if n._verified_key is not None and n._key not in self.cleared:
            return False
        needed: dict[bytes, Node] = {}
        for d in n.deps:
            dk: bytes = d._key  # type: ignore[assignment]
            if dk in self.submitted or dk in self.remote or dk in self.held or dk in self.loading:
                continue
            if dk in self.nodes and dk not in self.pull.values:
                return False  # planned and not finished yet
            needed[dk] = d
        data.update(needed)
        return True

    def _send_data(self, data: dict[bytes, Node]) -> dict[str, Any]:
        """Reference what the cluster holds, send values only this process has (once each);
        the tasks that load entries on the workers, for the wave."""
        from dask.task_spec import Task

        values = self.pull.values
        local = []
        loads: dict[str, Any] = {}
        for k in data:
            value = values[k]
            if isinstance(value, Remote):
                self.held[k] = value.future  # the cluster tier's: not released by this pull
            elif isinstance(value, OnDisk):
                name = LOAD_PREFIX + k.hex()
                loads[name] = Task(name, dask_worker.load_entry, self.persist_dir, k)
                self.loading[k] = name
            else:
                local.append(k)
        if not local:
            return loads
        # Fresh random keys, not the node's: a scatter is an RPC that can overtake the
        # release of the same key by an earlier pull (sent on the batched stream), and the
        # scheduler would then drop the new data as released.
        futures = self.client.scatter([values[k] for k in local], hash=False)
        self.remote.update(zip(local, futures, strict=True))
        return loads

    def _task(self, dkey: str, n: Node) -> Any:
        from dask.task_spec import Task, TaskRef

        def ref(d: Node) -> Any:
            dk: bytes = d._key  # type: ignore[assignment]
            future = self.remote.get(dk) or self.held.get(dk)
            if future is not None:
                return future
            if dk in self.loading:
                return TaskRef(self.loading[dk])
            # the planned node of that key names the task (another Node may share the key)
            return TaskRef(dask_key(self.nodes.get(dk, d)))

        func = dask_worker.checked(n.func)  # its tracebacks show the user's file (S7.1)
        head: tuple[Any, ...] = (func,)
        if self.persist_dir is not None and _persisted(n):
            head = (dask_worker.persisted_call, (self.persist_dir, n._key, n.name), func)
        if not n._nested and "_data_producer" not in n.kwargs:
            # Dependencies only at the top level, where Dask's Task resolves references:
            # no container to rebuild, so no ``substitute`` (the pull's fast path too).
            args = [ref(a) if isinstance(a, Node) else a for a in n.args]
            kwargs = {k: ref(v) if isinstance(v, Node) else v for k, v in n.kwargs.items()}
            return Task(dkey, *head, *args, **kwargs)
        # Nested: Task leaves references inside containers unresolved, so the worker fills
        # a template with the dependency values (keeping each container's type).
        args_t, kwargs_t = template(n)
        keys = tuple(d._key for d in n.deps)
        call = (*head[:-1], dask_worker.call_template, func)
        return Task(dkey, *call, args_t, kwargs_t, keys, *map(ref, n.deps))

    # -- back: results and errors --------------------------------------------------------

    def _receive(self, batch: list[Any]) -> None:
        """Note watched tasks that ended; collect results when needed, else all at once.

        A collection is a round trip, so results wait on the cluster until nothing watched
        is running, unless a node deciding here (local, or may backdate) needs one.
        """
        now = _perf()
        needed = False
        for future in batch:
            if future.status != "finished":
                if self.error is None:
                    self.error = failed(self.pull, self.nodes, self.remote, future)
                continue
            k = key_of(future)
            if not str(future.key).startswith(DIGEST_PREFIX):
                self.available_at[k] = now
            needed = needed or k in self.needed_here
        if needed or self.error is not None or self.completed.is_empty():
            self._collect()

    def _collect(self) -> None:
        """Bring back what must come here (values, digests) for every finished node; finish
        what can be finished, in dependency order."""
        ready = [k for k in self.unfetched if self._finished(k)]
        if not ready:
            return
        bring = [k for k in ready if k in self.bring]
        hashed = [k for k in ready if k in self.digests]
        got = self._gather([self.remote[k] for k in bring] + [self.digests[k] for k in hashed])
        values = dict(zip(bring, got, strict=False))
        digests = dict(zip(hashed, got[len(bring):], strict=True))
        self.unfetched.difference_update(ready)
        now = _perf()
        future_type = type(self.remote[ready[0]])
        for k in ready:
            n = self.nodes[k]
            # from when it could start (submitted, inputs ready) to when it was seen done
            inputs = [self.available_at.get(d._key, 0.0) for d in n.deps]  # type: ignore[arg-type]
            start = max([self.submitted_at[k], *inputs])
            done_at = self.available_at.setdefault(k, now)
            key = self.remote[k].key
            held = Remote(future_type(key, self.client), digest=digests.get(k))
            self.arrived[k] = (values.get(k, held), held, max(done_at - start, 0.0))
        for k in ready:
            if k in self.awaiting:
                self.awaiting.discard(k)
                self._finish(self.nodes[k])

    def _finished(self, k: bytes) -> bool:
        if self.remote[k].status != "finished":
            return False
        digest = self.digests.get(k)
        return digest is None or digest.status == "finished"

    def _gather(self, futures: list[Any]) -> list[Any]:
        if not futures:
            return []
        try:
            return list(self.client.gather(futures))
        except Exception:  # find which result cannot come back, and name its node
            values = []
            for future in futures:
                try:
                    values.append(self.client.gather(future))
                except Exception as exc:
                    n = self.nodes[key_of(future)]
                    detail = (
                        "its result could not be brought back from the Dask cluster "
                        f"({type(exc).__name__}: {exc})"
                    )
                    raise self.pull.node_error(n, exc, detail=detail) from exc
            return values

    def _wind_down(self) -> None:
        """After an error: keep the results that are finished, drop the rest."""
        try:
            self._collect()
        except NodeError as exc:
            log.debug("a result could not come back after the first error: %s", exc)
        self._drain_ready()


def _persisted(n: Node) -> bool:
    """Whether ``n``'s result goes to the cache_dir (given one, with persist on)."""
    options = n.options
    return options.cache and options.persist and n._persistable
