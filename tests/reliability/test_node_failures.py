"""Node failures and interrupts in big graphs, under every executor (SPEC S7.1, S7.4).

Failures are real exceptions raised by node functions (chosen by flag files, so they reach
worker processes too); interrupts are real SIGINT signals sent to the main thread at random
moments of a pull, or KeyboardInterrupt raised by a node.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

import lazygraph
from lazygraph import NodeError, Session

from ._helpers import (
    Spec,
    ancestors,
    block,
    build,
    built_executors,
    evaluate,
    lazygraph_threads,
    napping,
    pull_with_interrupt,
)

EXECUTORS = built_executors()
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def reap_workers() -> Iterator[None]:
    """Kill worker processes a failing test left behind: alive, they would hang the exit."""
    yield
    for orphan in _workers(psutil.Process()):
        orphan.kill()
        orphan.wait(10)


def _session(executor: str, **options: object) -> Session:
    return Session(executor=executor, workers=2, progress=False, **options)


def _is_path(spec: Spec, names: list[str]) -> bool:
    """True when each name depends directly on the next one in ``spec``."""
    index = {label: i for i, label in enumerate(spec.labels)}
    return all(index[b] in spec.deps[index[a]] for a, b in zip(names, names[1:], strict=False))


# -- a failure deep in a 1,000-node graph -------------------------------------------------------


@pytest.mark.parametrize("executor_name", EXECUTORS, indirect=True)
def test_failure_deep_in_a_1000_node_graph_keeps_the_finished_part(executor_name, calls, faults):
    spec = Spec.random(1000, seed=1)
    x = lazygraph.Input(7, name="x")
    nodes = build(spec, [x])
    root, broken = nodes[-1], 600
    expected = evaluate(spec, [7])
    faults.fail(spec.labels[broken])
    with _session(executor_name) as session:
        with pytest.raises(NodeError) as caught:
            root.compute()
        err = caught.value
        assert err.node == "n600" and err.path[0] == "n999" and err.path[-1] == "n600"
        assert _is_path(spec, err.path), err.path
        assert isinstance(err.__cause__, ValueError)
        assert "injected failure in n600" in str(err)
        frames = [f.name for f in traceback.extract_tb(err.__cause__.__traceback__)]
        if executor_name in ("sync", "threads"):  # same process: the node's own frame is there
            assert "check_fault" in frames, frames
        first = calls.counts()
        downstream = spec.descendants(broken)
        assert first["n600"] == 1
        assert not {spec.labels[i] for i in downstream - {broken}} & set(first)
        for i in ancestors(spec, spec.deps[broken]):
            assert first[spec.labels[i]] == 1, spec.labels[i]
        assert session.store.location(nodes[broken]._key) == "absent"  # caches nothing

        faults.clear()  # "fix the input": the environment the node needed is back
        assert root.compute() == expected[-1]
        total = calls.counts()
        ran_again = {label for label in total if total[label] > first[label]}
        assert ran_again == {spec.labels[i] for i in range(1000)} - set(first) | {"n600"}
        assert all(count == 1 for label, count in total.items() if label != "n600"), total
        assert total["n600"] == 2

        assert root.compute() == expected[-1]  # nothing left to run
        assert calls.counts() == total
        assert lazygraph.compute(*nodes[::97]) == tuple(expected[::97])


@pytest.mark.parametrize("executor_name", [e for e in EXECUTORS if e != "dask"], indirect=True)
def test_bad_input_fails_then_fixing_the_input_reruns_only_its_downstream(executor_name, calls):
    spec = Spec.random(300, seed=2, inputs=2)
    good, bad = 5, -1
    x = lazygraph.Input(1, name="x")
    y = lazygraph.Input(good, name="y")
    nodes = build(spec, [x, lazygraph.node(name="checked")(checked)(y)])
    with _session(executor_name) as session:
        assert session.compute(nodes[-1]) == (evaluate(spec, [1, good])[-1],)
        before = calls.counts()
        y.set(bad)
        with pytest.raises(NodeError) as caught:
            nodes[-1].compute()
        assert caught.value.node == "checked" and "must be >= 0" in str(caught.value)
        assert isinstance(caught.value.__cause__, ValueError)
        y.set(7)
        assert nodes[-1].compute() == evaluate(spec, [1, 7])[-1]
        after = calls.counts()
        rerun = {label for label in after if after[label] > before[label]} - {"checked"}
        affected = set().union(
            *(spec.descendants(i) for i, deps in enumerate(spec.input_deps) if 1 in deps)
        )
        assert rerun <= {spec.labels[i] for i in affected}
        assert rerun, "the fixed input changed nothing downstream: the test proved nothing"
        y.set(bad)
        with pytest.raises(NodeError):
            nodes[-1].compute()
        y.set(7)  # back to a value seen before: every result is still cached (S4.3)
        settled = calls.counts()
        assert nodes[-1].compute() == evaluate(spec, [1, 7])[-1]
        assert calls.counts() == settled


def checked(value: int) -> int:
    from ._helpers import record_call

    record_call("checked")
    if value < 0:
        raise ValueError(f"value must be >= 0 (got {value})")
    return value


# -- KeyboardInterrupt ------------------------------------------------------------------------


@pytest.mark.parametrize("executor_name", [e for e in EXECUTORS if e != "dask"], indirect=True)
def test_keyboard_interrupt_raised_by_a_node_propagates(executor_name, calls, faults):
    spec = Spec.random(400, seed=3)
    nodes = build(spec, [lazygraph.Input(3, name="x")])
    expected = evaluate(spec, [3])
    faults.interrupt("n250")
    with _session(executor_name) as session:
        with pytest.raises(KeyboardInterrupt):
            nodes[-1].compute()
        assert not session.claims, "an interrupted pull kept claims on keys"
        first = calls.counts()
        assert all(first[spec.labels[i]] == 1 for i in ancestors(spec, spec.deps[250]))
        faults.clear()
        assert nodes[-1].compute() == expected[-1]
        total = calls.counts()
        assert all(count == 1 for label, count in total.items() if label != "n250"), total
        assert nodes[-1].compute() == expected[-1] and calls.counts() == total


@pytest.mark.parametrize("executor_name", EXECUTORS, indirect=True)
def test_sigint_at_random_moments_of_a_pull(executor_name, calls, reap_workers):
    """A real SIGINT lands anywhere: planning, running, spilling, storing, waiting on workers."""
    spec = Spec.random(60, seed=4, window=20)
    x = lazygraph.Input(0, name="x")
    nodes = build(spec, [x], func=block)
    root = nodes[-1]
    rng = random.Random(4)
    me = psutil.Process()
    outcomes: list[str] = []
    session = _session(executor_name, memory_limit="200kB", spill_threshold="4kB")
    try:
        start = time.perf_counter()
        _check(session, root, spec, 0)
        duration = time.perf_counter() - start
        steady_threads = len(lazygraph_threads())
        for round_ in range(1, 7):
            x.set(round_)
            delay = rng.uniform(0.0, 1.2 * duration)
            outcome = pull_with_interrupt(lambda: session.compute(root), delay)
            outcomes.append(outcome.outcome)
            assert not session.claims, "an interrupted pull kept claims on keys"
            _check(session, root, spec, round_)  # the next pull is correct
            before = calls.total()
            _check(session, root, spec, round_)  # and then served from the store
            assert calls.total() == before
            assert len(lazygraph_threads()) <= steady_threads + 2, lazygraph_threads()
            workers = _workers(me)
            assert len(workers) <= 2, [c.cmdline()[-3:] for c in workers]
        for round_ in range(7):  # every result of every round is right (cached or recomputed)
            x.set(round_)
            _check(session, root, spec, round_)
        spill_dir = session.store._spill_dir
        transport = getattr(session._executors.get(executor_name), "directory", None)
    finally:
        session.close()
    assert "interrupted" in outcomes, outcomes
    assert lazygraph_threads() == [], "threads left after close"
    assert spill_dir is None or not os.path.exists(spill_dir), "spill directory left behind"
    assert transport is None or not os.path.exists(transport), "transport directory left"


def _check(session: Session, root: lazygraph.Node, spec: Spec, x: int) -> None:
    value = session.compute(root)[0]
    expected = evaluate(spec, [x])[-1]
    assert isinstance(value, np.ndarray) and value.shape == (2000,)
    assert (value == expected).all(), f"wrong result after x={x}: {value[:3]} != {expected}"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("executor_name", [e for e in EXECUTORS if e == "processes"], indirect=True)
def test_ctrl_c_reaching_the_worker_processes_too(executor_name, calls, reap_workers):
    """A terminal's Ctrl-C signals the whole process group: the workers get SIGINT as well."""
    import signal

    spec = Spec.random(80, seed=5, window=10)
    x = lazygraph.Input(0, name="x")
    nodes = build(spec, [x], func=block)
    me = psutil.Process()
    outcomes = []
    with _session(executor_name, spill_threshold="4kB") as session:
        _check(session, nodes[-1], spec, 0)
        for round_ in range(1, 4):
            x.set(round_)

            def pull_and_signal_workers() -> object:
                for child in me.children():
                    if "resource_tracker" not in " ".join(_cmdline(child)):
                        child.send_signal(signal.SIGINT)
                return session.compute(nodes[-1])

            outcomes.append(pull_with_interrupt(pull_and_signal_workers, 0.0).outcome)
            _check(session, nodes[-1], spec, round_)
    assert "interrupted" in outcomes
    assert lazygraph_threads() == []


