"""The executor contract, run by every executor: sync, threads, processes, dask (SPEC S6, S7.1).

Same results everywhere, run-once in diamonds, nested-container dependencies, errors naming
the failing node and its path, finished work cached after an error, interrupts that leave no
workers or temp files behind, concurrent pulls. Calls are counted through a log file, since
counters do not cross processes. Pools and the Dask cluster are shared per module (they are
slow to start); every test gets a fresh Session.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from lazygraph import ConfigError, Input, NodeError, Session, node
from lazygraph.config import Config
from lazygraph.executors.dask import DaskExecutor
from lazygraph.executors.processes import ProcessExecutor
from lazygraph.executors.registry import EXECUTOR_NAMES, EXECUTORS, make_executor
from lazygraph.executors.sync import SyncExecutor
from lazygraph.executors.threads import ThreadExecutor

ALL = ["sync", "threads", "processes", "dask"]
IN_PROCESS = ["sync", "threads"]  # where values are passed by reference

Pair = collections.namedtuple("Pair", "first second")


# -- node functions (module level: they must travel to worker processes) -------------------


def log_call(log_dir: str | None, label: str) -> None:
    if log_dir is None:
        return
    with open(os.path.join(log_dir, "calls.log"), "a") as f:
        f.write(f"{label} {os.getpid()}\n")


def calls(log_dir) -> collections.Counter:
    path = os.path.join(log_dir, "calls.log")
    if not os.path.exists(path):
        return collections.Counter()
    with open(path) as f:
        return collections.Counter(line.split()[0] for line in f)


@node
def mark(log_dir, label, *values):
    log_call(log_dir, label)
    return (label, *values)


@node
def add(a, b):
    return a + b


@node
def total(items, *, scale=1, extra=None):
    values = list(items.values()) if isinstance(items, dict) else list(items)
    if extra:
        values += list(extra.values())
    return scale * sum(values)


@node
def pair_sum(pair):
    return pair.first + pair.second


@node
def frame(n):
    return pd.DataFrame({"a": np.arange(n, dtype="int64"), "b": np.linspace(0, 1, n)})


@node
def column_sums(df):
    return df.sum().to_dict()


@node
def matrix(n, seed):
    return np.random.default_rng(seed).standard_normal((n, n))


@node
def matmul(a, b):
    return a @ b


@node
def fail(log_dir, label, *deps):
    log_call(log_dir, label)
    raise ValueError(f"{label} is broken")


@node
def check_positive(x, *after):
    if x <= 0:
        raise ValueError(f"expected a positive number (got {x})")
    return x


@node
def parity(log_dir, x):
    log_call(log_dir, "parity")
    return x % 2


@node
def describe(log_dir, p):
    log_call(log_dir, "describe")
    return f"parity {p}"


@node
def slow(log_dir, label, seconds):
    time.sleep(seconds)
    log_call(log_dir, label)
    return label


@node
def make_list():
    return [1, 2, 3]


@node
def identity_of(x, y):
    return id(x), id(y), x is y


@node
def container_kinds(mapping, items):
    """What a function sees of its container arguments: their types and what they hold."""
    return type(mapping).__name__, mapping.default_factory, dict(mapping), list(items)


@node
def pid():
    return os.getpid()


@node(local=True)
def local_pid(x):
    return os.getpid(), x


@node
def interrupt_then_wait(parent_pid, log_dir, stop_path):
    log_call(log_dir, "interrupter")
    os.kill(parent_pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while not os.path.exists(stop_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "stopped"


# -- fixtures ------------------------------------------------------------------------------

_CLUSTER_PROCESS = """
import sys
from distributed import LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()  # until the test process closes our stdin
    cluster.close()
