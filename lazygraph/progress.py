"""The progress bar: nodes done / total, shown only once a pull has run about a second.

Covers: a cheap per-node ``tick`` that opens a tqdm bar only when the pull turns out to be
slow, and ``due``, the time at which the bar wants its next update, so that a loop that
reports nodes in batches (the sync loop batches small results) can report by time as well:
the bar moves at least every ``interval`` seconds while nodes finish, whatever their size.
Which bar: a widget (``tqdm.notebook``) in a Jupyter kernel where ipywidgets is installed,
text (``tqdm.std``) everywhere else, notebooks without ipywidgets included. The choice is
made here, not by ``tqdm.auto``, which warns "IProgress not found" in that last case.
Does not cover: what a node is, or when a pull calls ``tick``.

>>> bar = Progress(total=3, delay=60.0)
>>> for _ in range(3):
...     bar.tick()
>>> bar.done
3
>>> bar.close()
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "bar_class"]

INTERVAL = 0.2  # seconds between updates asked of batching loops: "moves twice a second"


class Progress:
    """Counts finished nodes; opens a tqdm bar after ``delay`` seconds.

    ``due`` is the ``time.perf_counter()`` value after which the bar wants a ``tick`` even
    for nodes a loop has not reported yet (``tick(0)`` is fine): the time the bar may open,
    then every ``interval`` seconds.
    """

    def __init__(
        self,
        total: int,
        *,
        delay: float = 1.0,
        interval: float = INTERVAL,
        desc: str = "lazygraph",
    ) -> None:
        self.total = total
        self.done = 0
        self._delay = delay
        self._interval = interval
        self._desc = desc
        self._start = time.perf_counter()
        self.due = self._start + delay
        self._bar: Any = None

    def tick(self, count: int = 1) -> None:
        """``count`` more nodes finished."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        else:
            now = time.perf_counter()
            if now - self._start < self._delay:
                return
            # miniters=1: tqdm's own adaptive skipping would hide updates that come as
            # seldom as ours (they are already spaced by ``interval``).
            self._bar = bar_class()(
                total=self.total, initial=self.done, desc=self._desc, unit="node", miniters=1
            )
        self.due = time.perf_counter() + self._interval

    def close(self) -> None:
        """Close the bar if it was shown."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def bar_class() -> Any:
    """The tqdm class for this process: a widget in a Jupyter kernel with ipywidgets, else text.

    >>> bar_class().__module__
    'tqdm.std'
    """
    if "ipykernel" in sys.modules and _in_kernel():
        from tqdm.notebook import IProgress

        if IProgress is not None:  # ipywidgets is installed and new enough
            from tqdm.notebook import tqdm as widget

            return widget
    from tqdm.std import tqdm as text

    return text


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not a terminal IPython or a Qt console)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"
