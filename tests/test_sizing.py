"""Tests for lazygraph.sizing: shared buffers, estimates against real allocations, freeze."""

from __future__ import annotations

import functools
import gc
import inspect
import json
import mmap
import pathlib
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lazygraph.pressure import process_memory
from lazygraph.sizing import MAX_DEPTH, footprint, freeze, sizeof

MB = 10**6


def buffer_ids(obj: object) -> set[Any]:
    return {part[0] for part in footprint(obj) if part[0] is not None}


def the_buffer(obj: object) -> tuple[Any, int, str]:
    shared = [part for part in footprint(obj) if part[0] is not None]
    assert len(shared) == 1, footprint(obj)
    return shared[0]


# ---------------------------------------------------------------------------------------------
# Scalars and the shape of the answer


@pytest.mark.parametrize("value", [0, 10**30, 1.5, True, None, 2j, "text", b"bytes", ""])
def test_scalars_are_private_and_exact(value: object) -> None:
    assert footprint(value) == ((None, sys.getsizeof(value), "cpu"),)
    assert sizeof(value) == sys.getsizeof(value)


def test_small_tuples_sum_their_items() -> None:
    value = (1, 2.5, None, "ab")
    assert sizeof(value) == sys.getsizeof(value) + sum(map(sys.getsizeof, value))


def test_big_strings_get_an_identity_so_a_store_can_count_them_once() -> None:
    text = "x" * 200_000
    buffer_id, nbytes, device = the_buffer(text)
    assert (nbytes, device) == (sys.getsizeof(text), "cpu")
    assert buffer_ids([text, text]) == {buffer_id}
    assert sizeof((text, text)) < 2 * len(text)


# ---------------------------------------------------------------------------------------------
# Shared buffers are named once, with the full buffer's size


def test_numpy_views_name_their_owner_buffer() -> None:
    a = np.arange(10_000.0)
    owner = the_buffer(a)
    assert owner[1:] == (a.nbytes, "cpu")
    for view in (a[10:], a[::3], a.reshape(100, 100).T, a.view(np.int64), a[5:6]):
        assert the_buffer(view) == owner


def test_a_copy_is_another_buffer() -> None:
    a = np.arange(1000.0)
    assert buffer_ids(a.copy()) != buffer_ids(a)


def test_views_of_a_view_reach_the_owner() -> None:
    owner = np.zeros((100, 100))
    view = owner.reshape(-1)[10:]
    assert the_buffer(view[::2]) == the_buffer(owner)


def test_a_container_counts_a_shared_buffer_once() -> None:
    a = np.zeros(100_000)
    assert a.nbytes < sizeof((a, a[1:], a[::2], [a.T])) < a.nbytes + 2_000


def test_dataframe_built_on_an_array_without_copy_shares_its_buffer() -> None:
    a = np.arange(12_000.0).reshape(4000, 3)
    df = pd.DataFrame(a, copy=False)
    assert the_buffer(a) in footprint(df)
    series = pd.Series(a[:, 1], copy=False)
    assert the_buffer(a) in footprint(series)
    assert a.nbytes < sizeof((a, df, series)) < a.nbytes + 10_000


def test_torch_tensor_and_numpy_share_a_cpu_buffer() -> None:
    a = np.zeros(50_000, dtype=np.float32)
    t = torch.from_numpy(a)
    assert the_buffer(t) == the_buffer(a)
    u = torch.arange(1000.0)
    assert the_buffer(u.numpy()) == the_buffer(u) == the_buffer(u[10:20])
    assert the_buffer(u)[1:] == (4000, "cpu")


def test_torch_storage_bytes_and_grad() -> None:
    x = torch.ones(2000, dtype=torch.float64)
    assert the_buffer(x)[1] == 16_000
    w = torch.ones(100, requires_grad=True)
    (w * 2).sum().backward()
    assert len(buffer_ids(w)) == 2  # the tensor and its gradient
    assert sizeof(w) >= 800


def test_nn_module_parameters_are_found() -> None:
    layer = torch.nn.Linear(100, 50)
    parameter_bytes = sum(p.untyped_storage().nbytes() for p in layer.parameters())
    assert parameter_bytes <= sizeof(layer) < parameter_bytes + 50_000


def test_arrays_inside_objects_keep_their_identity() -> None:
    class Holder:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

    class Slotted:
        __slots__ = ("array",)

        def __init__(self, array: np.ndarray) -> None:
            self.array = array

    a = np.zeros(10_000)
    assert the_buffer(a) in footprint(Holder(a[5:]))
    assert the_buffer(a) in footprint(Slotted(a))
    assert the_buffer(a) in footprint({"nested": [(a,)]})


