"""What users of dask.delayed and joblib.Memory expect (issue 16): no hangs, methods, real
exception types, generators refused, dask's conveniences, nested ``compute``.

SPEC S1.7-S1.9, S1.11, S2.6, S7.1, S7.2. Every test here failed (or hung) on the code
before issue 16. Hangs are bounded by ``pytest.mark.timeout``.
"""

from __future__ import annotations

import collections
import copy
import functools
import pickle
import threading
import traceback

import numpy as np
import pytest

import lazygraph
from lazygraph import CycleError, LazyGraphError, NodeError, Session, node

EXECUTORS = ["sync", "threads", "processes"]


@pytest.fixture
def session():
    with Session(progress=False) as s:
        yield s


# -- S7.2: nothing waits for itself; nested pulls never deadlock ---------------------------


@node
def computes_itself():
    return computes_itself().compute() + 1


@node
def ping(n):
    return pong(n).compute()


@node
def pong(n):
    return ping(n).compute()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_node_computing_itself_raises_cycle_error(executor):
    with (
        Session(progress=False, executor=executor, workers=2),
        pytest.raises(CycleError, match="computes_itself -> computes_itself"),
    ):
        computes_itself().compute()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_two_nodes_computing_each_other_raise_cycle_error(executor):
    with Session(progress=False, executor=executor, workers=2) as s:
        with pytest.raises(CycleError) as info:
            ping(1).compute()
        assert "ping -> pong -> ping" in str(info.value)
        assert not s.claims  # nothing left claimed: a later pull is not blocked
        assert pong(2).name == "pong"


@node
def nested(depth):
    if depth == 0:
        return 0
    a, b = nested(depth - 1), leaf(depth)
    return sum(lazygraph.compute(a, b)) + 1


@node
def leaf(i):
    return i


@pytest.mark.timeout(20)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_nested_computes_never_deadlock(executor):
    with Session(progress=False, executor=executor, workers=2):
        roots = [nested(4), nested(3), leaf(10)]
        assert lazygraph.compute(*roots) == (14, 9, 10)


@pytest.mark.timeout(20)
def test_nested_compute_of_a_node_computed_earlier_in_the_pull(session):
    a = leaf(5)
    holder = {"node": a}

    @node
    def pulls(x):
        return x + holder["node"].compute()  # `a`, computed moments ago in this same pull

    assert pulls(a).compute() == 10


@pytest.mark.timeout(20)
def test_a_self_referencing_list_argument_does_not_hang(session):
    a = [1]
    a.append(a)

    @node
    def first(xs):
        return xs[0], xs[1] is xs

    assert first(a).compute() == (1, True)


# -- S1.7: methods -----------------------------------------------------------------------


def test_a_method_binds_its_instance(session):
    class Scaler:
        def __init__(self, factor):
            self.factor = factor

        @node
        def scale(self, x):
            return self.factor * x

        @classmethod
        @node
        def make(cls, factor):
            return cls(factor).factor

        @node
        @classmethod
        def make2(cls, factor):
            return cls.__name__, factor

        @staticmethod
        @node
        def twice(x):
            return 2 * x

        @node
        @staticmethod
        def thrice(x):
            return 3 * x

    s = Scaler(3)
    n = s.scale(2)
    assert isinstance(n, lazygraph.Node)
    assert n.compute() == 6
    assert Scaler(3).scale(2).key == n.key  # the instance's content is in the key
    assert Scaler(4).scale(2).key != n.key
    assert Scaler(4).scale(2).compute() == 8
    assert Scaler.make(5).compute() == 5
    assert Scaler.make2(5).compute() == ("Scaler", 5)
    assert Scaler.twice(4).compute() == 8 and s.twice(4).compute() == 8
    assert Scaler.thrice(4).compute() == 12 and s.thrice(4).compute() == 12


class Locked:
    def __init__(self):
        self.lock = threading.Lock()  # cannot be pickled: keyed by identity

    @node
    def value(self, x):
        return x


def test_an_instance_that_cannot_be_hashed_is_keyed_by_identity(session):
    one, two = Locked(), Locked()
    assert one.value(1).key == one.value(1).key
    assert one.value(1).key != two.value(1).key
    n = one.value(1)
    assert n.compute() == 1
    assert n.info().persistable is False


# -- S7.1: the original exception's type ----------------------------------------------------


class NeedsArgs(Exception):
    def __init__(self, code, why):
        super().__init__(code, why)
        self.code = code


def raises(exc):
    raise exc


