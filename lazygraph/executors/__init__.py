"""Executors: who runs the nodes of a pull (this thread, a thread pool, processes, Dask).

Every executor has ``run(pull)`` and ``close()``. ``run`` must leave every node of
``pull.order`` finished (``pull.run_node`` or ``pull.finish``) or raise; ``close`` releases
pools and is idempotent. ``resolve_executor`` turns a name into an instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from .sync import SyncExecutor

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["Executor", "SyncExecutor", "make_executor", "EXECUTOR_NAMES"]

EXECUTOR_NAMES = ("sync", "threads", "processes", "dask")


class Executor(Protocol):
    """Runs the planned nodes of a pull."""

    def run(self, pull: Pull) -> None: ...

    def close(self) -> None: ...


def make_executor(name: str, *, workers: int) -> Any:
    """A new executor for ``name`` ("sync", "threads", "processes" or "dask")."""
    if name == "sync":
        return SyncExecutor()
    if name == "threads":
        from .threads import ThreadExecutor

        return ThreadExecutor(workers=workers)
    if name == "processes":
        from .processes import ProcessExecutor

        return ProcessExecutor(workers=workers)
    if name == "dask":
        from .dask import DaskExecutor

        return DaskExecutor()
    raise ConfigError(
        f"executor must be one of {', '.join(map(repr, EXECUTOR_NAMES))} or an executor "
        f"object (got {name!r})"
    )
