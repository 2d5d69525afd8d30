"""Exact keys (issue 14, SPEC S3.5/S3.6): every change a function can observe misses, and
the controls (comments, docstrings, moving code, equal values rebuilt) still hit.

Each case is a small "notebook": cells of module source, then one cell changed (re-run, as a
user re-runs a cell) or a file of a helper package edited. Each case is checked twice:

- in one session: the cells are executed into a module, a node of ``f`` is computed, the
  changed cell is re-run into the same module, and a *new* node of ``f`` is computed;
- across two processes sharing a ``cache_dir``: process 1 runs the first version, process 2
  the changed files (one pair of processes for all cases, so the suite stays quick).

A miss must run ``f`` again and return what the plain function returns now; a hit must not
run ``f`` again. ``f`` counts its runs in a file named by ``$LG_RUNLOG`` (``os.environ`` is
the standard library: not followed, so the counting is no part of the key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lazygraph
from lazygraph import (
    codetrace,  # noqa: E402
    keys,
)

fingerprint = sys.modules[keys.function_fingerprint.__module__]  # lazygraph.fingerprint

COUNT = """
import os

def ran():
    with open(os.environ["LG_RUNLOG"], "a") as fh:
        fh.write("x")
"""


@dataclass
class Case:
    """Cells of a module (joined into one file), the call, and the change to make."""

    cells: list[str]
    body: str  # the body of ``f(x)``, after it counts its run
    change: tuple[int, str] | None = None  # (cell index, its new source)
    files: dict[str, str] = field(default_factory=dict)  # helper package files
    file_change: tuple[str, str] | None = None  # (file, new source)
    hit: bool = False  # a control: the change is invisible to f

    def source(self, *, changed: bool) -> str:
        cells = list(self.cells)
        if changed and self.change is not None:
            cells[self.change[0]] = self.change[1]
        func = f"def f(x):\n    ran()\n{textwrap.indent(textwrap.dedent(self.body), '    ')}"
        return "\n\n".join([COUNT, *map(textwrap.dedent, cells), func]) + "\n"

    def package(self, *, changed: bool) -> dict[str, str]:
        files = dict(self.files)
        if changed and self.file_change is not None:
            files[self.file_change[0]] = self.file_change[1]
        return {name: textwrap.dedent(text) for name, text in files.items()}


_CALLABLE = """
class Mul:
    def __init__(self, k):
        self.k = k
    def __call__(self, v):
        return v * self.k