# ---------------------------------------------------------------------------------------------
# Estimates against real allocations (tracemalloc sees Python objects and numpy buffers)


def allocated(make: Callable[[], object]) -> tuple[object, int]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = make()
        return value, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


ESTIMATED = {
    "ndarray": lambda: np.ones(200_000),
    "object array": lambda: np.array([f"s{i}" * 5 for i in range(20_000)], dtype=object),
    "list of str": lambda: [f"row-{i}-{i * 7}" for i in range(50_000)],
    "dict str->float": lambda: {f"k{i}": i + 0.5 for i in range(50_000)},
    "set of str": lambda: {f"x{i}" for i in range(20_000)},
    "list of tuples": lambda: [(i, str(i)) for i in range(20_000)],
    "list of arrays": lambda: [np.zeros(100) for _ in range(2_000)],
}


@pytest.mark.parametrize("name", list(ESTIMATED))
def test_estimates_within_10_percent_of_real_allocations(name: str) -> None:
    value, real = allocated(ESTIMATED[name])
    assert 0.9 * real <= sizeof(value) <= 1.1 * real, (sizeof(value), real)


def python_strings() -> bool:
    return pd.Series(["a"]).array.dtype.storage == "python"


@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.Series([f"value-{i}" for i in range(50_000)]),
        lambda: pd.DataFrame({"s": [f"name-{i}" for i in range(50_000)], "x": np.arange(50_000.0)}),
        lambda: pd.Series([f"value-{i}" for i in range(50_000)], dtype=object),
    ],
    ids=["Series of str", "DataFrame str+float", "object Series"],
)
def test_pandas_string_estimates(make: Callable[[], Any]) -> None:
    value, traced = allocated(make)
    # Arrow-backed strings (pandas 3 with pyarrow) are allocated where tracemalloc does not
    # look; there pandas' own count of the arrow buffers is exact and is the reference.
    real = traced if python_strings() else int(np.sum(value.memory_usage(deep=True)))
    assert 0.9 * real <= sizeof(value) <= 1.1 * real, (sizeof(value), real)


def test_torch_estimate_matches_resident_memory() -> None:
    gc.collect()
    before = process_memory()
    tensor = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MiB, touched
    grown = process_memory() - before
    assert 0.9 * grown <= sizeof(tensor) <= 1.1 * grown


@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.Series(pd.Categorical(["a", "b", "c"] * 10_000)),
        lambda: pd.Series(pd.array(range(30_000), dtype="Int64")),
        lambda: pd.Series(pd.date_range("2020", periods=30_000, freq="s")),
        lambda: pd.DataFrame(
            {"x": range(10_000)},
            index=pd.MultiIndex.from_product([range(100), [f"k{i}" for i in range(100)]]),
        ),
        lambda: pd.DataFrame(
            {"a": np.arange(10_000), "b": np.ones(10_000)}, index=np.arange(10_000)
        ),
    ],
    ids=["categorical", "Int64", "datetime", "MultiIndex", "numeric"],
)
def test_pandas_estimates_match_memory_usage(make: Callable[[], Any]) -> None:
    value = make()
    usage = value.memory_usage(deep=True, index=True)
    expected = int(usage.sum()) if hasattr(usage, "sum") else int(usage)
    assert 0.9 * expected <= sizeof(value) <= 1.1 * expected + 2_000


def test_strided_views_count_the_real_buffer_not_the_logical_size() -> None:
    base = np.zeros(10_000)
    windows = np.lib.stride_tricks.sliding_window_view(base, 1000)  # 80 MB "logical"
    assert the_buffer(windows) == the_buffer(base)
    broadcast = np.broadcast_to(base, (1000, 10_000))
    assert the_buffer(broadcast) == the_buffer(base)


def test_memory_mapped_arrays_share_the_mapping(tmp_path: Any) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(1000.0))
    mapped = np.load(path, mmap_mode="r")
    assert the_buffer(mapped[100:]) == the_buffer(mapped)
    assert the_buffer(mapped)[1] == 8000


def test_large_containers_are_sampled_and_scaled() -> None:
    values = list(range(300_000))
    value, real = allocated(lambda: [float(i) for i in values])
    assert 0.9 * real <= sizeof(value) <= 1.1 * real


