"""scikit-learn's Pipeline(memory=...): joblib.Memory against lazygraph.Memory.

The search of scikit-learn's gallery example "Selecting dimensionality reduction with
Pipeline and GridSearchCV" (``compose/plot_compare_reduction.py``), as its caching section
runs it: ``Pipeline([reduce_dim, classify=LinearSVC(dual=False, max_iter=10000)],
memory=...)`` on the digits data; the grid tries PCA(iterated_power=7) and
NMF(max_iter=1000) with 2, 4 or 8 components and SelectKBest(mutual_info_classif) keeping
2, 4 or 8 features, each with C in 1, 10, 100, 1000 (36 candidates), GridSearchCV with
5-fold cross-validation and n_jobs=1. One change, so that every run computes the same
thing: PCA, NMF (its NNDSVD start runs a randomized SVD) and mutual_info_classif are seeded
with random_state=0, where the gallery leaves them random.

The memory caches the reducers only: each (reducer, size, fold) is fitted once however
many values of C are tried. The LinearSVC fits and the scoring are not cached by any
memory: they are the same work on every side, and on a warm run they are most of it. So
each run prints its total and the seconds spent in the memory (``cache()`` and the cached
calls), wall-clock and CPU (the CPU seconds move less on a shared machine), and the ratios
are given for both.

Each memory runs the search cold (empty cache; ``--cold`` rounds), then warm (the same
search again; ``--warm`` rounds); medians are shown. The persisted lazygraph Memory also
runs warm from a new Memory on the same directory (a new process would do the same: its
memory is empty, the files are there). best_params_ and every mean_test_score must be
identical in every run.

    python benchmarks/bench_sklearn.py            # the full grid, all of digits
    python benchmarks/bench_sklearn.py --plain    # also the search without a memory
    python benchmarks/bench_sklearn.py --quick    # 600 samples, 2 values of C, 3 folds

Needs scikit-learn (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import functools
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
from sklearn.feature_selection import SelectKBest, mutual_info_classif
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

import lazygraph


def make_search(memory: Any, *, quick: bool) -> GridSearchCV:
    """The gallery's grid search: every reducer and size, each with every C."""
    pipe = Pipeline(
        [("reduce_dim", PCA()), ("classify", LinearSVC(dual=False, max_iter=10_000))],
        memory=memory,
    )
    sizes = [2, 4, 8]
    c_values = [1, 10] if quick else [1, 10, 100, 1000]
    mutual_info = functools.partial(mutual_info_classif, random_state=0)
    grid = [
        {
            "reduce_dim": [
                PCA(iterated_power=7, random_state=0),
                NMF(max_iter=1_000, random_state=0),
            ],
            "reduce_dim__n_components": sizes,
            "classify__C": c_values,
        },
        {"reduce_dim": [SelectKBest(mutual_info)], "reduce_dim__k": sizes,
         "classify__C": c_values},
    ]
    return GridSearchCV(pipe, grid, cv=3 if quick else 5, n_jobs=1)


def now() -> np.ndarray:
    """Wall-clock and CPU seconds (this process, all its threads). On a shared machine the
    CPU seconds move less: a process waiting for a core is not charged for the wait."""
    return np.array([time.perf_counter(), time.process_time()])


class TimedMemory:
    """A memory whose ``cache()`` and cached calls are timed: the part of a search the
    memory decides (the classifier's fits and the scoring are the same on every side)."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory
        self.location = memory.location  # sklearn clones steps unless this is None
        self.seconds = np.zeros(2)

    def cache(self, func: Callable[..., Any], **options: Any) -> Callable[..., Any]:
        start = now()
        cached = self.memory.cache(func, **options)
        self.seconds += now() - start

        def call(*args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                return cached(*args, **kwargs)
            finally:
                self.seconds += now() - start

        return call

    def __deepcopy__(self, memo: dict[int, Any]) -> TimedMemory:
        return self  # GridSearchCV clones the pipeline, memory included: keep one timer


class Runs:
    """Every run's seconds (whole search, in the memory; each wall and CPU) and results."""

    def __init__(self, X: Any, y: Any, *, quick: bool) -> None:
        self.X, self.y, self.quick = X, y, quick
        self.total: dict[tuple[str, str], list[np.ndarray]] = {}
        self.cached: dict[tuple[str, str], list[np.ndarray]] = {}
        self.results: list[tuple[str, np.ndarray]] = []

    def search(self, label: str, run: str, memory: Any) -> None:
        timer = None if memory is None else TimedMemory(memory)
        start = now()
        fitted = make_search(timer, quick=self.quick).fit(self.X, self.y)
        total = now() - start
        cached = np.zeros(2) if timer is None else timer.seconds
        self.total.setdefault((label, run), []).append(total)
        self.cached.setdefault((label, run), []).append(cached)
        self.results.append((repr(fitted.best_params_), scores(fitted)))
        print(f"{label:<22} {run:<17} {total[0]:6.2f} s (CPU {total[1]:6.2f})   in the memory "
              f"{cached[0]:6.3f} s (CPU {cached[1]:6.3f})   best {fitted.best_score_:.4f}",
              flush=True)

    def median(self, label: str, run: str) -> tuple[np.ndarray, np.ndarray]:
        """Medians of (wall, CPU): the whole search, and in the memory."""
        return (np.median(self.total[label, run], axis=0),
                np.median(self.cached[label, run], axis=0))

    def identical(self) -> bool:
        params, first = self.results[0]
        return all(p == params and np.array_equal(first, s) for p, s in self.results[1:])


