"""lazygraph.Memory against joblib.Memory's contract, and inside scikit-learn (SPEC S10.1).

The contract tests run against joblib.Memory too: they are joblib's behaviour, not ours.
"""

from __future__ import annotations

import collections
import copy
import gc
import importlib
import pickle
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import lazygraph

CALLS: collections.Counter[str] = collections.Counter()


def square(x: Any, *, offset: int = 0) -> Any:
    CALLS["square"] += 1
    return x * x + offset


def noisy(x: Any, verbose: bool = False, n_jobs: int = 1) -> Any:
    CALLS["noisy"] += 1
    return [x, x]


def total(a: Any) -> Any:
    CALLS["total"] += 1
    return float(np.sum(a))


@pytest.fixture(params=["joblib", "lazygraph-memory", "lazygraph-disk"])
def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    CALLS.clear()
    if request.param == "joblib":
        yield joblib.Memory(tmp_path / "joblib", verbose=0)
        return
    location = tmp_path / "lg" if request.param == "lazygraph-disk" else None
    made = lazygraph.Memory(location, verbose=0)
    yield made
    made.close()


# -- the joblib.Memory contract -----------------------------------------------------------


def test_cache_as_call_and_decorator_returns_values(memory: Any) -> None:
    f = memory.cache(square)
    assert f(3) == 9 and f(3) == 9
    assert CALLS["square"] == 1
    assert f.func is square

    @memory.cache(ignore=["verbose"])
    def g(x: int, verbose: bool = False) -> int:
        return x + 1

    assert g(1) == 2


def test_keyword_and_default_forms_are_one_call(memory: Any) -> None:
    f = memory.cache(square)
    assert f(2) == f(x=2) == f(2, offset=0) == 4
    assert CALLS["square"] == 1
    assert f(2, offset=1) == 5
    assert CALLS["square"] == 2


def test_ignore_leaves_arguments_out_of_the_key(memory: Any) -> None:
    f = memory.cache(noisy, ignore=["verbose", "n_jobs"])
    assert f(1) == f(1, verbose=True) == f(1, n_jobs=4) == [1, 1]
    assert CALLS["noisy"] == 1
    f(2, verbose=True)
    assert CALLS["noisy"] == 2


def test_one_function_cached_with_and_without_ignore(memory: Any) -> None:
    quiet = memory.cache(noisy, ignore=["verbose"])
    quiet(1)
    quiet(1, verbose=True)
    assert CALLS["noisy"] == 1
    plain = memory.cache(noisy)  # its key holds verbose: neither call above is its result
    plain(1)
    plain(1, verbose=True)
    assert CALLS["noisy"] == 3
    assert memory.cache(noisy)(1, verbose=True) == [1, 1]
    assert CALLS["noisy"] == 3


def test_func_clear_and_memory_clear_force_recomputes(memory: Any) -> None:
    f = memory.cache(square)
    f(3)
    f.clear()
    f(3)
    assert CALLS["square"] == 2
    memory.clear()
    f(3)
    assert CALLS["square"] == 3


def test_call_runs_again_and_returns_value_and_metadata(memory: Any) -> None:
    f = memory.cache(square)
    f(4)
    value, metadata = f.call(4)
    assert value == 16 and isinstance(metadata, dict)
    assert CALLS["square"] == 2
    f(4)
    assert CALLS["square"] == 2


def test_check_call_in_cache(memory: Any) -> None:
    f = memory.cache(square)
    assert not f.check_call_in_cache(5)
    f(5)
    assert f.check_call_in_cache(5)
    assert not f.check_call_in_cache(6)


def test_numpy_arguments_key_by_content(memory: Any) -> None:
    f = memory.cache(total)
    a = np.arange(1000.0)
    assert f(a) == f(a.copy()) == 499500.0
    assert CALLS["total"] == 1
    b = a.copy()
    b[0] = 7.0
    f(b)
    assert CALLS["total"] == 2


_CHILD = """
import sys
import numpy as np
import {module}

memory = {module}.Memory(sys.argv[1]{extra})

@memory.cache
def heavy(a, scale=1):
    with open(sys.argv[2], "a") as fh:
        fh.write("x")
    return a * scale

print(int(heavy(np.arange(5), scale=3).sum()))
"""


