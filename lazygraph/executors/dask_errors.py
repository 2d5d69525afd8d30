"""Naming the node behind a failure on a Dask cluster.

Covers: the ``NodeError`` for a task that failed (the node that failed first, not a
dependent Dask failed with it; the worker's exception as ``__cause__`` with its traceback),
for a task that could not be sent (pickled), and the lazygraph key behind a Dask key.
Does not cover: deciding what to do after an error (``executors.dask_run``).

>>> class F:
...     key = "load-" + "ab" * 16
>>> key_of(F()) == bytes.fromhex("ab" * 16)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import NodeError
from ..node import Node

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["failed", "key_of", "unsendable"]


def key_of(future: Any) -> bytes:
    """The lazygraph key in a Dask key (``"<name>-<key hex>"``, also the hashing and
    loading tasks' ``"lgdigest-<key hex>"``, ``"lgload-<key hex>"``)."""
    return bytes.fromhex(str(future.key).rsplit("-", 1)[1])


def unsendable(pull: Pull, nodes: Iterable[Node], exc: Exception) -> NodeError:
    """A NodeError naming the node whose task could not be sent (pickled), if found."""
    import cloudpickle

    candidates = list(nodes)
    culprit = candidates[0]
    for n in candidates:
        try:
            cloudpickle.dumps((n.func, n.args, n.kwargs))
        except Exception:
            culprit = n
            break
    detail = (
        f"its task could not be sent to the Dask cluster ({type(exc).__name__}: {exc}); "
        "mark the node @node(local=True) to run it in this process"
    )
    return pull.node_error(culprit, exc, detail=detail)


def failed(
    pull: Pull, nodes: dict[bytes, Node], remote: dict[bytes, Any], future: Any
) -> NodeError:
    """The NodeError of the node that failed first, given a failed task ``future`` of the
    pull's ``nodes`` (key -> Node) and its futures by key (``remote``)."""
    k = key_of(future)
    if k not in nodes:  # an entry that failed to load on a worker: name its reader
        n = next(n for n in nodes.values() if any(d._key == k for d in n.deps))
        return pull.node_error(n, future.exception(),
                               detail="an input's entry on disk could not be loaded on a worker")
    n = nodes[k]
    future = remote.get(k, future)
    while True:
        for d in n.deps:
            dep_future = remote.get(d._key)  # type: ignore[arg-type]
            if d._key in nodes and dep_future is not None and dep_future.status == "error":
                n, future = nodes[d._key], dep_future
                break
        else:
            break
    if future.status != "error":
        exc: BaseException = RuntimeError(f"Dask task {future.key!r} was {future.status}")
        detail = f"its task on the Dask cluster was {future.status} (by another client?)"
        error = pull.node_error(n, exc, detail=detail)
        error.__cause__ = exc
        return error
    exc = future.exception()
    tb = future.traceback()
    if tb is not None:
        exc = exc.with_traceback(tb)
    error = pull.node_error(n, exc)
    error.__cause__ = exc
    return error