"""


@pytest.fixture(scope="module")
def dask_cluster():
    """The address of a real LocalCluster (2 worker processes) hosted in a helper process.

    Hosted apart so that the scheduler's sockets and threads, which grow as it works, are
    not counted by the suite's per-test leak check; each test connects its own Client and
    closes it (milliseconds), which leaves nothing open in this process. (":0" rather than
    None for the dashboard: None means port 8787, taken when two suites run at once.)
    """
    pytest.importorskip("distributed")
    # Workers import this module to unpickle its functions, as a deployment would: same code
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    helper = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER_PROCESS],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = helper.stdout.readline().strip()
        assert address.startswith("tcp://"), f"the LocalCluster did not start ({address!r})"
        yield address
    finally:
        helper.stdin.close()
        try:
            helper.wait(30)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        helper.stdout.close()


@pytest.fixture(scope="module", params=ALL)
def pool(request):
    """A warm executor of each kind, shared by the module; for "dask", the cluster address."""
    if request.param == "dask":
        yield request.getfixturevalue("dask_cluster")
        return
    ex = make(request.param)
    with Session(progress=False) as s:  # start every worker now: the pool outlives each test
        s.compute(slow(None, "warm", 0.05), slow(None, "up", 0.05), executor=ex)
    yield ex
    ex.close()


@pytest.fixture
def executor(pool):
    if not isinstance(pool, str):
        yield pool
        return
    import distributed

    with distributed.Client(pool):  # the current client, which DaskExecutor() finds
        yield DaskExecutor()


def make(name, address=None):
    if name == "sync":
        return SyncExecutor()
    if name == "threads":
        return ThreadExecutor(workers=2)
    if name == "processes":
        return ProcessExecutor(workers=2)
    import distributed

    return DaskExecutor(distributed.Client(address, set_as_default=False))


@pytest.fixture
def session():
    with Session(progress=False) as s:
        yield s


@pytest.fixture
def log_dir(tmp_path):
    return str(tmp_path)


def run(session, executor, *nodes):
    return session.compute(*nodes, executor=executor)


# -- results -------------------------------------------------------------------------------


def test_same_results_as_plain_python(session, executor):
    a, b = matrix(30, 1), matrix(30, 2)
    got_product, got_sum, got_sums = run(
        session, executor, matmul(a, b), add(add(1, 2), add(3, 4)), column_sums(frame(100))
    )
    rng = np.random.default_rng
    expected = rng(1).standard_normal((30, 30)) @ rng(2).standard_normal((30, 30))
    np.testing.assert_allclose(got_product, expected)
    assert got_sum == 10
    assert got_sums == {"a": 4950, "b": pytest.approx(50.0)}


def test_frames_and_arrays_keep_dtype_index_and_values(session, executor):
    df, arr = run(session, executor, frame(1000), matrix(8, 3))
    expected = pd.DataFrame({"a": np.arange(1000), "b": np.linspace(0, 1, 1000)})
    pd.testing.assert_frame_equal(df, expected)
    assert arr.dtype == np.float64 and arr.shape == (8, 8)


def test_nested_container_dependencies(session, executor):
    one, two, three = add(0, 1), add(1, 1), add(1, 2)
    results = run(
        session,
        executor,
        total([one, (two, three)[0], 10]),
        total({"x": one, "y": three}, scale=2, extra={"z": two}),
        pair_sum(Pair(one, three)),
        total({one, two}),
    )
    assert results == (13, 12, 4, 3)


def test_containers_holding_dependencies_keep_their_type(session, executor):
    one, two = add(0, 1), add(1, 1)
    mapping = collections.defaultdict(list, {"a": one, "b": [two]})
    (seen,) = run(session, executor, container_kinds(mapping, [Pair(one, two), 3]))
    assert seen == ("defaultdict", list, {"a": 1, "b": [2]}, [(1, 2), 3])
    assert type(seen[3][0]) is Pair


def test_diamond_runs_each_node_once(session, executor, log_dir):
    top = mark(log_dir, "top")
    left, right = mark(log_dir, "left", top), mark(log_dir, "right", top)
    bottom = mark(log_dir, "bottom", left, right)
    (result,) = run(session, executor, bottom)
    assert result == ("bottom", ("left", ("top",)), ("right", ("top",)))
    assert calls(log_dir) == {"top": 1, "left": 1, "right": 1, "bottom": 1}


def test_second_pull_runs_nothing_and_returns_the_same_object(session, executor, log_dir):
    n = mark(log_dir, "once", np.arange(5))
    (first,) = run(session, executor, n)
    (second,) = run(session, executor, mark(log_dir, "once", np.arange(5)))
    assert second is first
    assert calls(log_dir) == {"once": 1}


def test_equal_nodes_in_one_pull_run_once(session, executor, log_dir):
    results = run(session, executor, mark(log_dir, "same", 1), mark(log_dir, "same", 1))
    assert results[0] is results[1]
    assert calls(log_dir) == {"same": 1}


@pytest.mark.parametrize("pool", IN_PROCESS, indirect=True)
def test_dependents_receive_the_very_object(session, executor):
    made = make_list()
    value, (id_x, id_y, same) = run(session, executor, made, identity_of(made, made))
    assert same and id_x == id(value)


def test_one_value_reaches_both_slots_as_one_object(session, executor):
    made = make_list()
    (result,) = run(session, executor, identity_of(made, made))
    assert result[2] is True


def test_local_nodes_run_in_this_process(session, executor):
    remote = pid()
    here, remote_pid = run(session, executor, local_pid(remote), remote)
    assert here == (os.getpid(), remote_pid)


# -- incremental -----------------------------------------------------------------------------


def test_input_change_recomputes_downstream_and_cuts_off_early(session, executor, log_dir):
    x = Input(2, name="x")
    out = describe(log_dir, parity(log_dir, x))
    assert run(session, executor, out) == ("parity 0",)
    x.set(4)  # same parity: describe keeps its result (early cutoff)
    assert run(session, executor, out) == ("parity 0",)
    x.set(5)
    assert run(session, executor, out) == ("parity 1",)
    assert calls(log_dir) == {"parity": 3, "describe": 2}


# -- errors ----------------------------------------------------------------------------------


def test_error_names_the_failing_node_and_its_path(session, executor, log_dir):
    broken = fail(log_dir, "broken")
    root = add(add(broken, 1), 2)
    with pytest.raises(NodeError) as info:
        run(session, executor, root)
    err = info.value
    assert err.node == "fail"
    assert err.path == ["add", "add", "fail"]
    assert isinstance(err.__cause__, ValueError)
    assert "broken is broken" in str(err)


def test_finished_work_stays_cached_after_an_error(session, executor, log_dir):
    ok = mark(log_dir, "ok")
    x = Input(0, name="x")
    root = mark(log_dir, "root", ok, check_positive(x, ok))  # ok finishes before the check
    with pytest.raises(NodeError, match="expected a positive number"):
        run(session, executor, root)
    assert calls(log_dir) == {"ok": 1}
    x.set(3)
    assert run(session, executor, root) == (("root", ("ok",), 3),)
    assert calls(log_dir) == {"ok": 1, "root": 1}


@pytest.mark.parametrize("pool", ["threads", "processes"], indirect=True)
def test_nodes_running_at_the_first_error_finish_and_stay_cached(session, executor, log_dir):
    sibling = slow(log_dir, "sibling", 0.3)
    with pytest.raises(NodeError, match="early is broken"):
        run(session, executor, mark(log_dir, "root", sibling, fail(log_dir, "early")))
    assert calls(log_dir) == {"early": 1, "sibling": 1}
    assert run(session, executor, sibling) == ("sibling",)
    assert calls(log_dir)["sibling"] == 1


def test_a_failed_pull_leaves_the_session_usable(session, executor, log_dir):
    with pytest.raises(NodeError):
        run(session, executor, fail(log_dir, "bad"))
    assert run(session, executor, add(20, 22)) == (42,)


# -- interrupts --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_keyboard_interrupt_propagates_and_leaves_nothing_behind(name, request, session, log_dir):
    address = request.getfixturevalue("dask_cluster") if name == "dask" else None
    executor = make(name, address)  # a pool of its own: the interrupt may kill it
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    stop = os.path.join(log_dir, "stop")
    with pytest.raises(KeyboardInterrupt):
        run(session, executor, interrupt_then_wait(os.getpid(), log_dir, stop))
    with open(stop, "w"):
        pass
    assert calls(log_dir) == {"interrupter": 1}
    if isinstance(executor, ProcessExecutor):
        assert not _alive(_pids_of(log_dir, "interrupter"))  # its worker was killed
        assert not os.listdir(executor.directory)
    if isinstance(executor, DaskExecutor):
        _wait_until_released(executor.client)
    # the executor (a new pool, for processes) still works; close() leaves no worker behind
    assert run(session, executor, add(1, 1)) == (2,)
    directory = getattr(executor, "directory", None)
    executor.close()
    if isinstance(executor, DaskExecutor):
        executor.client.close()
    children_after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert children_after <= children_before
    assert directory is None or not os.path.exists(directory)


def _pids_of(log_dir, label):
    with open(os.path.join(log_dir, "calls.log")) as f:
        return {int(line.split()[1]) for line in f if line.split()[0] == label}


def _alive(pids):
    alive = set()
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                alive.add(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_until_released(client, timeout=10.0):
    def our_tasks(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("interrupt")]

    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(our_tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(our_tasks) == []


# -- several pulls at once ---------------------------------------------------------------------


def test_concurrent_pulls_on_overlapping_graphs_run_each_node_once(session, executor, log_dir):
    shared = [slow(log_dir, f"shared{i}", 0.02) for i in range(4)]
    graphs = [mark(log_dir, f"root{t}", *shared[t % 2 :], *shared[: t % 2]) for t in range(3)]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def pull(t):
        try:
            results[t] = run(session, executor, graphs[t])[0]
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results[0] == ("root0", "shared0", "shared1", "shared2", "shared3")
    counted = calls(log_dir)
    assert all(counted[f"shared{i}"] == 1 for i in range(4)), counted


# -- by name through the session -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["threads", "processes"])
def test_session_makes_and_closes_named_pools(name, log_dir):
    before_threads = {t.ident for t in threading.enumerate()}
    with Session(executor=name, workers=2, progress=False) as s:
        assert s.compute(add(1, 2), mark(log_dir, "m")) == (3, ("m",))
        worker_pids = _pids_of(log_dir, "m")
    lingering = [
        t
        for t in threading.enumerate()
        if t.ident not in before_threads and t.name.startswith("lazygraph")
    ]
    assert not lingering
    if name == "processes":
        assert worker_pids != {os.getpid()}
        assert not _alive(worker_pids)


# -- the registry: names to executors ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sync", SyncExecutor),
        ("threads", ThreadExecutor),
        ("processes", ProcessExecutor),
        ("dask", DaskExecutor),
    ],
)
def test_registry_makes_each_executor_by_name(name, cls):
    executor = make_executor(name, workers=3)
    try:
        assert type(executor) is cls
        assert getattr(executor, "workers", 3) == 3
    finally:
        executor.close()


def test_registry_names_are_the_ones_config_accepts():
    assert EXECUTOR_NAMES == tuple(EXECUTORS) == ("sync", "threads", "processes", "dask")
    for name in EXECUTOR_NAMES:
        assert Config.from_options(executor=name, env={}).executor == name
    with pytest.raises(ConfigError, match=r'did you mean "processes"'):
        make_executor("process", workers=1)


def test_importing_lazygraph_imports_no_executor_module():
    code = (
        "import sys, lazygraph; "
        "print(sorted(m for m in sys.modules if m.startswith('lazygraph.executors.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['lazygraph.executors.registry']"]
