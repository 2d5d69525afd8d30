"""Results that stay on a Dask cluster: the cluster tier and the Dask executor (SPEC S6.1).

On a real LocalCluster with worker processes (shared by the module): the client's store
holds references, not values, and its memory does not grow with intermediate results;
only pulled values travel; a later pull uses what the cluster holds; the tier keeps its
byte budget; a node error keeps the finished part; workers write authenticated entries
that a fresh client process loads without recomputing; incremental pulls run only the
stale part on the cluster, with early cutoff decided from digests computed there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lazygraph import Input, NodeError, Session, node
from lazygraph.executors.dask import DaskExecutor, dask_key
from lazygraph.executors.dask_run import DIGEST_PREFIX
from lazygraph.pressure import process_memory
from lazygraph.store.base import MISSING
from lazygraph.store.cluster import ClusterTier, Remote

distributed = pytest.importorskip("distributed")

import test_executors  # noqa: E402 - after the importorskip
from test_executors import calls, log_call  # noqa: E402

dask_cluster = test_executors.dask_cluster  # the module-scoped LocalCluster fixture, shared
log_dir = test_executors.log_dir

MB = 2**20


@node
def chunk(log_dir, seed, mb):
    log_call(log_dir, "chunk")
    return np.random.default_rng(seed).standard_normal(mb * MB // 8)


@node
def mean_of(log_dir, values):
    log_call(log_dir, "mean_of")
    return float(values.mean())


@node
def total(log_dir, *parts):
    log_call(log_dir, "total")
    return float(sum(parts))


@node
def parity_chunk(log_dir, x, mb):
    log_call(log_dir, "parity_chunk")
    return np.full(mb * MB // 8, x % 2, dtype=np.float64)


@node
def first_of(values):
    return float(values[0])


@node
def broken(x):
    raise ValueError("no good")


@node
def both(a, b):
    return a, b


@pytest.fixture
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def session(client):
    with Session(progress=False, executor=DaskExecutor(client)) as s:
        yield s


def _task_keys(stream) -> set[str]:
    return {str(t["key"]) for t in stream.data}


def _ran(stream) -> set[str]:
    """Task keys that ran, without the digest tasks (they hash, they compute nothing)."""
    return {k for k in _task_keys(stream) if not k.startswith(DIGEST_PREFIX)}


def test_results_stay_on_the_cluster_and_only_the_pulled_value_travels(session, client, log_dir):
    chunks = [chunk(log_dir, i, 40) for i in range(5)]  # 200 MB in all
    means = [mean_of(log_dir, c) for c in chunks]
    root = total(log_dir, *means)
    before = process_memory()
    (value,) = session.compute(root)
    grown = process_memory() - before
    assert value == pytest.approx(sum(float(np.random.default_rng(i).standard_normal(
        40 * MB // 8).mean()) for i in range(5)))
    store = session.store
    assert {store.location(c._key) for c in chunks} == {"cluster"}
    assert {store.location(m._key) for m in means} == {"cluster"}
    assert store.location(root._key) == "memory"
    assert session.stats().bytes_in_memory < MB  # the root's float, not the chunks
    assert grown < 100 * MB, grown  # 200 MB of intermediates never came here
    # a second pull runs nothing anywhere and returns the very object
    with distributed.get_task_stream(client) as stream:
        assert session.compute(root)[0] is value
    assert _task_keys(stream) == set()
    assert calls(log_dir) == {"chunk": 5, "mean_of": 5, "total": 1}


def test_pulling_an_intermediate_brings_exactly_that_value(session, client, log_dir):
    chunks = [chunk(log_dir, i, 1) for i in range(3)]
    session.compute(total(log_dir, *[mean_of(log_dir, c) for c in chunks]))
    with distributed.get_task_stream(client) as stream:
        (got,) = session.compute(chunks[1])
    assert _task_keys(stream) == set()  # nothing ran: the held result came back as it is
    np.testing.assert_array_equal(got, np.random.default_rng(1).standard_normal(MB // 8))
    assert calls(log_dir) == {"chunk": 3, "mean_of": 3, "total": 1}


def test_a_later_pull_uses_results_where_they_are(session, client, log_dir):
    chunks = [chunk(log_dir, i, 1) for i in range(3)]
    session.compute(total(log_dir, *[mean_of(log_dir, c) for c in chunks]))
    other = total(log_dir, *[mean_of(log_dir, c) for c in chunks], 1.0)
    scattered: list[object] = []
    real_scatter = client.scatter
    client.scatter = lambda *a, **k: scattered.append(a) or real_scatter(*a, **k)
    try:
        with distributed.get_task_stream(client) as stream:
            session.compute(other)
    finally:
        del client.scatter
    assert _ran(stream) == {dask_key(other)}  # the means were referenced, not sent
    assert scattered == []
    assert calls(log_dir) == {"chunk": 3, "mean_of": 3, "total": 2}


def test_the_cluster_tier_keeps_its_budget(client, log_dir):
    with Session(progress=False, executor=DaskExecutor(client), cluster_limit="5MB") as s:
        chunks = [chunk(log_dir, i, 2) for i in range(4)]  # 8 MB held, 5 MB allowed
        s.compute(*[mean_of(log_dir, c) for c in chunks])
        where = [s.store.location(c._key) for c in chunks]
        assert sorted(where) == ["absent", "absent", "cluster", "cluster"]
        count, nbytes = s.store.cluster.sizes()
        assert 4 * MB <= nbytes <= 5 * MB
        # what the tier let go of, the workers let go of too (nobody else wants it)
        gone = dask_key(chunks[where.index("absent")])
        kept = dask_key(chunks[where.index("cluster")])
        _wait(lambda: gone not in client.run_on_scheduler(_in_memory))
        assert kept in client.run_on_scheduler(_in_memory)


def _in_memory(dask_scheduler):
    return [str(k) for k, ts in dask_scheduler.tasks.items() if ts.state == "memory"]


def _wait(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_another_executor_brings_a_held_result_instead_of_recomputing(session, log_dir):
    c = chunk(log_dir, 11, 1)
    session.compute(mean_of(log_dir, c))
    (values,) = session.compute(c, executor="sync")
    assert values.shape == (MB // 8,)
    assert session.compute(mean_of(log_dir, c), executor="threads")[0] == pytest.approx(
        float(values.mean()))
    assert calls(log_dir) == {"chunk": 1, "mean_of": 1}


def test_a_node_error_on_a_worker_keeps_the_finished_part(session, client, log_dir):
    done = chunk(log_dir, 7, 1)
    with pytest.raises(NodeError, match="no good") as info:
        session.compute(both(mean_of(log_dir, done), broken(done)))
    assert info.value.node == "broken"
    assert session.store.location(done._key) == "cluster"
    with distributed.get_task_stream(client) as stream:
        session.compute(both(mean_of(log_dir, done), 1))
    assert _ran(stream) == {dask_key(both(mean_of(log_dir, done), 1))}
    assert calls(log_dir)["chunk"] == 1


def test_incremental_pulls_run_only_the_stale_part_with_cutoff_from_digests(session, client,
                                                                            log_dir):
    inputs = [Input(i, name=f"x{i}") for i in range(3)]
    parts = [parity_chunk(log_dir, x, 1) for x in inputs]
    means = [mean_of(log_dir, p) for p in parts]
    root = total(log_dir, *means)
    assert session.compute(root) == (1.0,)
    inputs[1].set(5)  # same parity: the chunk's content is unchanged -> cut off there
    with distributed.get_task_stream(client) as stream:
        assert session.compute(root) == (1.0,)
    assert _ran(stream) == {dask_key(parts[1])}
    inputs[2].set(3)  # parity changes: chunk, its mean and the total run again
    with distributed.get_task_stream(client) as stream:
        assert session.compute(root) == (2.0,)
    assert _ran(stream) == {dask_key(parts[2]), dask_key(means[2]), dask_key(root)}
    assert calls(log_dir) == {"parity_chunk": 5, "mean_of": 4, "total": 2}


_FRESH = """
import sys
import test_cluster as t
from lazygraph import Session
with Session(cache_dir=sys.argv[1], progress=False) as s:
    print(s.compute(t.total(sys.argv[2], *[t.mean_of(sys.argv[2], t.chunk(sys.argv[2], i, 1))
                                        for i in range(3)]))[0])
    print(s.stats().reloads)