def _workers(me: psutil.Process) -> list[psutil.Process]:
    return [c for c in me.children() if "resource_tracker" not in " ".join(_cmdline(c))]


@pytest.mark.parametrize("executor_name", EXECUTORS, indirect=True)
def test_interrupt_while_nodes_run_in_workers(executor_name, calls, reap_workers):
    """Ctrl-C while every worker is busy: nothing keeps running or lingers afterwards."""
    spec = Spec([f"z{i}" for i in range(6)], [[] for _ in range(6)], [[0]] * 6)
    x = lazygraph.Input(1, name="x")
    nodes = build(spec, [x], func=napping)
    me = psutil.Process()
    with _session(executor_name) as session:
        session.compute(nodes[0])  # pools and workers are up
        x.set(2)
        outcome = pull_with_interrupt(lambda: session.compute(*nodes), 0.15)
        assert outcome.outcome == "interrupted"
        assert not session.claims
        time.sleep(0.4)  # what was running has finished or been stopped by now
        busy = _workers(me)
        assert session.compute(*nodes) == tuple(evaluate(spec, [2]))
        after = _workers(me)
    assert len(busy) <= 2 and len(after) <= 2, (busy, after)
    assert lazygraph_threads() == []
    deadline = time.monotonic() + 5
    while _workers(me) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _workers(me) == [], "worker processes outlived the session"
