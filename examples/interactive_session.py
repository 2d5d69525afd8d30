"""An interactive session, replayed: change a parameter, edit a function, see what reran.

A notebook is simulated by running "cells" (source strings) in one shared namespace, the
way Jupyter does. The pipeline reads its settings from one ``params`` Input (a dict),
loads a noisy signal, smooths it, finds the samples above a threshold and summarizes them.
We then

1. change the threshold (peaks and summary rerun; load and smooth are cut off because the
   seed they read did not change),
2. change only the title (everything but the summary is cut off),
3. edit the smoothing function and re-run its cell (the nodes built from the new code
   recompute; a result built before the edit keeps its old value),
4. change the threshold and set it back before pulling (nothing runs),

printing ``explain()`` after each step.

    python examples/interactive_session.py
"""

from __future__ import annotations

import textwrap

import lazygraph

CELL_1 = """
import numpy as np
from lazygraph import Input, node

params = Input({"seed": 0, "threshold": 0.5, "title": "first look"}, name="params")

def setting(name):
    # one small node per field: when another field changes, its result does not
    return node(name=name)(lambda params: params[name])

seed, threshold, title = (setting(n)(params) for n in ("seed", "threshold", "title"))

@node
def load(seed):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 20, 200_000)
    return np.sin(t) + 0.3 * rng.standard_normal(t.size)

@node
def smooth(signal, width=501):
    kernel = np.ones(width) / width
    return np.convolve(signal, kernel, mode="same")

@node
def peaks(smoothed, threshold):
    return np.flatnonzero(smoothed > threshold)

@node
def summary(idx, title):
    return f"{title}: {idx.size} samples above the threshold"

result = summary(peaks(smooth(load(seed)), threshold), title)
"""

CELL_EDIT = """
@node
def smooth(signal, width=501):
    kernel = np.hanning(width)            # edited: a Hann window instead of a box
    return np.convolve(signal, kernel / kernel.sum(), mode="same")

result = summary(peaks(smooth(load(seed)), threshold), title)
"""


def run_cell(namespace: dict, source: str) -> None:
    """Execute ``source`` in the notebook namespace, like a cell."""
    exec(textwrap.dedent(source), namespace)


def show(title: str, namespace: dict) -> None:
    """Pull the current result and print it with the explanation of what happened."""
    result = namespace["result"]
    value = result.compute()
    print(f"\n## {title}\n{value}")
    print(result.explain())


def main() -> None:
    notebook: dict = {"__name__": "__main__"}
    with lazygraph.Session(progress=False) as session:
        run_cell(notebook, CELL_1)
        params = notebook["params"]
        show("first run: everything is new", notebook)

        params.set({**params.value, "threshold": 0.8})
        show("threshold 0.5 -> 0.8: peaks and summary rerun, load and smooth do not", notebook)

        params.set({**params.value, "title": "second look"})
        show("only the title changed: the summary reruns, the rest is cut off", notebook)

        before_edit = notebook["result"]
        run_cell(notebook, CELL_EDIT)
        show("smooth edited and its cell re-run: the nodes built from it recompute", notebook)
        print("\nthe result built before the edit keeps its value:", before_edit.compute())

        params.set({**params.value, "threshold": 0.1})
        params.set({**params.value, "threshold": 0.8})  # and back, before any pull
        show("threshold changed and set back: nothing runs", notebook)
        print(f"\n{session.stats().computes} function calls in the whole session")


if __name__ == "__main__":
    main()