def test_arrow_string_columns_use_arrow_buffers() -> None:
    pa = pytest.importorskip("pyarrow")
    series = pd.Series([f"v{i}" for i in range(10_000)], dtype=pd.ArrowDtype(pa.string()))
    chunked = pa.chunked_array([series.array._pa_array.combine_chunks()])
    arrow_bytes = chunked.nbytes
    assert 0.9 * arrow_bytes <= sizeof(series) <= 1.1 * arrow_bytes + 2_000


# ---------------------------------------------------------------------------------------------
# Never raises


class Hostile:
    """Every way an object can make introspection fail."""

    def __sizeof__(self) -> int:
        raise RuntimeError("no size")

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name}")


class BrokenDict:
    @property
    def __dict__(self) -> Any:  # type: ignore[override]
        raise RuntimeError("no dict")


def test_sizing_never_raises() -> None:
    for value in (Hostile(), BrokenDict(), [Hostile()], {"k": BrokenDict()}):
        parts = footprint(value)
        assert parts and all(part[1] >= 0 for part in parts)
    assert sizeof(Hostile()) > 0


def test_cycles_and_deep_nesting() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert 0 < sizeof(loop) < 1000
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert sizeof(deep) > 0  # bounded depth: no RecursionError


def test_functions_and_classes_are_not_walked_into() -> None:
    assert sizeof(test_cycles_and_deep_nesting) < 1000
    assert sizeof(pd.DataFrame) < 10_000


# ---------------------------------------------------------------------------------------------
# freeze


def test_freeze_numpy_and_containers() -> None:
    a, b = np.zeros(3), np.ones(3)
    freeze({"x": [a, (b,)]})
    for array in (a, b):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 5
    assert a[0] == 0 and b[0] == 1


def test_freeze_dataframe_blocks() -> None:
    df = pd.DataFrame({"x": np.arange(3.0), "n": np.arange(3), "s": ["a", "b", "c"]})
    freeze(df)
    for write in (
        lambda: df.loc.__setitem__((0, "x"), 9.0),
        lambda: df.iloc.__setitem__((1, 1), 7),
        lambda: df["x"].to_numpy().__setitem__(0, 3.0),
    ):
        with pytest.raises(ValueError, match="read-only"):
            write()
    assert df["x"].tolist() == [0.0, 1.0, 2.0] and df["n"].tolist() == [0, 1, 2]
    if python_strings():  # arrow-backed strings are immutable buffers already
        with pytest.raises(ValueError, match="read-only"):
            df.loc[0, "s"] = "z"
        assert df["s"].tolist() == ["a", "b", "c"]


def test_freeze_series_masked_and_index() -> None:
    series = pd.Series(pd.array([1, 2, None], dtype="Int64"), index=[10, 20, 30])
    freeze(series)
    with pytest.raises(ValueError, match="read-only"):
        series.iloc[0] = 5
    with pytest.raises(ValueError, match="read-only"):
        series.index.to_numpy()[0] = 1
    assert series.iloc[0] == 1


def test_freeze_never_raises() -> None:
    freeze(Hostile())
    freeze(torch.zeros(2))
    freeze([1, "a", None])
    mapped = np.zeros(3)
    mapped.setflags(write=False)
    freeze(mapped)
    assert not mapped.flags.writeable


