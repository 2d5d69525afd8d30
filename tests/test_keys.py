"""Code fingerprints and node keys (lazygraph.keys), on real module files written to tmp_path."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from lazygraph.keys import function_fingerprint, node_key

fp = function_fingerprint


class Token:
    """A stand-in for lazygraph's Node: contributes its key through ``__lazygraph_token__``."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __lazygraph_token__(self) -> bytes:
        return self.key


@pytest.fixture
def load(tmp_path, monkeypatch):
    """Write ``source`` to a fresh file and import it as module ``name`` (replacing any)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []
    count = iter(range(1000))

    def _load(name: str, source: str):
        path = tmp_path / f"{name}_v{next(count)}.py"  # a new file: no stale bytecode cache
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield _load
    for name in names:
        sys.modules.pop(name, None)


BASE = """
def helper(x):
    return x * 2

def step(x, scale=3):
    total = helper(x) + scale
    return [total, "label", {1, 2}]

def report(x):
    print(x)
"""

COSMETIC = '''
# A comment added at the top.

"""A module docstring that was not there before."""

import math  # an import step does not use




def helper(x):
    # why: doubling keeps the ratio
    return (x
            * 2)   # trailing comment


def step(x, scale=3):
    """Now with a docstring."""

    total = helper(x) + scale  # a comment

    return [total,
            "label", {1, 2}]


def report(x):
    """A docstring shifts the constant indices in the bytecode: keys must not care."""
    print(x)
'''


def test_fingerprint_is_16_deterministic_bytes(load):
    mod = load("kmod_basic", BASE)
    assert len(fp(mod.step)) == 16
    assert fp(mod.step) == fp(mod.step)
    assert fp(mod.step) != fp(mod.helper)


def test_comments_docstrings_blank_lines_and_formatting_do_not_change_the_key(load):
    before = load("kmod_cosmetic", BASE)
    after = load("kmod_cosmetic", COSMETIC)
    assert fp(before.step) == fp(after.step)
    assert before.report.__code__.co_code != after.report.__code__.co_code
    assert fp(before.report) == fp(after.report)


def test_editing_a_helper_changes_the_key(load):
    before = fp(load("kmod_edit", BASE).step)
    edited = load("kmod_edit", BASE.replace("x * 2", "x * 3"))
    assert fp(edited.step) != before


def test_redefining_a_helper_in_place_invalidates_the_cached_fingerprint(load):
    mod = load("kmod_notebook", BASE)
    first = fp(mod.step)
    exec("def helper(x):\n    return x * 4\n", mod.__dict__)  # re-running a notebook cell
    changed = fp(mod.step)
    assert changed != first
    exec("def helper(x):\n    return x * 2\n", mod.__dict__)  # and back: the same code again
    assert fp(mod.step) == first


def test_redefining_the_function_itself_gives_a_new_key():
    ns: dict = {"__name__": "kmod_cell"}
    exec("def f(x):\n    return x + 1\n", ns)
    old = ns["f"]
    exec("def f(x):\n    return x + 2\n", ns)
    assert fp(ns["f"]) != fp(old)
    old.__code__ = ns["f"].__code__
    assert fp(old) == fp(ns["f"])


def test_helpers_are_followed_transitively_and_mutual_recursion_is_fine(load):
    source = """
    def c(x):
        return x - 1

    def b(x):
        return c(x) * 2

    def a(x):
        return b(x) + 1

    def is_even(n):
        return True if n == 0 else is_odd(n - 1)

    def is_odd(n):
        return False if n == 0 else is_even(n - 1)
    """
    mod = load("kmod_chain", source)
    a, even = fp(mod.a), fp(mod.is_even)
    mod2 = load("kmod_chain", source.replace("x - 1", "x - 2").replace("False if", "n < 0 if"))
    assert fp(mod2.a) != a
    assert fp(mod2.is_even) != even


def test_mutual_recursion_fingerprint_does_not_depend_on_call_order(load, tmp_path):
    source = """
    def ping(n):
        return 0 if n <= 0 else pong(n - 1)

    def pong(n):
        return 1 if n <= 0 else ping(n - 1)
    """
    mod = load("kmod_pingpong", source)
    parent = (fp(mod.ping).hex(), fp(mod.pong).hex())
    path = next(tmp_path.glob("kmod_pingpong_v*.py"))
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('kmod_pingpong', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['kmod_pingpong'] = m\n"
        "spec.loader.exec_module(m)\n"
        "from lazygraph.keys import function_fingerprint as fp\n"
        "pong = fp(m.pong).hex(); ping = fp(m.ping).hex()\n"  # the other order
        "print(ping, pong)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert tuple(run.stdout.split()) == parent


def test_helpers_reached_through_a_user_module_attribute(load):
    helpers = load("kmod_helpers", "def clean(x):\n    return x.strip()\n")
    pipe = load("kmod_pipe", "import kmod_helpers as h\n\ndef run(x):\n    return h.clean(x)\n")
    before = fp(pipe.run)
    exec("def clean(x):\n    return x.lower()\n", helpers.__dict__)
    assert fp(pipe.run) != before


def test_module_constants_count(load):
    mod = load("kmod_const", "SCALE = 2\n\ndef f(x):\n    return x * SCALE\n")
    before = fp(mod.f)
    mod.SCALE = 3
    assert fp(mod.f) != before
    mod.SCALE = 2
    assert fp(mod.f) == before


def test_library_code_counts_by_name_only(load, monkeypatch):
    mod = load(
        "kmod_lib",
        "import json\nfrom json import loads\n\ndef f(x):\n    return json.dumps(loads(x))\n",
    )
    before = fp(mod.f)
    monkeypatch.setattr(json, "dumps", lambda obj: "patched")
    assert fp(mod.f) == before  # json is the standard library: not followed
    assert fp(np.mean) == fp(np.mean) != fp(np.median)


def test_closures_count_by_value_and_follow_captured_functions(load):
    mod = load(
        "kmod_closure",
        """
    def make_adder(n):
        def add(x):
            return x + n
        return add

    def twice(x):
        return 2 * x

    def thrice(x):
        return 3 * x

    def wrap(fn):
        def inner(x):
            return fn(x)
        return inner

    def counter():
        n = 1
        def get(x):
            return x + n
        def bump():
            nonlocal n
            n += 1
        return get, bump
    """,
    )
    assert fp(mod.make_adder(1)) == fp(mod.make_adder(1))
    assert fp(mod.make_adder(1)) != fp(mod.make_adder(2))
    assert fp(mod.make_adder(np.arange(3))) == fp(mod.make_adder(np.arange(3)))
    assert fp(mod.wrap(mod.twice)) != fp(mod.wrap(mod.thrice))
    get, bump = mod.counter()
    before = fp(get)
    bump()  # rebinding a cell is noticed even though get is the same object
    assert fp(get) != before


def test_defaults_and_keyword_defaults_count():
    def f(x, k=1, *, m=2):
        return x + k + m

    before = fp(f)
    f.__defaults__ = (5,)
    assert fp(f) != before
    f.__defaults__ = (1,)
    assert fp(f) == before
    f.__kwdefaults__ = {"m": 3}
    assert fp(f) != before


def test_version_replaces_the_code_part(load):
    mod = load("kmod_version", BASE)
    v1 = fp(mod.step, version="1")
    edited = load("kmod_version", BASE.replace("+ scale", "- scale").replace("x * 2", "x * 9"))
    assert fp(edited.step, version="1") == v1  # code edits ignored under a fixed version
    assert fp(edited.step, version="2") != v1
    assert fp(mod.step, version="1") != fp(mod.step)
    adders = load(
        "kmod_version_closure", "def make(n):\n    def f(x):\n        return x + n\n    return f\n"
    )
    assert fp(adders.make(1), version="1") != fp(adders.make(2), version="1")


def test_lambdas_and_nested_code(load):
    mod = load(
        "kmod_lambda",
        """
    square = lambda x: x * x
    def comp(xs):
        return [y + 1 for y in xs if y > 0]
    """,
    )
    again = load(
        "kmod_lambda",
        """
    square = lambda x: x * x

    def comp(xs):
        return [y + 1 for y in xs if y > 0]
    """,
    )
    changed = load(
        "kmod_lambda",
        """
    square = lambda x: x * x
    def comp(xs):
        return [y + 2 for y in xs if y > 0]
    """,
    )
    assert fp(mod.square) == fp(again.square)
    assert fp(mod.comp) == fp(again.comp) != fp(changed.comp)


def test_classes_methods_partials_and_callable_objects(load):
    source = """
    class Scaler:
        factor = 2
        def __init__(self, k):
            self.k = k
        def __call__(self, x):
            return x * self.k * self.factor
        def apply(self, x):
            return x + self.k

    def use(x):
        return Scaler(1).apply(x)
    """
    mod = load("kmod_class", source)
    assert fp(mod.Scaler(1)) == fp(mod.Scaler(1)) != fp(mod.Scaler(2))
    pickle.dumps(mod.Scaler(3))  # pickling caches __slotnames__ on the class: not code
    assert fp(mod.Scaler(1)) == fp(mod.Scaler(1))
    assert fp(mod.Scaler(1).apply) == fp(mod.Scaler(1).apply) != fp(mod.Scaler(2).apply)
    assert fp(functools.partial(mod.use, 1)) != fp(functools.partial(mod.use, 2))
    before_class, before_use = fp(mod.Scaler), fp(mod.use)
    edited = load("kmod_class", source.replace("x + self.k", "x - self.k"))
    assert fp(edited.Scaler) != before_class
    assert fp(edited.use) != before_use
    factor = load("kmod_class", source.replace("factor = 2", "factor = 3"))
    assert fp(factor.Scaler) != before_class


def test_builtins_count_by_name():
    assert fp(len) == fp(len) != fp(max)
    assert fp(str.upper) != fp(str.lower)
    assert fp([1].append) != fp([2].append)  # a bound builtin method carries its object
    with pytest.raises(TypeError, match="expects a callable"):
        fp(42)


# -- node keys ----------------------------------------------------------------------------------


def test_node_key_basics():
    f = fp(len)
    key, persistable = node_key(f, (1, "a"), {"k": 2.5})
    assert len(key) == 16 and persistable
    assert node_key(f, (1,), {"a": 1, "b": 2}) == node_key(f, (1,), {"b": 2, "a": 1})
    assert node_key(f, (1,), {})[0] != node_key(f, (), {"x": 1})[0]
    assert node_key(f, (1,), {})[0] != node_key(f, (1.0,), {})[0] != node_key(f, (True,), {})[0]
    assert node_key(f, (1,), {})[0] != node_key(fp(max), (1,), {})[0]
    assert node_key(f, ((1, 2),), {})[0] != node_key(f, (1, 2), {})[0]


def test_node_key_uses_dependency_tokens_also_nested():
    f = fp(len)
    a, a2, b = Token(b"a" * 16), Token(b"a" * 16), Token(b"b" * 16)
    for wrap in (lambda t: t, lambda t: [t], lambda t: {"k": t}, lambda t: {t}, lambda t: (1, t)):
        assert node_key(f, (wrap(a),), {}) == node_key(f, (wrap(a2),), {})
        assert node_key(f, (wrap(a),), {})[0] != node_key(f, (wrap(b),), {})[0]
    assert node_key(f, (), {"dep": a})[0] != node_key(f, (), {"dep": b})[0]


def test_node_key_with_lambda_arguments_is_stable():
    f = fp(len)
    assert node_key(f, (lambda x: x + 1,), {}) == node_key(f, (lambda x: x + 1,), {})
    assert node_key(f, (lambda x: x + 1,), {})[0] != node_key(f, (lambda x: x - 1,), {})[0]
    assert node_key(f, (lambda x: x,), {})[1]


def test_unpicklable_arguments_are_keyed_by_identity_and_not_persistable():
    f = fp(len)
    lock1, lock2 = threading.Lock(), threading.Lock()
    k1, persistable = node_key(f, (lock1,), {})
    assert not persistable
    assert node_key(f, (lock1,), {})[0] == k1  # the same live object keeps its key
    assert node_key(f, (lock2,), {})[0] != k1
    assert not node_key(f, (1,), {"lock": lock1})[1]


SUBPROCESS_MODULE = """
import numpy as np