"""

CASES: dict[str, Case] = {
    # -- rebound globals of every kind: content where hashable, code + state for callables
    "dict": Case(['CONFIG = {"scale": 2}'], 'return x * CONFIG["scale"]',
                 change=(0, 'CONFIG = {"scale": 3}')),
    "list": Case(["WEIGHTS = [1, 2]"], "return x * sum(WEIGHTS)",
                 change=(0, "WEIGHTS = [1, 3]")),
    "set": Case(['TAGS = {"a"}'], "return x + len(TAGS)", change=(0, 'TAGS = {"a", "b"}')),
    "numpy": Case(["import numpy as np\nARR = np.arange(3.0)"], "return x + float(ARR.sum())",
                  change=(0, "import numpy as np\nARR = np.arange(3.0) * 2")),
    "pandas": Case(['import pandas as pd\nDF = pd.DataFrame({"a": [1, 2]})'],
                   'return x + int(DF["a"].sum())',
                   change=(0, 'import pandas as pd\nDF = pd.DataFrame({"a": [1, 5]})')),
    "torch": Case(["import torch\nT = torch.ones(3)"], "return x + float(T.sum())",
                  change=(0, "import torch\nT = torch.ones(4)")),
    "dataclass": Case(
        ["from dataclasses import dataclass\n@dataclass\nclass Cfg:\n    k: int",
         "CFG = Cfg(2)"],
        "return x * CFG.k", change=(1, "CFG = Cfg(3)")),
    "instance": Case(
        ["class Opts:\n    def __init__(self, k):\n        self.k = k", "OPTS = Opts(2)"],
        "return x * OPTS.k", change=(1, "OPTS = Opts(3)")),
    "partial": Case(["import functools, operator\nSCALE = functools.partial(operator.mul, 2)"],
                    "return SCALE(x)",
                    change=(0, "import functools, operator\n"
                               "SCALE = functools.partial(operator.mul, 3)")),
    "partial_of_user_code": Case(
        ["import functools\ndef mul(a, b):\n    return a * b\nSCALE = functools.partial(mul, 2)"],
        "return SCALE(x)",
        change=(0, "import functools\ndef mul(a, b):\n    return a * b + 1\n"
                   "SCALE = functools.partial(mul, 2)")),
    "callable_state": Case([_CALLABLE, "M = Mul(2)"], "return M(x)", change=(1, "M = Mul(3)")),
    "callable_code": Case(  # the class cell re-run (its instance with it: a new object)
        [_CALLABLE + "\nM = Mul(2)"], "return M(x)",
        change=(0, _CALLABLE.replace("v * self.k", "v * self.k + 1") + "\nM = Mul(2)")),
    "lambda": Case(["G = lambda v: v + 1"], "return G(x)", change=(0, "G = lambda v: v + 2")),
    "alias": Case(["def one(v):\n    return v + 1\ndef two(v):\n    return v + 2", "op = one"],
                  "return op(x)", change=(1, "op = two")),
    # -- helpers reached other ways than a plain global call
    "attribute_chain": Case(
        ["import pkgcase.sub"], "return pkgcase.sub.helper(x)",
        files={"pkgcase/__init__.py": "", "pkgcase/sub.py": "def helper(v):\n    return v + 1\n"},
        file_change=("pkgcase/sub.py", "def helper(v):\n    return v + 100\n")),
    "dispatch_dict": Case(
        ['def inc(v):\n    return v + 1\n\nOPS = {"inc": inc}'], 'return OPS["inc"](x)',
        change=(0, 'def inc(v):\n    return v + 10\n\nOPS = {"inc": inc}')),
    "dispatch_tuple": Case(
        ["def a(v):\n    return v + 1\n\ndef b(v):\n    return v * 2\n\nSTEPS = (a, b)"],
        "for step in STEPS:\n    x = step(x)\nreturn x",
        change=(0, "def a(v):\n    return v + 1\n\ndef b(v):\n    return v * 3\n\nSTEPS = (a, b)")),
    # -- what a helper reached through a value reads: its fingerprint is in f's key
    "dispatch_helper_reads_a_global": Case(
        ["K = 1", 'def inc(v):\n    return v + K\n\nOPS = {"inc": inc}'],
        'return OPS["inc"](x)', change=(0, "K = 5")),
    "partial_helper_reads_a_global": Case(
        ["K = 1", "import functools\ndef mul(a, b):\n    return a * b + K\n"
                  "SCALE = functools.partial(mul, 2)"],
        "return SCALE(x)", change=(0, "K = 5")),
    "callable_instance_reads_a_global": Case(
        ["K = 1", _CALLABLE.replace("v * self.k", "v * self.k + K") + "\nM = Mul(2)"],
        "return M(x)", change=(0, "K = 5")),
    "method_of_user_class": Case(
        ["class Scaler:\n    def apply(self, v):\n        return v * 2"],
        "return Scaler().apply(x)",
        change=(0, "class Scaler:\n    def apply(self, v):\n        return v * 5")),
    "classmethod_of_user_class": Case(
        ["class Make:\n    @classmethod\n    def run(cls, v):\n        return v - 1"],
        "return Make.run(x)",
        change=(0, "class Make:\n    @classmethod\n    def run(cls, v):\n        return v - 7")),
    # -- controls: invisible changes still hit
    "control_comment": Case(['CONFIG = {"scale": 2}'], 'return x * CONFIG["scale"]',
                            change=(0, '# a comment\nCONFIG = {"scale": 2}  # why'), hit=True),
    "control_docstring_and_moved": Case(
        ["def helper(v):\n    return v + 1"], "return helper(x)",
        change=(0, '\n\n\n\ndef helper(v):\n    """Now documented."""\n    # note\n'
                   "    return v + 1"), hit=True),
    "control_equal_dict_rebuilt": Case(['CONFIG = {"scale": 2, "b": [1]}'],
                                       'return x * CONFIG["scale"]',
                                       change=(0, 'CONFIG = {"b": [1], "scale": 2}'), hit=True),
    "control_equal_array_rebuilt": Case(
        ["import numpy as np\nARR = np.arange(3.0)"], "return x + float(ARR.sum())",
        change=(0, "import numpy as np\nARR = np.array([0.0, 1.0, 2.0])"), hit=True),
    "control_equal_partial_rebuilt": Case(
        ["import functools, operator\nSCALE = functools.partial(operator.mul, 2)"],
        "return SCALE(x)",
        change=(0, "import functools, operator\nSCALE = functools.partial(operator.mul, 2)"),
        hit=True),
    "control_equal_instance_rebuilt": Case([_CALLABLE, "M = Mul(2)"], "return M(x)",
                                           change=(1, "M = Mul(2)"), hit=True),
    "control_library_function": Case(["import numpy as np"], "return float(np.mean([x, 3]))",
                                     change=(0, "import numpy as np  # edited"), hit=True),
}

# S3.6: values a function can tell apart, each as a rebound global (the function reports
# what it can observe of it, so a wrong hit shows as a wrong value).
VALUE_PAIRS: dict[str, tuple[str, str, str]] = {
    "numpy_strides": (
        "import numpy as np\nV = np.arange(60.0).reshape(6, 10)[:, 2:7]",
        "import numpy as np\n_B = np.zeros((6, 20))\n_B[:, :10] = np.arange(60.0).reshape(6, 10)"
        "\nV = _B[:, 2:7]",
        "return str(V.strides)"),
    "numpy_view_vs_copy": (
        "import numpy as np\nV = np.arange(12.0).reshape(3, 4)[:, ::2]",
        "import numpy as np\nV = np.ascontiguousarray(np.arange(12.0).reshape(3, 4)[:, ::2])",
        "return str(V.flags.c_contiguous)"),
    "torch_contiguity": (
        "import torch\nV = torch.arange(12.0).reshape(3, 4).t()",
        "import torch\nV = torch.arange(12.0).reshape(3, 4).t().contiguous()",
        "return str((V.is_contiguous(), V.stride()))"),
    "torch_parameter": (
        "import torch\nV = torch.zeros(2).requires_grad_(True)",
        "import torch\nV = torch.nn.Parameter(torch.zeros(2))",
        "return type(V).__name__"),
    "pandas_freq": (
        'import pandas as pd\nV = pd.date_range("2020-01-01", periods=3, freq="D")',
        'import pandas as pd\nV = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"])',
        "return str(V.freq)"),
    "pandas_flags": (
        'import pandas as pd\nV = pd.DataFrame({"a": [1]})',
        'import pandas as pd\n'
        'V = pd.DataFrame({"a": [1]}).set_flags(allows_duplicate_labels=False)',
        "return str(V.flags.allows_duplicate_labels)"),
    "dataclass_extra_attribute": (
        "from dataclasses import dataclass\n@dataclass\nclass P:\n    k: int\nV = P(1)",
        "from dataclasses import dataclass\n@dataclass\nclass P:\n    k: int\nV = P(1)\n"
        "V.note = 'x'",
        "return getattr(V, 'note', '-')"),
}
for _name, (_before, _after, _body) in VALUE_PAIRS.items():
    CASES[f"value_{_name}"] = Case([_before], _body, change=(0, _after))

ARG = 4


def _write(root: Path, name: str, case: Case, *, changed: bool) -> None:
    source = case.source(changed=changed).replace("pkgcase", f"pkg_{name}")
    (root / f"case_{name}.py").write_text(source)
    for rel, text in case.package(changed=changed).items():
        path = root / rel.replace("pkgcase", f"pkg_{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- one session ----------------------------------------------------------------------------


def _runs(log: Path) -> int:
    return len(log.read_text()) if log.exists() else 0


@pytest.mark.parametrize("name", list(CASES))
def test_in_one_session(name, tmp_path, monkeypatch):
    case = CASES[name]
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "runs.log"
    monkeypatch.setenv("LG_RUNLOG", str(log))
    _write(tmp_path, name, case, changed=False)
    modname = f"case_{name}"
    for key in [k for k in sys.modules if k in (modname, f"pkg_{name}", f"pkg_{name}.sub")]:
        del sys.modules[key]
    import importlib

    mod = importlib.import_module(modname)
    try:
        with lazygraph.Session(progress=False):
            first = lazygraph.node(mod.f)(ARG).compute()
            assert _runs(log) == 1
            # the fingerprint is cached and stays valid until something is rebound: a new
            # Node is keyed by identity checks, not by re-hashing what f reads
            entry = fingerprint.cache_entry(mod.f, None)
            assert entry is not None and fingerprint.still_valid(entry)
            if case.change is not None:  # re-run the changed cell in the same module
                exec(textwrap.dedent(case.change[1]).replace("pkgcase", f"pkg_{name}"),
                     mod.__dict__)
            if case.file_change is not None:  # the edited helper file, reloaded
                sub = sys.modules[f"pkg_{name}.sub"]
                exec(textwrap.dedent(case.file_change[1]), sub.__dict__)
            runs_before = _runs(log)
            if not case.hit:
                assert not fingerprint.still_valid(entry)  # noticed before any re-hash
            monkeypatch.setenv("LG_RUNLOG", str(tmp_path / "truth.log"))
            truth = mod.f(ARG)
            monkeypatch.setenv("LG_RUNLOG", str(log))
            second = lazygraph.node(mod.f)(ARG).compute()
    finally:
        for key in [k for k in sys.modules if k.startswith((modname, f"pkg_{name}"))]:
            del sys.modules[key]
    if case.hit:
        assert _runs(log) == runs_before, f"{name}: an invisible change missed"
        assert second == first
    else:
        assert _runs(log) == runs_before + 1, f"{name}: a change the function sees was a hit"
        assert second == truth != first


def test_a_helper_in_a_dispatch_table_patched_in_place_is_seen():
    """IPython's %autoreload patches the functions of an edited module in place
    (``old.__code__ = new.__code__``): a table built from one of them is the same dict."""
    ns = {"__name__": "notebook_cell"}
    exec('def inc(v):\n    return v + 1\n\nOPS = {"inc": inc}\n\n'
         'def f(x):\n    return OPS["inc"](x)\n', ns)
    factory = lazygraph.node(ns["f"])
    before = factory(1).key
    ns["inc"].__code__ = (lambda v: v + 10).__code__
    assert factory(1).key != before


# -- two processes sharing a cache_dir ------------------------------------------------------

_DRIVER = """
import importlib, json, os, sys
import lazygraph

