"""Concurrency: threads sharing a session, processes sharing a cache directory (SPEC S7.5, S5.7).

Run-once is checked by counting real calls; correctness by comparing every result with a
naive evaluator. Processes are real interpreters started together and writing and reading
the same keys at the same moments.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import lazygraph
from lazygraph import Session
from lazygraph.store import cachedir

from ._helpers import (
    Spec,
    ancestors,
    block,
    build,
    built_executors,
    entry_files,
    evaluate,
    run_child,
    slow_step,
    start_child,
    temp_files,
)

pytestmark = pytest.mark.timeout(180)
THREADS = 8


def _in_threads(work: Callable[[int], object], count: int = THREADS) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"lgtest-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a pulling thread hung"
    if errors:
        raise errors[0]
    return results


def _roots_for(thread: int, n: int) -> list[int]:
    """Overlapping slices of the graph, one per thread, plus the shared last node."""
    start = (thread * n) // (THREADS + 2)
    return list(range(start, min(n, start + n // 3), 3)) + [n - 1]


@pytest.mark.parametrize("executor", [e for e in built_executors() if e in ("sync", "threads")])
def test_eight_threads_pulling_overlapping_graphs_run_each_node_once(calls, executor):
    spec = Spec.random(240, seed=21, window=30)
    x = lazygraph.Input(0, name="x")
    nodes = build(spec, [x], func=slow_step)
    with Session(executor=executor, workers=2, progress=False) as session:
        for round_ in range(3):
            x.set(round_)
            before = calls.counts()
            expected = evaluate(spec, [round_])

            def pull(thread: int, expected: list[int] = expected) -> bool:
                roots = _roots_for(thread, len(nodes))
                values = session.compute(*(nodes[i] for i in roots))
                return values == tuple(expected[i] for i in roots)

            assert all(_in_threads(pull)), "a thread got a wrong result"
            ran = calls.counts() - before
            assert max(ran.values()) == 1, {k: v for k, v in ran.items() if v > 1}
            pulled = set().union(
                *(ancestors(spec, _roots_for(t, len(nodes))) for t in range(THREADS))
            )
            stale = (
                set().union(
                    *(spec.descendants(i) for i, deps in enumerate(spec.input_deps) if deps)
                )
                if round_
                else pulled
            )
            assert set(ran) == {spec.labels[i] for i in pulled & stale}
            assert not session.claims


def test_threads_under_memory_pressure_and_spilling_get_right_results(calls):
    """Tiny limits: entries are evicted, spilled and reloaded while eight threads pull."""
    spec = Spec.random(120, seed=22, window=15)
    x = lazygraph.Input(0, name="x")
    nodes = build(spec, [x], func=block)
    rng = random.Random(22)
    with Session(memory_limit="48kB", spill_threshold="4kB", progress=False) as session:
        for round_ in range(3):
            x.set(round_ % 2)
            expected = evaluate(spec, [round_ % 2])
            picks = [rng.sample(range(120), 12) for _ in range(THREADS)]

            def pull(
                thread: int, picks: list[list[int]] = picks, expected: list[int] = expected
            ) -> bool:
                ok = True
                for i in picks[thread]:
                    value = session.compute(nodes[i])[0]
                    ok &= bool((value == expected[i]).all())
                    session.store.evict()  # shed while the others pull
                return ok

            assert all(_in_threads(pull))
        assert session.stats().spills > 0 and session.stats().reloads > 0


def test_threads_setting_inputs_while_others_pull_never_see_a_mix(calls):
    """Pulls racing Input.set(): each result is the graph's value for one of the inputs."""
    spec = Spec.random(80, seed=23, window=10)
    x = lazygraph.Input(0, name="x")
    nodes = build(spec, [x], func=slow_step)
    valid = {v: evaluate(spec, [v])[-1] for v in range(4)}
    with Session(progress=False) as session:
        stop = threading.Event()

        def setter() -> None:
            rng = random.Random(1)
            while not stop.is_set():
                x.set(rng.randrange(4))
                time.sleep(0.001)

        changer = threading.Thread(target=setter, name="lgtest-setter")
        changer.start()
        try:
            results = _in_threads(lambda _: [session.compute(nodes[-1])[0] for _ in range(5)], 4)
        finally:
            stop.set()
            changer.join()
        seen = [value for batch in results for value in batch]  # type: ignore[union-attr]
        assert all(value in valid.values() for value in seen), "a result mixed two inputs"
        x.set(2)
        assert session.compute(nodes[-1]) == (valid[2],)


