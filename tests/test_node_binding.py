"""Calls bound to the signature before keying (SPEC S1.10), ``@node(ignore=...)``, and what a
key does with a global that has no content hash (S3.5: identity, not persisted, one warning).
"""

from __future__ import annotations

import warnings

import pytest

import lazygraph


def _counting():
    calls: list[tuple] = []

    @lazygraph.node
    def f(a, b=2, *, c=3):
        calls.append((a, b, c))
        return a + b + c

    return f, calls


def test_equivalent_calls_are_one_key_and_one_run():
    f, calls = _counting()
    nodes = [f(1), f(a=1), f(1, b=2), f(1, 2), f(b=2, a=1), f(1, c=3), f(1, 2, c=3)]
    assert len({n.key for n in nodes}) == 1
    with lazygraph.Session(progress=False):
        values = [n.compute() for n in nodes]
    assert values == [6] * len(nodes) and calls == [(1, 2, 3)]
    assert f(1, b=5).key != f(1).key and f(1, c=4).key != f(1).key


def test_a_call_that_does_not_fit_fails_when_built_with_a_type_error():
    f, calls = _counting()
    with pytest.raises(TypeError, match="f\\(\\).*missing a required argument: 'a'"):
        f()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        f(1, z=2)
    with pytest.raises(TypeError, match="too many positional arguments"):
        f(1, 2, 3)
    assert calls == []


def test_star_args_keyword_only_and_kwargs_bind_too():
    @lazygraph.node
    def g(a, *rest, k=1, **extra):
        return (a, rest, k, extra)

    assert g(1, 2, k=1).key == g(1, 2).key
    assert g(1, x=5).key == g(a=1, x=5).key != g(1).key
    with lazygraph.Session(progress=False):
        assert g(1, 2, x=3).compute() == (1, (2,), 1, {"x": 3})


def test_nodes_passed_by_keyword_are_dependencies():
    f, _ = _counting()
    x = lazygraph.Input(1, name="x")
    n = f(a=x)
    assert n.deps == (x,) and n.key == f(x).key
    with lazygraph.Session(progress=False):
        assert n.compute() == 6
        x.set(2)
        assert n.compute() == 7


def test_ignored_arguments_are_passed_but_left_out_of_the_key():
    seen = []

    @lazygraph.node(ignore=["verbose"])
    def load(path, verbose=False):
        seen.append(verbose)
        return path.upper()

    assert load("a", verbose=True).key == load("a").key == load("a", False).key
    assert load("b").key != load("a").key
    with lazygraph.Session(progress=False):
        assert load("a", verbose=True).compute() == "A"
        assert load("a").compute() == "A"
    assert seen == [True]  # the second call hit: verbose is not part of the key


def test_ignore_must_name_parameters():
    with pytest.raises(TypeError, match="not parameters of .*h.*\\['a', 'b'\\]"):

        @lazygraph.node(ignore=["c"])
        def h(a, b):
            return a


def test_an_unhashable_global_is_keyed_by_identity_not_persisted_and_warned_once(tmp_path):
    import threading

    ns = {"__name__": "notebook_cell", "LOCK": threading.Lock()}
    exec("def guarded(x):\n    with LOCK:\n        return x + 1\n", ns)
    factory = lazygraph.node(ns["guarded"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = factory(1)
        key = first.key
        again = factory(2).key  # the same fingerprint: no second warning
    named = [w for w in caught if "LOCK" in str(w.message)]
    assert len(named) == 1 and "identity" in str(named[0].message)
    assert named[0].filename == __file__  # the user's line, not one inside lazygraph
    assert again != key and first._persistable is False
    plain = lazygraph.node(lambda x: x * 10)(1)  # a control that is persisted
    with lazygraph.Session(cache_dir=tmp_path / "cache", progress=False):
        assert first.compute() == 2 and plain.compute() == 10
    files = {p.name for p in (tmp_path / "cache").iterdir() if p.is_file()}
    assert files == {plain.key + ".joblib"}, files  # the guarded result stayed in memory
    ns["LOCK"] = threading.Lock()  # rebound: another identity, another key
    assert lazygraph.node(ns["guarded"])(1).key != key


def test_a_function_argument_whose_code_reads_an_unhashable_global_is_not_persistable():
    import threading

    from lazygraph.hashing import content_hash

    ns = {"__name__": "notebook_cell", "LOCK": threading.Lock()}
    exec("def guarded(x):\n    with LOCK:\n        return x\n", ns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert content_hash([ns["guarded"]])[1] is False
    assert content_hash([len, lambda v: v])[1] is True
