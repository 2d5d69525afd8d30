"""The pull: identity, run-once, deep graphs, errors, cycles, interrupts (SPEC S1, S2, S7)."""

from __future__ import annotations

import collections
import pickle
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import lazygraph
from lazygraph import CycleError, Input, NodeError, Session, node


@pytest.fixture
def session():
    with Session(progress=False) as s:
        yield s


@pytest.fixture
def calls():
    return collections.Counter()


def counted(calls, name=None):
    def deco(f):
        def wrapper(*args, **kwargs):
            calls[f.__name__] += 1
            return f(*args, **kwargs)

        wrapper.__name__ = wrapper.__qualname__ = f.__name__
        return node(name=name or f.__name__)(wrapper)

    return deco


def _chain(calls, length, fail_at=None):
    """``length`` small nodes, each adding one to the last; node ``fail_at`` raises."""

    @counted(calls)
    def step(x, i):
        if i == fail_at:
            raise ValueError(f"step {i} is broken")
        return x + 1

    nodes = [step(0, 0)]
    for i in range(1, length):
        nodes.append(step(nodes[-1], i))
    return nodes


def test_building_runs_nothing(session, calls):
    @counted(calls)
    def f(x):
        return x

    n = f(f(1))
    assert calls == {}
    assert n.compute() == 1
    assert calls["f"] == 2


def test_identity_through_chain_and_diamond(session):
    seen = {}

    @node
    def make():
        return np.arange(10)

    @node
    def left(a):
        seen["left"] = a
        return a

    @node
    def right(a):
        seen["right"] = a
        return a[:3]

    @node
    def join(a, b):
        seen["join"] = (a, b)
        return [a, b]

    src = make()
    top = join(left(src), right(src))
    out = top.compute()
    arr = src.compute()
    assert seen["left"] is arr and seen["right"] is arr
    assert out[0] is arr and seen["join"][0] is arr
    assert top.compute() is out  # S2.3: the same object, nothing runs


def test_diamond_runs_each_node_once(session, calls):
    @counted(calls)
    def base():
        return 1

    @counted(calls)
    def inc(x, by):
        return x + by

    @counted(calls)
    def add(a, b):
        return a + b

    b = base()
    top = add(inc(b, 1), inc(b, 2))
    assert top.compute() == 5
    assert calls == {"base": 1, "inc": 2, "add": 1}
    assert top.compute() == 5
    assert calls == {"base": 1, "inc": 2, "add": 1}


def test_equal_calls_share_one_key_and_result(session, calls):
    @counted(calls)
    def heavy(x):
        return [x]

    a, b = heavy(3), heavy(3)
    assert a is not b and a.key == b.key
    ra, rb = lazygraph.compute(a, b)
    assert ra is rb
    assert calls["heavy"] == 1
    assert heavy(3).compute() is ra  # a new Node object with the same key is a hit
    assert calls["heavy"] == 1


def test_nodes_nested_in_containers(session):
    @node
    def val(x):
        return x

    @node
    def collect(items, mapping, group, pair):
        return items, mapping, group, pair

    items, mapping, group, pair = collect(
        [val(1), [val(2)]], {"a": val(3)}, {val(4)}, (val(5), 6)
    ).compute()
    assert items == [1, [2]] and mapping == {"a": 3} and group == {4} and pair == (5, 6)
    n = collect([val(1)], {}, set(), ())
    assert len(n.deps) == 1


def test_compute_returns_tuple_in_argument_order(session):
    @node
    def ident(x):
        return x

    assert lazygraph.compute(ident("b"), ident("a")) == ("b", "a")


def test_deep_chain_without_recursion(session):
    @node
    def inc(x):
        return x + 1

    limit = sys.getrecursionlimit()
    n = 0
    for _ in range(100_000):
        n = inc(n)
    assert n.compute() == 100_000
    assert sys.getrecursionlimit() == limit


def test_numpy_pandas_values_keep_their_metadata(session):
    arr = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))[:, ::2]
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="id"))
    frame.attrs["unit"] = "m"

    @node
    def passthrough(v):
        return v

    out_arr, out_frame = lazygraph.compute(passthrough(arr), passthrough(frame))
    assert out_arr is arr and out_arr.strides == arr.strides and out_arr.dtype == np.float32
    assert out_frame is frame and out_frame.index.name == "id" and out_frame.attrs == {"unit": "m"}