@node
def fails_with(kind):
    if kind == "value":
        raise ValueError("bad row")
    if kind == "key":
        raise KeyError("missing")
    if kind == "os":
        raise FileNotFoundError(2, "no such file")
    raise NeedsArgs(7, "custom")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_except_value_error_catches_a_nodes_value_error(executor):
    with Session(progress=False, executor=executor, workers=2):
        try:
            fails_with("value").compute()
        except ValueError as exc:
            assert isinstance(exc, NodeError) and isinstance(exc, LazyGraphError)
            assert isinstance(exc.__cause__, ValueError)
            assert exc.__cause__.__traceback__ is not None
            assert "fails_with" in str(exc) and "bad row" in str(exc)
        else:
            pytest.fail("no ValueError")
        with pytest.raises(KeyError) as info:
            fails_with("key").compute()
        assert "failed with KeyError" in str(info.value)  # not KeyError's quoted repr
        with pytest.raises(FileNotFoundError):
            fails_with("os").compute()
        with pytest.raises(NeedsArgs):
            fails_with("custom").compute()


def test_typed_node_errors_pickle_and_keep_their_type():
    exc = NodeError("parse", ["report", "parse"], ValueError("bad"), key="ab")
    assert isinstance(exc, ValueError) and type(exc) is type(
        NodeError("x", ["x"], ValueError("other"))
    )
    back = pickle.loads(pickle.dumps(exc))
    assert isinstance(back, ValueError) and isinstance(back, NodeError)
    assert str(back) == str(exc) and back.path == ["report", "parse"] and back.key == "ab"


def test_processes_tracebacks_show_the_users_file_and_line():
    def explode(x):
        raise ValueError(f"boom {x}")  # the line the traceback must show

    line = explode.__code__.co_firstlineno + 1
    with (
        Session(progress=False, executor="processes", workers=1),
        pytest.raises(ValueError) as info,
    ):
        node(explode)(1).compute()
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{__file__}", line {line}' in text
    assert "<dynamic-code>" not in text


def test_dask_tracebacks_show_the_users_file_and_generators_are_refused():
    distributed = pytest.importorskip("distributed")

    def explode(x):
        raise ValueError(f"boom {x}")  # the line the traceback must show

    line = explode.__code__.co_firstlineno + 1
    with (
        distributed.Client(n_workers=1, threads_per_worker=1, dashboard_address=":0"),
        Session(progress=False, executor="dask"),
    ):
        with pytest.raises(ValueError) as info:
            node(explode)(1).compute()
        text = "".join(traceback.format_exception(info.value))
        assert f'File "{__file__}", line {line}' in text
        with pytest.raises(TypeError, match="return a list") as refused:
            gives_generator(3).compute()
        assert isinstance(refused.value, LazyGraphError)


@pytest.mark.timeout(120)
def test_a_failure_deep_in_a_long_chain_has_a_short_message(session):
    @node
    def step(x):
        if x == 0:
            raise ValueError("at the bottom")
        return x

    n = step(0)
    for _ in range(100_000):
        n = step(n)
    with pytest.raises(ValueError) as info:
        n.compute()
    assert len(str(info.value)) < 1000
    assert "at the bottom" in str(info.value) and len(info.value.path) == 100_001


@pytest.mark.timeout(120)
def test_many_nested_computes_give_a_short_message(session):
    @node
    def deep(i):
        if i == 0:
            raise ValueError("the innermost")
        return deep(i - 1).compute()

    with pytest.raises(NodeError) as info:
        deep(2000).compute()
    assert len(str(info.value)) < 1000
    assert str(info.value).count("failed with") <= 2


# -- S2.6 / S1.11: generators and iterators ----------------------------------------------------


@node
def gives_generator(n):
    return (i for i in range(n))


@node
def gives_map(n):
    return map(str, range(n))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_generator_result_is_refused(executor):
    with Session(progress=False, executor=executor, workers=2) as s:
        for maker in (gives_generator, gives_map):
            with pytest.raises(TypeError, match="return a list") as info:
                maker(3).compute()
            assert isinstance(info.value, LazyGraphError)
        assert s.stats().computes <= 2  # nothing cached


def test_an_iterator_argument_is_refused_when_the_node_is_built():
    with pytest.raises(TypeError, match="generator"):
        leaf(i for i in range(3))
    with pytest.raises(TypeError, match="'i'"):
        leaf(i=iter([1, 2]))
    with pytest.raises(TypeError, match="iterator"):
        leaf([1, iter([2])])