LABELS = ("joblib.Memory(dir)", "lazygraph.Memory()", "lazygraph.Memory(dir)")


def scores(search: GridSearchCV) -> np.ndarray:
    return np.asarray(search.cv_results_["mean_test_score"])


def run_all(runs: Runs, tmp: str, *, plain: bool, cold: int, warm: int) -> None:
    """Cold rounds (each on empty caches), then warm rounds on the last round's caches;
    the sides take turns in each round, so a busy moment of the machine hits every side."""
    if plain:
        runs.search("no memory", "cold", None)
    memories: list[Any] = []
    for round_ in range(cold):
        close(memories)
        where = f"{tmp}/{round_}"
        memories = [joblib.Memory(f"{where}/joblib", verbose=0), lazygraph.Memory(),
                    lazygraph.Memory(f"{where}/lazygraph")]
        for label, memory in zip(LABELS, memories, strict=True):
            runs.search(label, "cold", memory)
    for _ in range(warm):
        for label, memory in zip(LABELS, memories, strict=True):
            runs.search(label, "warm", memory)
        reopened = lazygraph.Memory(f"{tmp}/{cold - 1}/lazygraph")
        runs.search(LABELS[2], "warm, new Memory", reopened)
        reopened.close()
    close(memories)


def close(memories: list[Any]) -> None:
    for memory in memories:
        if isinstance(memory, lazygraph.Memory):
            memory.close()


def report(runs: Runs) -> None:
    print("\nmedians, seconds: wall (CPU)")
    print(f"  {'':<40} {'whole search':>15} {'in the memory':>17} {'rest':>15}")
    for label, run in runs.total:
        total, cached = runs.median(label, run)
        rest = total - cached
        print(f"  {label + ' ' + run:<40} {total[0]:6.2f} ({total[1]:6.2f}) "
              f"{cached[0]:7.3f} ({cached[1]:7.3f}) {rest[0]:6.2f} ({rest[1]:6.2f})")
    pairs = [(label, run, run) for label in LABELS[1:] for run in ("cold", "warm")]
    pairs.append((LABELS[2], "warm, new Memory", "warm"))
    print("\nratios joblib / lazygraph, wall (CPU); above 1: lazygraph faster. The bound is")
    print("the whole-search ratio lazygraph would reach if its memory cost nothing.")
    print(f"  {'':<40} {'whole search':>15} {'in the memory':>17} {'bound':>15}")
    for label, run, theirs in pairs:
        job_total, job_cached = runs.median(LABELS[0], theirs)
        total, cached = runs.median(label, run)
        whole, memory = job_total / total, job_cached / np.maximum(cached, 1e-9)
        bound = job_total / (total - cached)  # cold: the fits are in the memory's time
        shown = f"{bound[0]:6.2f}x ({bound[1]:5.2f}x)" if run != "cold" else f"{'-':>15}"
        print(f"  {label + ' ' + run:<40} {whole[0]:6.2f}x ({whole[1]:5.2f}x) "
              f"{memory[0]:7.2f}x ({memory[1]:6.2f}x) {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid and data set")
    parser.add_argument("--plain", action="store_true", help="also search without a memory")
    parser.add_argument("--cold", type=int, default=1, help="cold runs per memory")
    parser.add_argument("--warm", type=int, default=3, help="warm runs per memory")
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    if args.quick:
        X, y = X[:600], y[:600]
    warnings.simplefilter("ignore")  # NMF's convergence warnings, the same for every run
    # One BLAS thread: the fits then take the same time in every run, whatever else the
    # machine is doing, and the difference left is the memory's.
    threadpool_limits(1)
    runs = Runs(X, y, quick=args.quick)
    tmp = tempfile.mkdtemp(prefix="bench-sklearn-")
    try:
        run_all(runs, tmp, plain=args.plain, cold=args.cold, warm=args.warm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(runs)
    identical = runs.identical()
    print(f"\nbest_params_ and mean_test_score identical across all runs: {identical}")
    if not identical:
        raise SystemExit("the runs' results differ")


if __name__ == "__main__":
    main()