THRESHOLD = 0.5

def helper(df):
    return df[df["v"] > THRESHOLD]

def run(df, arr, opts, fn=None):
    return fn(helper(df)), arr.sum(), opts

square = lambda x: x * x
"""

SUBPROCESS_KEY = """
import numpy as np, pandas as pd
import kmod_proc
from lazygraph.keys import function_fingerprint, node_key
df = pd.DataFrame({"v": [0.1, 0.9], "s": ["a", "b"]}, index=pd.Index([3, 4], name="i"))
arr = np.arange(12.0).reshape(3, 4)[:, ::2]
args = (df, arr, {"tags": {"x", "y", "z"}, "n": 3, "name": "run"})
key, ok = node_key(function_fingerprint(kmod_proc.run), args, {"fn": kmod_proc.square})
print(key.hex(), ok, function_fingerprint(kmod_proc.square).hex())
"""


def test_keys_are_the_same_in_another_process(load, tmp_path):
    load("kmod_proc", SUBPROCESS_MODULE)
    (tmp_path / "kmod_proc.py").write_text(textwrap.dedent(SUBPROCESS_MODULE))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(SUBPROCESS_KEY, {})
    parent = out.getvalue().strip()
    outputs = set()
    for seed in ("0", "12345"):
        env = {"PYTHONHASHSEED": seed, "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [sys.executable, "-c", SUBPROCESS_KEY],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outputs.add(run.stdout.strip())
    assert outputs == {parent}
    assert parent.split()[1] == "True"


def test_wrapped_helpers_are_followed(load):
    source = """
    import functools

    @functools.lru_cache(maxsize=None)
    def table(n):
        return n * 10

    def run(x):
        return table(x) + 1
    """
    mod = load("kmod_wrapped", source)
    before, before_table = fp(mod.run), fp(mod.table)
    edited = load("kmod_wrapped", source.replace("n * 10", "n * 20"))
    assert fp(edited.run) != before
    assert fp(edited.table) != before_table  # an lru_cache'd node function counts by its code
