"""Nodes inside container arguments (lazygraph.arguments): found once, rebuilt keeping type.

SPEC S1.2 and S1.11: a container argument holding Nodes reaches the function with values in
place of its Nodes and with its own type (defaultdict with its factory, OrderedDict,
Counter, namedtuples, subclasses); shared and self-referencing containers stay so, and
building a Node from a self-referencing container does not hang.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
from typing import Any, NamedTuple

import pytest

import lazygraph
from lazygraph import Session
from lazygraph.arguments import find_deps, substitute

SEEN: list[Any] = []


@lazygraph.node
def one() -> int:
    return 1


@lazygraph.node
def two() -> int:
    return 2


@lazygraph.node
def seen(arg: Any) -> str:
    """Keep the argument as the function received it; return its type's name."""
    SEEN.append(arg)
    return type(arg).__name__


class Point(NamedTuple):
    x: Any
    y: Any


class Tagged(list):  # a list subclass with state of its own
    def __init__(self, items: Any = (), *, tag: str) -> None:
        super().__init__(items)
        self.tag = tag


class Strict(dict):  # a dict subclass whose constructor takes something else
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def received(arg: Any) -> Any:
    """What ``seen(arg)`` hands its function in a pull."""
    SEEN.clear()
    with Session(progress=False) as session:
        session.compute(seen(arg))
    assert len(SEEN) == 1
    return SEEN[0]


def test_defaultdict_keeps_its_factory():
    got = received(collections.defaultdict(list, {"a": one()}))
    assert type(got) is collections.defaultdict
    assert got.default_factory is list and got == {"a": 1}
    got["new"].append(3)  # the factory works: no KeyError


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: collections.OrderedDict([("b", two()), ("a", one())]),
         collections.OrderedDict([("b", 2), ("a", 1)])),
        (lambda: collections.Counter({"x": one()}), collections.Counter({"x": 1})),
        (lambda: Point(one(), [two()]), Point(1, [2])),
        (lambda: frozenset({one(), 5}), frozenset({1, 5})),
        (lambda: (one(), {two()}), (1, {2})),
    ],
    ids=["OrderedDict", "Counter", "namedtuple", "frozenset", "tuple-of-set"],
)
def test_container_types_survive(build, expected):
    got = received(build())
    assert type(got) is type(expected) and got == expected
    if isinstance(got, collections.OrderedDict):
        assert list(got) == ["b", "a"]  # the order too


def test_subclasses_keep_their_type_and_state():
    got = received(Tagged([one(), 7], tag="t"))
    assert type(got) is Tagged and got == [1, 7] and got.tag == "t"
    strict = Strict("s")
    strict["k"] = one()
    got = received(strict)
    assert type(got) is Strict and got == {"k": 1} and got.name == "s"


def test_shared_container_stays_shared_and_leaf_free_ones_are_not_copied():
    inner = [one()]
    plain = [1, 2, 3]
    got = received([inner, inner, plain, one()])
    assert got[0] is got[1] and got[0] == [1]
    assert got[2] is plain  # no Node inside: passed by reference, as S2 promises


def test_self_referencing_container_holding_a_node():
    a: list[Any] = [one()]
    a.append(a)
    got = received(a)
    assert got[0] == 1 and got[1] is got
    assert got is not a  # the caller's list still holds its Node


def test_building_a_node_from_a_self_referencing_container_does_not_hang():
    """On the old code building the Node spun forever: run it where it can be killed."""
    code = textwrap.dedent(
        """
        import lazygraph
        f = lazygraph.node(lambda x, y: x)  # two arguments: the call is bound (S1.10)
        a = [1]
        a.append(a)
        d = {"k": a}
        a.append(d)
        n = f(a, d)
        print("built", len(n.deps))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "built 0"


def test_find_deps_in_order_once_each():
    a, b = one(), two()
    cycle: list[Any] = [b]
    cycle.append(cycle)
    deps, nested = find_deps((a, cycle), {"k": (a, b)}, kind=lazygraph.Node)
    assert deps == [a, b] and deps[0] is a and nested


def test_substitute_with_any_leaf_kind():
    """The processes executor swaps its own placeholders with the same function."""

    class Slot(str):
        pass

    swapped = substitute({"x": [Slot("a"), "b"]}, lambda s: s.upper(), kind=Slot)
    assert swapped == {"x": ["A", "b"]}
    untouched = ("a", ["b"])
    assert substitute(untouched, str.upper, kind=Slot) is untouched
