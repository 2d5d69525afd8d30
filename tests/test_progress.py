"""The progress bar moves while a pull runs (SPEC S8.4, issue 16).

- A pull of 0.25 s nodes with small results (which the sync loop hands to the store in
  batches) shows the bar moving at least twice a second once it is open, not only at the end.
- The bar stays closed on a quick pull, and ``progress=False`` shows nothing.
- Outside a Jupyter kernel the bar is tqdm's text bar (the notebook choices are tested with a
  real kernel in test_notebook.py).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import lazygraph
from lazygraph import progress


class Recorder:
    """A stderr that remembers when each write happened."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.writes.append((time.perf_counter(), text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _pull(nodes: int, seconds: float, *, progress: bool) -> tuple[Recorder, float, float]:
    @lazygraph.node
    def slow(i: int) -> int:
        time.sleep(seconds)
        return i

    @lazygraph.node
    def total(parts: list[int]) -> int:
        return sum(parts)

    recorder = Recorder()
    real = sys.stderr
    sys.stderr = recorder  # type: ignore[assignment]
    try:
        with lazygraph.Session(progress=progress) as session:
            start = time.perf_counter()
            assert session.compute(total([slow(i) for i in range(nodes)]))[0] == sum(range(nodes))
            end = time.perf_counter()
    finally:
        sys.stderr = real
    return recorder, start, end


def _updates(recorder: Recorder, end: float) -> list[tuple[float, int]]:
    """(time, nodes done) of each bar refresh before the pull ended."""
    shown = []
    for at, text in recorder.writes:
        for frame in text.split("\r"):
            head = frame.partition("|")[2] or frame
            for word in head.split():
                if "/" in word and word.split("/")[0].isdigit():
                    shown.append((at, int(word.split("/")[0])))
                    break
    return [(at, done) for at, done in shown if at < end]


def test_the_bar_moves_twice_a_second_while_small_results_are_batched() -> None:
    recorder, start, end = _pull(12, 0.25, progress=True)
    updates = _updates(recorder, end)
    assert updates, f"no bar before the end: {recorder.writes!r}"
    first = updates[0][0]
    assert first - start < 1.6  # opens after about a second
    counts = [done for _, done in updates]
    assert counts == sorted(counts) and len(set(counts)) >= 5, counts
    times = [at for at, _ in updates] + [end]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 0.5, gaps  # moves at least twice a second until the end


def test_a_quick_pull_shows_no_bar_and_progress_false_none() -> None:
    recorder, _, _ = _pull(20, 0.0, progress=True)
    assert not recorder.writes
    recorder, _, _ = _pull(6, 0.25, progress=False)
    assert not recorder.writes


def test_outside_a_kernel_the_bar_is_text() -> None:
    assert progress.bar_class().__module__ == "tqdm.std"


def test_due_moves_with_each_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Any] = []

    class FakeBar:
        def __init__(self, **kwargs: Any) -> None:
            self.n = kwargs["initial"]
            bars.append(self)

        def update(self, count: int) -> None:
            self.n += count

        def close(self) -> None:
            pass

    monkeypatch.setattr("lazygraph.progress.bar_class", lambda: FakeBar)
    bar = progress.Progress(10, delay=0.0, interval=0.2)
    before = time.perf_counter()
    bar.tick(3)
    assert bars and bars[0].n == 3 and bar.due >= before + 0.2
    bar.tick(0)
    bar.tick(2)
    assert bars[0].n == 5 and len(bars) == 1
    bar.close()
