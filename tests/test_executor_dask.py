"""The Dask executor on a real LocalCluster with worker processes (SPEC S6.1).

Work runs on the workers (their pids), under lazygraph keys, so Dask runs equal work once
even for two independent sessions; cached results are never recomputed on the cluster (held
there, or sent as data); Dask's current-client convention; errors that name the node.
tests/test_cluster.py covers results that stay on the cluster.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from lazygraph import ConfigError, NodeError, Session, node
from lazygraph.executors.dask import DaskExecutor, dask_key

distributed = pytest.importorskip("distributed")

import test_executors  # noqa: E402 - after the importorskip
from test_executors import calls, log_call  # noqa: E402

dask_cluster = test_executors.dask_cluster  # the module-scoped LocalCluster fixture, shared
session, log_dir = test_executors.session, test_executors.log_dir  # the same fixtures


@node
def worker_pid(x):
    return os.getpid(), x


@node
def base(log_dir, n):
    log_call(log_dir, "base")
    return list(range(n))


@node
def summed(log_dir, values):
    log_call(log_dir, "summed")
    return sum(values)


@node
def wait_for(log_dir, path):
    log_call(log_dir, "wait_for")
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@node
def broken(x):
    raise KeyError(f"no such column: {x}")


@node
def after(x):
    return x


@node(local=True)
def a_local_lock():
    return threading.Lock()


@node(local=True)
def here_pid():
    return os.getpid()


@pytest.fixture
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def test_work_runs_on_the_workers(session, client):
    ours = os.getpid()
    worker_pids = set(client.run(os.getpid).values())
    results = session.compute(*[worker_pid(i) for i in range(6)], executor=DaskExecutor(client))
    pids = {pid for pid, _ in results}
    assert pids <= worker_pids and ours not in pids
    assert [x for _, x in results] == list(range(6))


def test_tasks_use_lazygraph_keys_and_cached_results_are_not_recomputed(session, client, log_dir):
    ex = DaskExecutor(client)
    b = base(log_dir, 5)
    with distributed.get_task_stream(client) as first:
        assert session.compute(b, executor=ex) == ([0, 1, 2, 3, 4],)
    assert {t["key"] for t in first.data} == {dask_key(b)}
    s = summed(log_dir, b)
    with distributed.get_task_stream(client) as second:
        assert session.compute(s, executor=ex) == (10,)
    # only the new node ran on the cluster; the cached list was used there
    assert {t["key"] for t in second.data} == {dask_key(s)}
    assert calls(log_dir) == {"base": 1, "summed": 1}
    assert session.stats().hits >= 1


def test_equal_work_from_two_sessions_runs_once_on_the_cluster(dask_cluster, log_dir):
    stop = os.path.join(log_dir, "stop")
    results: list[object] = []
    with (
        distributed.Client(dask_cluster, set_as_default=False) as c1,
        distributed.Client(dask_cluster, set_as_default=False) as c2,
        Session(progress=False) as s1,
        Session(progress=False) as s2,
    ):
        pulls = [
            threading.Thread(
                target=lambda s=s, c=c: results.extend(
                    s.compute(wait_for(log_dir, stop), executor=DaskExecutor(c))
                )
            )
            for s, c in ((s1, c1), (s2, c2))
        ]
        for t in pulls:
            t.start()
        key = dask_key(wait_for(log_dir, stop))
        _wait_for_wanted(c1, key, wanted_by=2)  # both sessions wait on the one task
        with open(stop, "w"):
            pass
        for t in pulls:
            t.join(30)
    assert results == ["released", "released"]
    assert calls(log_dir) == {"wait_for": 1}


def _wait_for_wanted(client, key, *, wanted_by, timeout=20.0):
    def wanters(dask_scheduler, key=key):
        ts = dask_scheduler.tasks.get(key)
        return 0 if ts is None else len(ts.who_wants)

    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(wanters) < wanted_by:
        assert time.monotonic() < deadline, f"{key} was not wanted by {wanted_by} clients"
        time.sleep(0.02)


def test_the_current_client_is_used_by_name(dask_cluster):
    with distributed.Client(dask_cluster), Session(executor="dask", progress=False) as s:
        (pid, x) = s.compute(worker_pid(1))[0]
    assert pid != os.getpid() and x == 1


def test_no_client_is_a_clear_error(session):
    with pytest.raises(ConfigError, match="needs a dask.distributed Client"):
        session.compute(worker_pid(1), executor=DaskExecutor())


def test_the_failing_node_is_named_with_its_original_exception(session, client):
    with pytest.raises(NodeError) as info:
        session.compute(after(after(broken("price"))), executor=DaskExecutor(client))
    err = info.value
    assert err.node == "broken" and err.path == ["after", "after", "broken"]
    assert isinstance(err.__cause__, KeyError)
    assert err.__cause__.__traceback__ is not None  # the worker's traceback came along


def test_a_task_that_cannot_be_sent_names_its_node(session, client):
    lock = threading.Lock()
    holds_lock = node(name="holds_lock")(lambda: lock.locked())
    with pytest.raises(NodeError, match="local=True") as info:
        session.compute(after(holds_lock()), executor=DaskExecutor(client))
    assert info.value.node == "holds_lock"


def test_local_nodes_run_here_and_their_results_go_to_the_cluster_as_data(session, client):
    ex = DaskExecutor(client)
    pulled = session.compute(worker_pid(here_pid()), a_local_lock(), executor=ex)
    (remote_pid, local_pid), lock = pulled
    assert local_pid == os.getpid() and remote_pid != os.getpid()
    assert type(lock) is type(threading.Lock())  # never had to leave this process