"""


def test_workers_write_entries_a_fresh_client_process_loads(client, log_dir, tmp_path):
    cache = tmp_path / "cache"
    chunks = [chunk(log_dir, i, 1) for i in range(3)]
    root = total(log_dir, *[mean_of(log_dir, c) for c in chunks])
    with Session(progress=False, executor=DaskExecutor(client), cache_dir=cache) as s:
        (value,) = s.compute(root)
        writers = _pids_of(log_dir, "chunk")
        assert os.getpid() not in writers
    entries = sorted(p.name for p in cache.iterdir() if p.is_file())
    assert len(entries) == 7  # 3 chunks and 3 means written by workers, the total here
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    done = subprocess.run([sys.executable, "-c", _FRESH, str(cache), log_dir], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[0]) == value
    assert calls(log_dir) == {"chunk": 3, "mean_of": 3, "total": 1}  # nothing recomputed


def _pids_of(log_dir, label):
    with open(os.path.join(log_dir, "calls.log")) as f:
        return {int(line.split()[1]) for line in f if line.split()[0] == label}


# -- the tier alone ---------------------------------------------------------------------------


def test_tier_get_brings_one_value_and_forgets_a_lost_one(client):
    tier = ClusterTier(client, max_bytes=10 * MB)
    try:
        [future] = client.scatter([np.arange(4)], hash=False)
        tier.hold(b"k" * 16, Remote(future, nbytes=32))
        assert tier.ref(b"k" * 16).future is future
        np.testing.assert_array_equal(tier.get(b"k" * 16), np.arange(4))
        client.cancel([future])
        assert tier.get(b"k" * 16) is MISSING and b"k" * 16 not in tier
    finally:
        tier.close()


def test_workers_load_entries_themselves_nothing_passes_through_here(client, log_dir, tmp_path):
    cache = tmp_path / "cache"
    chunks = [chunk(log_dir, i, 2) for i in range(2)]
    with Session(progress=False, executor=DaskExecutor(client), cache_dir=cache) as s:
        s.compute(*[mean_of(log_dir, c) for c in chunks])
    with Session(progress=False, executor=DaskExecutor(client), cache_dir=cache) as s:
        s.compute(total(log_dir, 5.0))  # a pull on the cluster attaches its tier
        scattered: list[object] = []
        real_scatter = client.scatter
        client.scatter = lambda *a, **k: scattered.append(a) or real_scatter(*a, **k)
        try:
            with distributed.get_task_stream(client) as stream:
                firsts = s.compute(*[first_of(c) for c in chunks])
        finally:
            del client.scatter
        assert scattered == []  # the chunks went from disk to the workers, not through here
        assert sum(k.startswith("lgload-") for k in _task_keys(stream)) == 2
        assert s.stats().reloads == 0
    assert calls(log_dir)["chunk"] == 2
    assert firsts == tuple(np.random.default_rng(i).standard_normal(2)[0] for i in range(2))


@node(local=True)
def here_sum(values):
    return os.getpid(), float(values.sum())


def test_a_local_node_gets_a_held_input_as_its_value(session, log_dir):
    c = chunk(log_dir, 12, 1)
    session.compute(mean_of(log_dir, c))  # c stays on the cluster
    ((pid, got),) = session.compute(here_sum(c))
    assert pid == os.getpid() and isinstance(got, float)
    assert calls(log_dir) == {"chunk": 1, "mean_of": 1}
