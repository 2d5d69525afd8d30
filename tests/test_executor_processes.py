"""The process executor's own promises: big data by memory-mapped file, clear errors (S6.1).

A 200 MB result comes back as a mapping of the file the worker wrote (no pickled copy of
its buffer), arguments go out the same way, files live as long as the values they back,
things that cannot cross the process boundary fail naming the node (or run here when
marked ``local=True``), and a worker that dies fails its node without hanging the pool.
"""

from __future__ import annotations

import gc
import os
import pickle
import threading

import numpy as np
import pandas as pd
import pytest

from lazygraph import NodeError, Session, node
from lazygraph.executors.processes import ProcessExecutor, Slot, fill, template
from lazygraph.executors.transport import bulky

MB = 1_000_000


@node
def ones(n):
    return np.ones(n, dtype=np.float64)


@node
def seen_by_worker(value):
    """How an argument looks inside the worker: type, backing file, writable, pid."""
    filename = getattr(value, "filename", None)
    return type(value).__name__, filename, value.flags.writeable, os.getpid()


@node
def frame(n):
    return pd.DataFrame({"a": np.arange(n, dtype=np.int64), "b": np.full(n, 0.5)})


@node
def sum_frame(df):
    return int(df["a"].sum()), float(df["b"].sum())


@node
def scaled(value, factor):
    value *= factor  # writes into its argument: allowed, and never reaches the file
    return float(value.sum())


@node
def a_lock():
    return threading.Lock()


@node(local=True)
def a_local_lock():
    return threading.Lock()


@node
def uses(obj):
    return repr(obj)


@node
def die():
    os._exit(3)


@node
def total(*xs):
    return sum(xs)


@pytest.fixture(scope="module")
def executor():
    ex = ProcessExecutor(workers=2)
    with Session(progress=False) as s:  # start both workers now: the pool outlives each test
        s.compute(total(1), total(2), executor=ex)
    yield ex
    ex.close()


@pytest.fixture
def session():
    with Session(progress=False) as s:
        yield s


def mapped_file(array):
    """The file an array's memory is mapped from (following views), or None."""
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return None if array is None else array.filename


def files_in(executor):
    return sorted(os.listdir(executor.directory))


def test_a_200mb_result_comes_back_mapped_from_the_file_the_worker_wrote(session, executor):
    n = 200 * MB // 8
    (result,) = session.compute(ones(n), executor=executor)
    assert isinstance(result, np.memmap)  # a mapping, not an unpickled copy
    assert os.path.dirname(result.filename) == executor.directory
    assert os.path.getsize(result.filename) >= 200 * MB
    assert not result.flags.writeable  # like a spilled entry
    assert result.shape == (n,) and result.dtype == np.float64
    assert result[0] == 1.0 and result[-1] == 1.0
    assert float(result[::4096].sum()) == len(range(0, n, 4096))
    path = result.filename
    session.store.close()  # the store lets go of the value: its file is no longer needed
    del result
    gc.collect()
    assert not os.path.exists(path)


def test_small_results_travel_by_pickle(session, executor):
    (result,) = session.compute(ones(10), executor=executor)
    assert type(result) is np.ndarray and result.flags.writeable
    assert files_in(executor) == []