@node
def kinds(box, od):
    return type(box).__name__, box.default_factory, box["new"], type(od).__name__


@pytest.mark.parametrize("executor", EXECUTORS)
def test_containers_keep_their_type_under_every_executor(executor):
    with Session(progress=False, executor=executor, workers=2):
        box = collections.defaultdict(list, {"a": leaf(1)})
        od = collections.OrderedDict(b=leaf(2))
        assert kinds(box, od).compute() == ("defaultdict", list, [], "OrderedDict")


# -- S1.8: dask's conveniences -----------------------------------------------------------------


@node
def pair(a, b):
    return a, b


def test_items_and_operators_are_lazy(session):
    d = pair(10, 4)
    a, b = d[0], d[1]
    assert isinstance(a, lazygraph.Node) and a.compute() == 10
    assert (a + b).compute() == 14 and (a - b).compute() == 6 and (a * 2).compute() == 20
    assert (a / b).compute() == 2.5 and (a // b).compute() == 2 and (a % b).compute() == 2
    assert (a**2).compute() == 100 and (-a).compute() == -10 and (1 + a).compute() == 11
    assert (3 - a).compute() == -7 and abs(-a).compute() == 10
    assert (a > b).compute() is True and (a <= b).compute() is False
    assert (a < b).compute() is False and (a >= b).compute() is True
    assert (a == b) is False and a != b and {a: 1}[a] == 1  # identity, still dict keys
    assert leaf(1) != leaf(1)


def test_nout_unpacks_and_truthiness_is_refused(session):
    @node(nout=2)
    def split(x):
        return x, -x

    pos, neg = split(3)
    assert (pos.compute(), neg.compute()) == (3, -3)
    assert len(split(1)) == 2
    n = leaf(1)
    for probe in (bool, iter, len):
        with pytest.raises(TypeError, match=r"\.compute\(\)"):
            probe(n)
    with pytest.raises(TypeError):
        np.asarray(n)
    assert "<Node" in repr(n)


@node
def grid(n):
    return np.arange(n * 3.0).reshape(n, 3)


def test_lazy_attributes_and_methods_are_nodes(session):
    g = grid(4)
    shape, means = g.lazy.shape, g.lazy.mean(axis=0)
    assert isinstance(shape, lazygraph.Node) and isinstance(means, lazygraph.Node)
    assert session.stats().computes == 0  # building them ran nothing
    assert shape.compute() == (4, 3)
    np.testing.assert_array_equal(means.compute(), [4.5, 5.5, 6.5])
    assert g.lazy.T.lazy.sum().compute() == 66.0  # chains
    # equal builds are one key: a re-run cell hits and returns the very object
    again = grid(4).lazy.mean(axis=0)
    assert again.key == means.key and again.compute() is means.compute()
    assert grid(4).lazy.mean(axis=1).key != means.key  # the arguments are in the key
    assert session.stats().computes == 5  # grid, .shape, .mean(), .T, .sum(): once each
    with pytest.raises(AttributeError, match="nope"):
        g.lazy.nope.compute()  # the value's own error type, as computing it raises


def test_lazy_access_answers_python_probes_plainly(session):
    probe = grid(2).lazy
    assert not hasattr(probe, "__array__") and dir(probe) == []
    assert copy.copy(probe) is not None  # no lazy "__reduce_ex__" Node in the way
    assert "lazy attributes" in repr(probe)


def test_node_keeps_plain_attribute_loads():
    # A __getattr__ on Node would cost every attribute read of every pull (node_ops).
    assert not any("__getattr__" in vars(k) for k in lazygraph.Node.__mro__)
    assert lazygraph.Node.__getattribute__ is object.__getattribute__
    with pytest.raises(AttributeError):
        grid(2).shape  # noqa: B018 - plain Nodes have no lazy attributes


def scale(factor, x):
    return factor * x


class Adder:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return x + self.k


def test_partials_and_callable_instances_have_readable_names(session):
    p = node(functools.partial(scale, 2))(5)
    assert p.name == "partial(scale)" and p.compute() == 10
    c = node(Adder(1))(5)
    assert c.name == "Adder" and c.compute() == 6


# -- S1.9: nested compute -----------------------------------------------------------------------


def test_compute_keeps_the_structure_of_its_arguments(session):
    x, y, z = leaf(1), leaf(2), leaf(3)
    out = lazygraph.compute({"a": x, "b": [y, z]}, (x, 7), {x}, 5, y)
    assert out == ({"a": 1, "b": [2, 3]}, (1, 7), {1}, 5, 2)
