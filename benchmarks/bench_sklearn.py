"""scikit-learn's Pipeline(memory=...): joblib.Memory against lazygraph.Memory.

A grid search over dimensionality reductions (PCA, NMF, SelectKBest with chi2) feeding a
LinearSVC on the digits data set: 3 reducers x 3 sizes x 4 values of C, 5-fold
cross-validation. The reducers are fitted through the pipeline's memory, so each (reducer,
size, fold) is fitted once however many values of C are tried. Each memory runs the search
cold (empty cache), then warm (the same search again); the persisted lazygraph Memory also
runs warm from a new Memory on the same directory (a new process would do the same: its
memory is empty, the files are there). The scores of every run must be identical.

    python benchmarks/bench_sklearn.py            # the full grid, all of digits
    python benchmarks/bench_sklearn.py --quick    # 600 samples, 2 values of C, 3 folds

Prints one line per (memory, run) and the ratios joblib / lazygraph (above 1: lazygraph is
faster). Needs scikit-learn (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF, PCA
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

import lazygraph


def make_search(memory: Any, *, quick: bool) -> GridSearchCV:
    """The grid search: every reducer and size, each with every C, cross-validated."""
    pipe = Pipeline(
        [("reduce_dim", "passthrough"), ("classify", LinearSVC(dual=False, max_iter=10_000))],
        memory=memory,
    )
    sizes = [2, 4, 8]
    c_values = [1, 10] if quick else [1, 10, 100, 1000]
    grid = [
        {
            "reduce_dim": [
                PCA(iterated_power=7, random_state=0),  # seeded: every run fits the same
                NMF(max_iter=1_000, random_state=0),
            ],
            "reduce_dim__n_components": sizes,
            "classify__C": c_values,
        },
        {"reduce_dim": [SelectKBest(chi2)], "reduce_dim__k": sizes, "classify__C": c_values},
    ]
    return GridSearchCV(pipe, grid, cv=3 if quick else 5, n_jobs=1)


class TimedMemory:
    """A memory's ``cache()``, timing every cached call: the part of a search the memory
    decides (the classifier's fits after the reducer are the same work for every memory)."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory
        self.location = memory.location  # sklearn clones steps unless this is None
        self.seconds = 0.0

    def cache(self, func: Callable[..., Any], **options: Any) -> Callable[..., Any]:
        cached = self.memory.cache(func, **options)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return cached(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return call

    def __deepcopy__(self, memo: dict[int, Any]) -> TimedMemory:
        return self  # GridSearchCV clones the pipeline, memory included: keep one timer


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def scores(search: GridSearchCV) -> np.ndarray:
    return np.asarray(search.cv_results_["mean_test_score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid and data set")
    quick = parser.parse_args().quick
    X, y = load_digits(return_X_y=True)
    if quick:
        X, y = X[:600], y[:600]
    warnings.simplefilter("ignore")  # NMF's convergence warnings, the same for every run
    # One BLAS thread: the fits then take the same time in every run, whatever else the
    # machine is doing, and the difference left is the memory's.
    threadpool_limits(1)
    tmp = tempfile.mkdtemp(prefix="bench-sklearn-")
    times: dict[tuple[str, str], float] = {}
    in_cache: dict[tuple[str, str], float] = {}
    results: list[np.ndarray] = []

    def search(label: str, run: str, memory: Any) -> None:
        timer = None if memory is None else TimedMemory(memory)
        seconds, fitted = timed(lambda: make_search(timer, quick=quick).fit(X, y))
        times[label, run] = seconds
        in_cache[label, run] = 0.0 if timer is None else timer.seconds
        results.append(scores(fitted))
        print(f"{label:<22} {run:<18} {seconds:8.2f} s  in cached calls {in_cache[label, run]:7.3f}"
              f" s  best {fitted.best_score_:.4f}")

    try:
        if not quick:
            search("no memory", "cold", None)
        job = joblib.Memory(f"{tmp}/joblib", verbose=0)
        search("joblib.Memory(dir)", "cold", job)
        search("joblib.Memory(dir)", "warm", job)
        mem = lazygraph.Memory()
        search("lazygraph.Memory()", "cold", mem)
        search("lazygraph.Memory()", "warm", mem)
        mem.close()
        disk = lazygraph.Memory(f"{tmp}/lazygraph")
        search("lazygraph.Memory(dir)", "cold", disk)
        search("lazygraph.Memory(dir)", "warm", disk)
        disk.close()
        reopened = lazygraph.Memory(f"{tmp}/lazygraph")
        search("lazygraph.Memory(dir)", "warm, new Memory", reopened)
        reopened.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    identical = all(np.array_equal(results[0], r) for r in results[1:])
    print(f"\nscores identical across all runs: {identical}")
    print("ratios joblib / lazygraph (above 1: lazygraph faster): whole search | cached calls")
    pairs = [(label, run, run) for label in ("lazygraph.Memory()", "lazygraph.Memory(dir)")
             for run in ("cold", "warm")]
    pairs.append(("lazygraph.Memory(dir)", "warm, new Memory", "warm"))
    for label, run, theirs in pairs:
        whole = times["joblib.Memory(dir)", theirs] / times[label, run]
        cached = in_cache["joblib.Memory(dir)", theirs] / max(in_cache[label, run], 1e-9)
        print(f"  {label:<22} {run:<18} {whole:6.2f}x | {cached:7.2f}x")
    if not identical:
        raise SystemExit("the runs' scores differ")


if __name__ == "__main__":
    main()