def test_torch_tensor_keeps_dtype_and_grad(session):
    torch = pytest.importorskip("torch")
    t = torch.ones(3, dtype=torch.float16, requires_grad=False)
    g = torch.ones(2, requires_grad=True)

    @node
    def scale(x):
        return x * 2

    out, out_g = lazygraph.compute(scale(t), scale(g))
    assert out.dtype == torch.float16
    assert out_g.requires_grad and out_g.grad_fn is not None


class Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("no pickling")


def test_unpicklable_arguments_and_results(session):
    lock = threading.Lock()

    @node
    def wrap(x):
        return (x, Unpicklable(), lambda: 1)

    n = wrap(lock)
    out = n.compute()
    assert out[0] is lock
    assert n.compute() is out
    assert n._persistable is False


def test_node_error_names_node_and_path(session, calls):
    @counted(calls)
    def ok(x):
        return x

    @counted(calls)
    def boom(x):
        raise ValueError(f"bad {x}")

    @counted(calls)
    def top(a, b):
        return a + b

    good = ok(1)
    n = top(good, boom(ok(2)))
    with pytest.raises(NodeError) as info:
        n.compute()
    err = info.value
    assert err.node == "boom"
    assert err.path == ["top", "boom"]
    assert isinstance(err.__cause__, ValueError) and "bad 2" in str(err)
    assert err.__cause__.__traceback__ is not None
    assert "boom" in str(err) and "top -> boom" in str(err)
    assert isinstance(err, lazygraph.LazyGraphError)
    # the finished part stays cached, the failed node cached nothing
    assert session.store.location(good._key) == "memory"
    assert session.store.location(n.deps[1]._key) == "absent"
    before = dict(calls)
    with pytest.raises(NodeError):
        n.compute()
    assert calls["ok"] == before["ok"]  # no rerun of finished nodes
    assert calls["boom"] == before["boom"] + 1


def test_fixing_an_input_after_failure_works(session, calls):
    x = Input(0, name="x")

    @counted(calls)
    def inverse(v):
        return 1 / v

    n = inverse(x)
    with pytest.raises(NodeError) as info:
        n.compute()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    x.set(4)
    assert n.compute() == 0.25


def test_cycle_through_input_is_refused(session):
    x = Input(1, name="x")

    @node
    def double(v):
        return 2 * v

    d = double(x)
    with pytest.raises(CycleError) as info:
        x.set(d)
    assert info.value.cycle[0] == "x" and "double" in info.value.cycle
    assert "x" in str(info.value) and "double" in str(info.value)
    assert d.compute() == 2  # the Input kept its value


def test_input_may_hold_a_node(session):
    @node
    def ten():
        return 10

    @node
    def plus(a, b):
        return a + b

    x = Input(1, name="x")
    n = plus(x, 1)
    assert n.compute() == 2
    x.set(ten())
    assert n.compute() == 11


def test_keyboard_interrupt_is_not_wrapped_and_store_stays_consistent(session, calls):
    state = {"interrupt": True}

    @counted(calls)
    def stopper(x):
        if state["interrupt"]:
            raise KeyboardInterrupt
        return x + 1

    steps = _chain(calls, 100)  # more than a batch of small results: all stored anyway
    n = stopper(steps[-1])
    with pytest.raises(KeyboardInterrupt):
        n.compute()
    assert not session.claims
    state["interrupt"] = False
    assert n.compute() == 101
    assert calls == {"step": 100, "stopper": 2}


def test_compute_rejects_non_nodes(session):
    with pytest.raises(TypeError, match="expects Nodes"):
        session.compute(42)


def test_node_repr_name_and_hashability(session):
    @node(name="loader")
    def load(path):
        return path

    n = load("a.csv")
    assert n.name == "loader"
    assert "loader" in repr(n)
    assert {n: 1}[n] == 1
    assert len(n.key) == 32
    assert n.key in repr(n) or n.key[:12] in repr(n)


def test_cache_false_reruns(session, calls):
    @counted(calls)
    def fresh():
        return object()

    fresh_node = node(cache=False)(fresh.func)
    n = fresh_node()
    a = n.compute()
    b = n.compute()
    assert a is not b


def test_interleaved_sessions_have_separate_stores(calls):
    @counted(calls)
    def value():
        return [1]

    with Session(progress=False):
        a = value().compute()
        with Session(progress=False):
            b = value().compute()
        assert value().compute() is a
    assert a is not b and calls["value"] == 2


