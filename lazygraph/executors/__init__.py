"""Executors: who runs the nodes of a pull (this thread, a thread pool, processes, Dask).

One module per executor (``sync``, ``threads``, ``processes``, ``dask``); ``pool`` is the
loop the pool executors share, ``transport`` how big values cross a process boundary, and
``registry`` names the executors and makes one by name. This face only re-exports that.
"""

from .registry import EXECUTOR_NAMES, Executor, make_executor

__all__ = ["EXECUTOR_NAMES", "Executor", "make_executor"]