@pytest.mark.parametrize("module", ["joblib", "lazygraph"])
def test_a_new_process_hits_the_location(module: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    extra = ", verbose=0" if module == "joblib" else ""
    script.write_text(textwrap.dedent(_CHILD.format(module=module, extra=extra)))
    calls = tmp_path / "calls.txt"
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "cache"), str(calls)],
            capture_output=True, text=True, timeout=120, check=True,
        )
        assert out.stdout.strip() == "30"
    assert calls.read_text() == "x"


# -- what lazygraph adds: the very object, shared across clones ---------------------------


def test_in_memory_results_are_the_very_objects() -> None:
    memory = lazygraph.Memory()
    try:
        f = memory.cache(noisy)
        first = f(1)
        assert f(1) is first
        assert memory.location == ":memory:"
    finally:
        memory.close()


def test_cache_keeps_a_bounded_number_of_functions_alive() -> None:
    # cache() reuses a node factory per function (Pipeline calls it on every fit); the
    # factories it keeps hold their functions, so there is a bound.
    from lazygraph.memo import MAX_FACTORIES

    memory = lazygraph.Memory()
    try:
        first = memory.cache(lambda x: [x])
        assert first(1) == [1]
        gone = weakref.ref(first.func)
        del first
        for i in range(MAX_FACTORIES):
            memory.cache(lambda x, i=i: [x, i])(1)
        gc.collect()
        assert gone() is None
    finally:
        memory.close()


def test_copies_share_the_cache_and_pickles_keep_the_location(tmp_path: Path) -> None:
    memory = lazygraph.Memory(tmp_path / "c")
    try:
        assert copy.deepcopy(memory) is memory and copy.copy(memory) is memory
        clone = pickle.loads(pickle.dumps(memory))
        assert clone is not memory and clone.location == memory.location
        clone.close()
    finally:
        memory.close()


# -- scikit-learn ------------------------------------------------------------------------

sklearn = pytest.importorskip("sklearn")
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

FITS: list[int] = []