def test_importing_sizing_imports_no_heavy_library() -> None:
    code = (
        "import sys, lazygraph.sizing as s; s.footprint([1, 'a', {2: 3.0}]);"
        "print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Buffers held out of sight (SPEC S5.2): closures, partials, memoryviews, exceptions, nesting

HIDDEN_KINDS = ["closure", "partial", "memoryview", "exception", "nested"]


def hidden(kind: str, array: np.ndarray) -> object:
    """``array`` held so that only the object's innards reach it."""
    if kind == "closure":
        return lambda: array.sum()
    if kind == "partial":
        return functools.partial(np.add, array)
    if kind == "memoryview":
        return memoryview(array)
    if kind == "exception":
        return ValueError("bad block", array)
    nested: object = array
    for _ in range(10):
        nested = [nested]
    return nested


@pytest.mark.parametrize("kind", HIDDEN_KINDS)
def test_hidden_buffers_are_found_with_their_identity(kind: str) -> None:
    a = np.zeros(500_000)
    assert the_buffer(a) in footprint(hidden(kind, a))
    assert the_buffer(a) in footprint(hidden(kind, a[10:]))
    assert a.nbytes <= sizeof(hidden(kind, a)) < a.nbytes + 5_000


def test_memoryview_of_a_bytearray_counts_the_bytearray_once() -> None:
    data = bytearray(4_000_000)
    view = memoryview(data)[1000:]
    assert len(data) <= sizeof(view) < len(data) + 1_000
    assert buffer_ids(view) == buffer_ids(data) != set()
    assert sizeof((data, view, memoryview(data))) < len(data) + 2_000
    released = memoryview(data)
    released.release()
    assert sizeof(released) < 1_000


def test_memoryviews_of_views_and_of_opaque_exporters() -> None:
    a = np.zeros(500_000)
    assert sizeof((a, memoryview(a[10:]), memoryview(a[::2]))) < a.nbytes + 2_000
    mapped = mmap.mmap(-1, 4_000_000)  # sys.getsizeof does not see the mapping
    try:
        assert 4_000_000 <= sizeof(memoryview(mapped)[1000:]) + 1000 < 4_002_000
    finally:
        mapped.close()


def test_exceptions_reach_attributes_and_chained_exceptions() -> None:
    a, b, c = np.zeros(100_000), np.ones(100_000), np.full(100_000, 2.0)
    try:
        try:
            raise KeyError(a)
        except KeyError:
            error = RuntimeError("outer")
            error.payload = b  # type: ignore[attr-defined]
            raise error from ValueError(c)
    except RuntimeError as outer:
        caught = outer
    assert {the_buffer(x) for x in (a, b, c)} <= set(footprint(caught))
    assert caught.__context__ is not None and caught.__traceback__ is not None


def test_closures_reach_cells_defaults_and_nested_functions() -> None:
    a, b = np.zeros(100_000), np.ones(100_000)

    def outer() -> Callable[[], float]:
        def inner(scale: np.ndarray = b) -> float:
            return float((a * scale).sum())

        return lambda: inner()

    assert {the_buffer(a), the_buffer(b)} <= set(footprint(outer()))
    assert sizeof(outer()) < a.nbytes + b.nbytes + 5_000


def test_partial_keywords_and_nested_partials() -> None:
    a, b = np.zeros(100_000), np.ones(100_000)
    bound = functools.partial(functools.partial(np.add, a), out=b)
    assert {the_buffer(a), the_buffer(b)} <= set(footprint(bound))


def test_objects_nested_deep_in_objects_are_reached() -> None:
    class Box:
        def __init__(self, inside: object) -> None:
            self.inside = inside

    a = np.zeros(100_000)
    held: object = a
    for level in range(10):
        held = Box(held) if level % 2 else {"k": [held]}
    assert the_buffer(a) in footprint(held)


def test_visits_are_bounded_per_value() -> None:
    # Ten thousand levels, an 8 KB array at each: the walk stops at MAX_DEPTH levels (and
    # MAX_OBJECTS objects); what lies below is not seen, and no RecursionError either.
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep, np.zeros(1000)]
    assert MAX_DEPTH * 8000 // 2 < sizeof(deep) < 100 * 8000


HOLD_TWELVE = """
import functools, gc, json, sys
import numpy as np, psutil
import lazygraph
from tests.test_sizing import hidden

@lazygraph.node
def block(i, kind):
    return hidden(kind, np.full(5_000_000, float(i)))  # 40 MB, every page touched

process = psutil.Process()
with lazygraph.Session(memory_limit="100MB", spill=False, progress=False) as session:
    gc.collect()
    before = process.memory_info().rss
    grown = 0
    for i in range(12):
        block(i, sys.argv[1]).compute()  # the caller keeps nothing: the store decides
        grown = max(grown, process.memory_info().rss - before)
    stats = session.stats()
print(json.dumps({"grown": grown, "in_memory": stats.bytes_in_memory,
                  "entries": stats.entries_in_memory, "evictions": stats.evictions}))
"""


@pytest.mark.parametrize("kind", HIDDEN_KINDS)
def test_twelve_hidden_40mb_results_stay_within_memory_limit(kind: str) -> None:
    # A fresh process, so that RSS is this test's alone; torch and pandas stay out of it.
    root = pathlib.Path(__file__).resolve().parent.parent
    code = HOLD_TWELVE.replace("from tests.test_sizing import hidden", _source_of_hidden())
    out = subprocess.run(
        [sys.executable, "-c", code, kind], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert 40 * MB <= seen["in_memory"] <= 100 * MB, seen
    assert seen["entries"] <= 2 and seen["evictions"] >= 10, seen
    # Two results held, one being made: 480 MB would be held if they were not counted.
    assert seen["grown"] <= 150 * MB, seen


def _source_of_hidden() -> str:
    return "import functools\n" + inspect.getsource(hidden)
