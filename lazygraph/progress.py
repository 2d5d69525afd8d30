"""The progress bar: nodes done / total, shown only once a pull has run about a second.

Covers: a cheap per-node ``tick`` that opens a tqdm bar (``tqdm.auto``: a widget in
notebooks) only when the pull turns out to be slow. Does not cover: what a node is.

>>> bar = Progress(total=3, delay=60.0)
>>> for _ in range(3):
...     bar.tick()
>>> bar.shown, bar.done
(False, 3)
>>> bar.close()
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts finished nodes; opens a tqdm bar after ``delay`` seconds."""

    def __init__(self, total: int, *, delay: float = 1.0, desc: str = "lazygraph") -> None:
        self.total = total
        self.done = 0
        self._delay = delay
        self._desc = desc
        self._start = time.perf_counter()
        self._bar: Any = None

    @property
    def shown(self) -> bool:
        """True once the bar has been drawn."""
        return self._bar is not None

    def tick(self, count: int = 1) -> None:
        """``count`` more nodes finished."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif time.perf_counter() - self._start >= self._delay:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=self._desc, unit="node")

    def close(self) -> None:
        """Close the bar if it was shown."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