def test_node_in_a_container_and_at_top_level_is_replaced_in_both(session):
    @node
    def val():
        return 7

    @node
    def both(a, items):
        return a, items

    v = val()
    assert both(v, [v, 2]).compute() == (7, [7, 2])


# -- the sync loop's batches: small results reach the store 64 at a time ----------------------


def test_results_before_a_failure_are_stored_whatever_the_batch(session, calls):
    nodes = _chain(calls, 150, fail_at=130)  # two full batches, then 2 results in the third
    with pytest.raises(NodeError, match="step 130 is broken"):
        nodes[-1].compute()
    assert calls["step"] == 131
    assert not session.claims
    assert session.stats().computes == 130
    assert all(session.store.location(n._key) == "memory" for n in nodes[:130])
    assert nodes[129].compute() == 130 and calls["step"] == 131  # stored, not rerun


def test_a_large_result_reaches_the_store_before_the_next_node_runs(session):
    seen = {}

    @node
    def big():
        return np.zeros(100_000)  # 800 kB: the store's byte budget must see it at once

    @node
    def small(a):
        return 1

    @node
    def look(a, b):
        store = lazygraph.current_session().store
        seen["big"] = store.location(a_node._key)
        seen["bytes"] = store.stats().bytes_in_memory
        return b

    a_node = big()
    look(a_node, small(a_node)).compute()
    assert seen["big"] == "memory"
    assert seen["bytes"] >= 800_000


def test_a_pull_in_another_thread_waits_for_a_batched_result(session, calls):
    reached, go = threading.Event(), threading.Event()

    @counted(calls)
    def step(x):
        return x + 1

    @counted(calls)
    def gate(x):
        reached.set()
        assert go.wait(10)
        return x

    nodes = [step(0)]
    for _ in range(9):
        nodes.append(step(nodes[-1]))
    root = step(gate(nodes[-1]))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", root.compute()))
    first.start()
    assert reached.wait(10)  # ten results wait in the first pull's batch, their keys claimed
    second = threading.Thread(target=lambda: results.setdefault("second", nodes[-1].compute()))
    second.start()
    for _ in range(1000):  # until the second pull waits for a claimed key
        if session.claims.waiting:
            break
        threading.Event().wait(0.01)
    assert session.claims.waiting, "the second pull did not wait for the first one's claim"
    go.set()
    first.join(10)
    second.join(10)
    assert results == {"first": 11, "second": 10}
    assert calls == {"step": 11, "gate": 1}  # nothing ran twice


def test_progress_counts_every_node_of_a_batched_pull(calls):
    nodes = _chain(calls, 200)
    with Session(progress=True) as session:
        assert nodes[-1].compute() == 200
        assert session.history[-1].progress.done == 200


def test_freeze_applies_before_a_dependent_runs():
    @node
    def make():
        return np.arange(3.0)  # small, but a buffer: stored (and frozen) at once

    @node
    def scribble(a):
        a[0] = 99.0
        return a

    with Session(freeze=True, progress=False):
        with pytest.raises(NodeError) as info:
            scribble(make()).compute()
        assert isinstance(info.value.__cause__, ValueError)
        assert make().compute()[0] == 0.0


def test_dependencies_are_each_node_once_in_argument_order(session):
    @node
    def val(x):
        return x

    @node
    def combine(*args, **kwargs):
        return args, kwargs

    x, y = val(1), val(2)
    assert combine(x, x).deps == (x,)
    assert combine(x, 5).deps == (x,)
    assert combine(y, x).deps == (y, x)
    assert combine(x, y, x).deps == (x, y)
    assert combine(1, k=x).deps == (x,)
    assert combine(y, k=x).deps == (y, x)
    assert combine(x, [y, x]).deps == (x, y)
    assert combine(x, y, x, k=y).compute() == ((1, 2, 1), {"k": 2})


def test_a_fresh_pull_counts_one_miss_per_node_planned(session, calls):
    nodes = _chain(calls, 100)
    n = nodes[-1]

    @node
    def double(v):
        return 2 * v

    n.compute()
    assert (session.stats().misses, session.stats().hits) == (100, 0)
    double(nodes[49]).compute()  # plans double: a miss; stops at nodes[49]: a hit
    assert (session.stats().misses, session.stats().hits) == (101, 1)
