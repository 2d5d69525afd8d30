"""The default executor: run the plan in order, in the calling thread.

Covers: ``SyncExecutor``, which hands the whole plan to the pull's own loop
(``Pull.run_all``, the hot path). Does not cover: the loop itself (``scheduler``) or
parallel execution (``threads``, ``processes``, ``dask``).

>>> import lazygraph
>>> @lazygraph.node
... def one():
...     return 1
>>> with lazygraph.Session(executor="sync"):
...     one().compute()
1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["SyncExecutor"]


class SyncExecutor:
    """Runs each planned node in dependency order in the caller's thread."""

    def run(self, pull: Pull) -> None:
        """Run every node of ``pull.order``."""
        pull.run_all()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "SyncExecutor()"