class CountingSelect(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Keeps the first ``k`` columns; counts its fits in the module-level ``FITS``."""

    def __init__(self, k: int = 8) -> None:
        self.k = k

    def fit(self, X: Any, y: Any = None) -> CountingSelect:
        FITS.append(self.k)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> Any:
        return X[:, : self.k]


def _digits() -> tuple[Any, Any]:
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


@pytest.mark.parametrize("location", [None, "disk"])
def test_pipeline_fits_each_transformer_setting_once_across_a_grid(
    location: str | None, tmp_path: Path
) -> None:
    X, y = _digits()
    memory = lazygraph.Memory(None if location is None else tmp_path / "c")
    try:
        FITS.clear()
        pipe = Pipeline([("select", CountingSelect()), ("svc", LinearSVC(max_iter=2000))],
                        memory=memory)
        grid = {"select__k": [16, 32], "svc__C": [0.1, 1.0, 10.0]}
        search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
        # 2 settings x 3 folds, then the refit on all of X: not 2 x 3 x 3 + 1.
        fits = [16] * 3 + [32] * 3 + [search.best_params_["select__k"]]
        assert sorted(FITS) == sorted(fits)
        again = GridSearchCV(pipe, grid, cv=3).fit(X, y)  # warm: no transformer is fitted
        assert sorted(FITS) == sorted(fits)
        plain = GridSearchCV(Pipeline(pipe.steps), grid, cv=3).fit(X, y)
        for other in (again, plain):
            assert other.best_params_ == search.best_params_
            assert np.array_equal(other.cv_results_["mean_test_score"],
                                  search.cv_results_["mean_test_score"])
    finally:
        memory.close()


def fit_transform(transformer: Any, X: Any) -> Any:
    return transformer.fit(X).transform(X)


def test_an_estimator_keys_by_its_parameters_attributes_and_data(memory: Any) -> None:
    X = _digits()[0]
    f = memory.cache(fit_transform)
    FITS.clear()
    f(CountingSelect(k=2), X)
    f(CountingSelect(k=2), X.copy())
    assert FITS == [2]
    f(CountingSelect(k=3), X)
    changed = X.copy()
    changed[0, 0] += 1.0
    f(CountingSelect(k=2), changed)
    assert FITS == [2, 3, 2]
    extra = CountingSelect(k=2)
    extra.note = "set beyond the parameters"  # a method could read it: part of the key
    f(extra, X)
    assert FITS == [2, 3, 2, 2]


_SCALE = """
from sklearn.base import BaseEstimator, TransformerMixin


class Scale(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X * {factor}
"""


def test_editing_a_transformer_class_fits_again(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A notebook user edits a transformer's code and re-runs: the class has the same name
    # and the estimator the same parameters, but the result must follow the new code.
    module = tmp_path / "edited_scale.py"
    module.write_text(_SCALE.format(factor=2))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within the second
    import edited_scale

    X = np.arange(6.0).reshape(3, 2)
    memory = lazygraph.Memory()
    try:
        pipe = make_pipeline(edited_scale.Scale(), "passthrough", memory=memory)
        assert np.array_equal(pipe.fit_transform(X), X * 2)
        module.write_text(_SCALE.format(factor=3))
        importlib.reload(edited_scale)
        pipe = make_pipeline(edited_scale.Scale(), "passthrough", memory=memory)
        assert np.array_equal(pipe.fit_transform(X), X * 3)
    finally:
        memory.close()
        sys.modules.pop("edited_scale", None)


def test_make_pipeline_accepts_memory() -> None:
    X, y = _digits()
    memory = lazygraph.Memory()
    try:
        FITS.clear()
        for _ in range(2):
            make_pipeline(CountingSelect(k=10), LinearSVC(max_iter=2000), memory=memory).fit(X, y)
        assert FITS == [10]
    finally:
        memory.close()


def test_refitting_a_pipeline_never_changes_a_cached_estimator() -> None:
    # scikit-learn fits the steps themselves (no clone) when memory.location is None; the
    # cached estimator would then be refitted in place and served for the old data.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(0)
    X1, X2, y = rng.rand(50, 3), rng.rand(50, 3) * 100, np.arange(50) % 2
    memory = lazygraph.Memory()
    try:
        pipe = make_pipeline(StandardScaler(), LogisticRegression(), memory=memory).fit(X1, y)
        mean1 = pipe[0].mean_.copy()
        pipe.fit(X2, y)
        again = make_pipeline(StandardScaler(), LogisticRegression(), memory=memory).fit(X1, y)
        assert np.array_equal(again[0].mean_, mean1)
    finally:
        memory.close()


def _tree_with_junk_padding() -> tuple[Any, Any]:
    from sklearn.tree import DecisionTreeClassifier

    X, y = _digits()
    tree = DecisionTreeClassifier(random_state=0, max_depth=4).fit(X, y).tree_
    cls, args, state = tree.__reduce__()
    nodes = state["nodes"].copy()
    used = sum(nodes.dtype[name].itemsize for name in nodes.dtype.names)
    nodes.view(np.uint8).reshape(len(nodes), -1)[:, used:] = 0xAB  # the padding bytes only
    other = cls(*args)
    other.__setstate__({**state, "nodes": nodes})
    return tree, other


def test_a_fitted_tree_keys_by_content_not_by_padding_bytes() -> None:
    from lazygraph.hashing import content_hash

    tree, other = _tree_with_junk_padding()
    assert other.__reduce__()[2]["nodes"].tobytes() != tree.__reduce__()[2]["nodes"].tobytes()
    assert content_hash(other) == content_hash(tree)


_FOREST = """
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from lazygraph.hashing import content_hash

X, y = load_digits(return_X_y=True)
junk = [bytearray(b"\\xff" * 4096) for _ in range(2000)]  # dirty the heap first
del junk
forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X[:400], y[:400])
digest, persistable = content_hash(forest)
print(digest.hex() if persistable else "not persistable")
"""


def test_a_fitted_forest_keys_the_same_in_two_processes() -> None:
    keys = {
        subprocess.run([sys.executable, "-c", _FOREST], capture_output=True, text=True,
                       timeout=120, check=True).stdout.strip()
        for _ in range(2)
    }
    assert len(keys) == 1 and len(keys.pop()) == 32