def test_a_big_argument_is_mapped_in_the_worker_and_its_file_removed_after(session, executor):
    arr = np.arange(2 * MB // 8, dtype=np.float64)  # over the 1 MiB spill threshold
    (kind, filename, writeable, worker) = session.compute(seen_by_worker(arr), executor=executor)[0]
    assert worker != os.getpid()
    assert kind == "memmap"
    assert os.path.dirname(filename) == executor.directory
    assert writeable  # copy-on-write: the function may write, the file never changes
    assert files_in(executor) == []  # written for this pull only


def test_a_result_file_is_reused_when_the_value_goes_to_another_node(session, executor):
    big = ones(2 * MB // 8)
    (first,) = session.compute(big, executor=executor)
    (info,) = session.compute(seen_by_worker(big), executor=executor)
    assert info[0] == "memmap" and info[1] == first.filename  # no second write
    assert files_in(executor) == [os.path.basename(first.filename)]


def test_writing_into_an_argument_stays_in_the_worker(session, executor):
    big = ones(2 * MB // 8)
    (before,) = session.compute(big, executor=executor)
    (total_scaled,) = session.compute(scaled(big, 3.0), executor=executor)
    assert total_scaled == 3.0 * len(before)
    assert float(before.sum()) == len(before)  # the cached value is unchanged


def test_a_big_dataframe_round_trips(session, executor):
    n = 200_000
    df, sums = session.compute(frame(n), sum_frame(frame(n)), executor=executor)
    expected = pd.DataFrame({"a": np.arange(n, dtype=np.int64), "b": np.full(n, 0.5)})
    assert df.equals(expected) and list(df.dtypes) == list(expected.dtypes)
    mapped = mapped_file(df["a"].to_numpy())
    assert mapped is not None and os.path.dirname(mapped) == executor.directory
    assert sums == (n * (n - 1) // 2, n * 0.5)


def test_lambdas_and_closures_travel(session, executor):
    offset = 40
    closure = node(name="closure")(lambda x: x + offset)
    assert session.compute(closure(2), executor=executor) == (42,)


def test_an_unpicklable_result_names_the_node_and_suggests_local(session, executor):
    with pytest.raises(NodeError) as info:
        session.compute(uses(a_lock()), executor=executor)
    err = info.value
    assert err.node == "a_lock" and err.path == ["uses", "a_lock"]
    assert "cannot be sent back from a worker process" in str(err)
    assert "local=True" in str(err)


def test_an_unpicklable_argument_names_the_node(session, executor):
    with pytest.raises(NodeError) as info:
        session.compute(uses(threading.Lock()), executor=executor)
    assert info.value.node == "uses"
    assert "its arguments cannot be sent to a worker process" in str(info.value)
    assert isinstance(info.value.__cause__, (TypeError, pickle.PicklingError))


def test_an_unpicklable_function_names_the_node(session, executor):
    lock = threading.Lock()
    holds_lock = node(name="holds_lock")(lambda: lock.locked())
    with pytest.raises(NodeError, match="its function holds_lock cannot be sent"):
        session.compute(holds_lock(), executor=executor)


def test_local_nodes_keep_unpicklable_values_in_this_process(session, executor):
    lock, text = session.compute(a_local_lock(), uses(total(1, 2)), executor=executor)
    assert type(lock) is type(threading.Lock())
    assert text == "3"
    assert session.compute(a_local_lock(), executor=executor)[0] is lock


def test_a_dead_worker_fails_its_node_and_the_next_pull_works(session):
    ex = ProcessExecutor(workers=1)
    try:
        with pytest.raises(NodeError) as info:
            session.compute(total(die(), 1), executor=ex)
        assert info.value.node == "die"
        assert "worker process died" in str(info.value)
        assert session.compute(total(5, 6), executor=ex) == (11,)
    finally:
        ex.close()
    assert ex.directory is None


def test_close_is_idempotent_and_removes_the_directory(session):
    ex = ProcessExecutor(workers=1)
    (result,) = session.compute(ones(2 * MB // 8), executor=ex)
    directory = ex.directory
    assert os.listdir(directory)
    ex.close()
    ex.close()
    assert not os.path.exists(directory)
    assert float(result[:10].sum()) == 10.0  # mapped pages outlive the unlinked file


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match=r"workers must be a positive int \(got 0\)"):
        ProcessExecutor(workers=0)


def test_templates_replace_dependencies_anywhere_in_the_arguments():
    a, b = total(1), total(2)
    n = total([a, {"k": (b, 3)}], b)
    n.key  # noqa: B018 - keys are resolved before a pull builds templates
    args, kwargs = template(n)
    assert isinstance(args[0][0], Slot) and isinstance(args[1], Slot)
    values = {bytes.fromhex(a.key): 10, bytes.fromhex(b.key): 20}
    assert fill(args, values) == ([10, {"k": (20, 3)}], 20)


def test_bulky_means_array_data_over_the_threshold():
    assert bulky(np.zeros(1000), 8000)
    assert not bulky(np.zeros(10), 8000)
    assert not bulky(np.array([object()] * 2000), 10)  # object arrays pickle anyway
    assert bulky([np.zeros(1000), 1], 8000)
    assert not bulky("x" * 10_000, 10)