def _close_while_pulling(executor: str, spec: Spec, valid: object, delay: float) -> None:
    """Four threads pull while eight close the session together; check what each saw."""
    session = Session(progress=False, executor=executor, workers=2)
    x = lazygraph.Input(3, name="x")
    nodes = build(spec, [x], func=slow_step)
    outcomes: list[object] = []

    def pull() -> None:
        for _ in range(3):
            try:
                outcomes.append(session.compute(nodes[-1])[0])
            except lazygraph.LazyGraphError as exc:
                assert "closed" in str(exc), exc
                outcomes.append("closed")
                return

    pullers = [threading.Thread(target=pull, name=f"lgtest-pull-{i}") for i in range(4)]
    for t in pullers:
        t.start()
    time.sleep(delay)
    _in_threads(lambda _: session.close())
    for t in pullers:
        t.join(60)
    assert not any(t.is_alive() for t in pullers), "a pull hung after close()"
    assert session.closed and not session._executors, "an executor outlived close()"
    assert all(o == valid or o == "closed" for o in outcomes), outcomes
    session.close()  # and once more, from the test thread


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_close_from_many_threads_at_once_while_others_pull(executor):
    """Session.close() is idempotent and thread-safe (S7.5): every close returns without
    error, every pull returns a right value or the "closed" error, no executor survives."""
    spec = Spec.random(60, seed=5, window=8)
    valid = evaluate(spec, [3])[-1]
    for attempt in range(5):
        _close_while_pulling(executor, spec, valid, 0.002 * attempt)


# -- processes sharing one cache_dir -----------------------------------------------------------

SHARER = """
import json, os, random, sys, time
import numpy as np
import lazygraph
from reliability._helpers import Spec, block, build, evaluate
cache, me, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = Spec.random(30, seed=31, window=6)
x = lazygraph.Input(0, name="x")
nodes = build(spec, [x], func=block)
order = list(range(6)) * 2
random.Random(me).shuffle(order)
while not os.path.exists(go):  # start together: the writes and reads overlap
    time.sleep(0.001)
wrong = checked = 0
with lazygraph.Session(cache_dir=cache, memory_limit="64kB", spill_threshold="1kB",
                       progress=False) as session:
    for value in order:
        x.set(value)
        expected = evaluate(spec, [value])
        picks = random.Random(me * 100 + value).sample(range(30), 10) + [29]
        for i, got in zip(picks, lazygraph.compute(*(nodes[i] for i in picks))):
            checked += 1
            wrong += int(not (got == expected[i]).all())
print(json.dumps({"wrong": wrong, "checked": checked}))
"""

VERIFIER = """
import json, sys
import lazygraph
from reliability._helpers import Spec, block, build, evaluate
spec = Spec.random(30, seed=31, window=6)
x = lazygraph.Input(0, name="x")
nodes = build(spec, [x], func=block)
wrong = 0
with lazygraph.Session(cache_dir=sys.argv[1], progress=False) as session:
    for value in range(6):
        x.set(value)
        expected = evaluate(spec, [value])
        wrong += sum(int(not (g == e).all()) for g, e in zip(lazygraph.compute(*nodes), expected))
print(json.dumps({"wrong": wrong}))
"""


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_one_cache_dir(tmp_path: Path, calls, processes: int):
    cache, go = tmp_path / "cache", tmp_path / "go"
    children = [start_child(SHARER, str(cache), str(i), str(go)) for i in range(processes)]
    time.sleep(0.3)  # let them import; they wait for the go file
    go.touch()
    reports = []
    for child in children:
        out, err = child.communicate(timeout=150)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    assert all(r["wrong"] == 0 for r in reports), reports
    assert sum(r["checked"] for r in reports) == processes * 12 * 11
    assert temp_files(cache) == []
    info = cachedir.cache_info(cache)
    assert info["invalid"] == 0, "a process left an entry that does not authenticate"
    before = calls.total()
    assert json.loads(run_child(VERIFIER, str(cache)).stdout) == {"wrong": 0}
    ran = calls.total() - before
    assert ran < 6 * 30, "the shared cache served nothing"
    assert len(entry_files(cache)) >= 6 * 11 - ran