root, cache_dir, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path.insert(0, root)
out = {}
with lazygraph.Session(cache_dir=cache_dir, progress=False) as s:
    for name in names:
        log = os.path.join(root, f"runs_{name}_{os.getpid()}.log")
        os.environ["LG_RUNLOG"] = log
        mod = importlib.import_module(f"case_{name}")
        value = lazygraph.node(mod.f)(%d).compute()
        runs = len(open(log).read()) if os.path.exists(log) else 0
        os.environ["LG_RUNLOG"] = os.path.join(root, "truth.log")
        out[name] = {"value": repr(value), "truth": repr(mod.f(%d)), "runs": runs}
print(json.dumps(out))
""".replace("%d", str(ARG))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    cache_dir = root / "cache"
    (root / "driver.py").write_text(_DRIVER)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    results = []
    for changed in (False, True):
        for name, case in CASES.items():
            _write(root, name, case, changed=changed)
        proc = subprocess.run(
            [sys.executable, str(root / "driver.py"), str(root), str(cache_dir),
             ",".join(CASES)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_across_two_processes_sharing_a_cache_dir(name, two_processes):
    case = CASES[name]
    first, second = two_processes[0][name], two_processes[1][name]
    assert first["runs"] == 1 and first["value"] == first["truth"]
    if case.hit:
        assert second["runs"] == 0, f"{name}: an invisible change missed across processes"
        assert second["value"] == first["value"]
    else:
        assert second["runs"] == 1, f"{name}: process 2 got process 1's result"
        assert second["value"] == second["truth"] != first["value"]


# -- installed packages: keyed by version, not followed ------------------------------------


def test_installed_packages_are_keyed_by_their_version_not_followed(monkeypatch):
    import numpy as np

    from lazygraph import fingerprint

    def define():
        ns = {"__name__": "notebook_cell"}
        exec("import numpy as np\nimport json\ndef f(x):\n"
             "    return json.dumps(float(np.mean(x)))\n", ns)
        return ns["f"]

    before = fingerprint.function_fingerprint(define())
    entry = fingerprint.cache_entry(define(), None)  # a fresh function: no entry yet
    assert entry is None
    f = define()
    fingerprint.function_fingerprint(f)
    parts = {(p.kind, p.name, p.digest) for p in fingerprint.cache_entry(f, None).parts}
    assert ("library", "np", f"numpy {np.__version__}") in parts
    assert ("library", "json", "python {}.{}".format(*sys.version_info[:2])) in parts
    monkeypatch.setattr(np, "__version__", "0.0.test")
    codetrace.library_token.cache_clear()
    try:
        assert fingerprint.function_fingerprint(define()) != before  # an upgrade: new keys
    finally:
        monkeypatch.undo()
        codetrace.library_token.cache_clear()
    assert fingerprint.function_fingerprint(define()) == before


def test_every_rebinding_is_seen_between_two_new_nodes_also_on_the_fast_path():
    """The check skips a namespace nobody wrote to since it was verified (CPython's dict
    version): 200 rebindings in a row, each followed by a new Node, each seen."""
    ns = {"__name__": "notebook_cell"}
    exec("import numpy as np\nK = 0\nARR = np.zeros(2)\ndef f(x):\n"
         "    return x + K + float(ARR[0])\n", ns)
    factory = lazygraph.node(ns["f"])
    keys_seen = {factory(1).key}
    for i in range(1, 201):
        ns["K" if i % 2 else "ARR"] = i if i % 2 else ns["np"].full(2, float(i))
        key = factory(1).key
        assert key not in keys_seen, i
        keys_seen.add(key)
        assert factory(1).key == key  # and unchanged bindings hit
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        assert fingerprint._dict_versions() is not None
