"""The pull scheduler and the hit path: lazygraph vs what a user would pick instead.

One process, three graph shapes of trivial functions (a 10,000-node chain, a 10,000-leaf
fan-in, a 100x100 lattice where each node adds its upper and left neighbours), each run by:

- lazygraph: build the Nodes + ``session.compute(root)`` in a fresh ``Session(progress=False)``,
  and the same with ``progress=True`` (the bar's ticks on the fast path; a run this short
  never opens the bar);
- a bare pull evaluator (``Thunk`` + ``bare_compute`` below, 25 lines: thunk objects and an
  explicit stack, no keys, no store): the floor for any pull scheduler written in Python;
- Dask's core scheduler, ``dask.local.get_sync``, on a dict graph built (and converted to
  Dask's task objects) before the clock starts: compute only;
- ``dask.delayed(pure=True)``, build + ``compute(scheduler="sync")``: its cost per node grows
  with the chain's length, so on the chain it runs a shorter one (``--delayed-chain``, said in
  the table) rather than for minutes;
- plain Python calls (the same builders, called eagerly).

Then the latency of a hit: pulling the same computed Node again, and pulling a *new* Node
object with the same key (what re-running a script or notebook cell does), against a
``functools.lru_cache`` hit and a ``joblib.Memory`` hit (in a temporary directory); also
for ``read_globals``, a function reading ten globals of mixed types (arrays, dicts, a
dispatch table, a partial, helpers), all of which its key covers.

Timings: warm-up first, then the best and the median of ``--repeat`` runs (garbage collection
stays on, as in a user's process; a ``gc.collect()`` precedes each run). Goals (issue 2) are
checked on the best times and printed as PASS/FAIL.

    python benchmarks/compare.py              # the full run (about a minute)
    python benchmarks/compare.py --quick      # 2,000-node graphs, fewer repeats
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.local
import joblib
import numpy as np

import lazygraph

MOD = 1_000_003  # keeps the lattice's sums small ints (they would grow to 60 digits)


# -- the trivial functions every contender runs -------------------------------------------


def leaf(i: int) -> int:
    return i


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return (a + b) % MOD


def total(*xs: int) -> int:
    return sum(xs) % MOD


# A function that reads ten globals of mixed types (issue 14): every one is in its key, and a
# new Node of it must still hit as fast (the fingerprint is re-checked by identity).
ARR_A = np.arange(1_000.0)
ARR_B = np.ones((10, 10))
CONFIG = {"scale": 2, "offset": 1}
NAMES = ["a", "b"]
TABLE = {"inc": inc}
SCALE = 3
LABEL = "x"
SHIFT = functools.partial(add, 1)


def _clip(v: int) -> int:
    return max(0, min(v, MOD))


def read_globals(x: int) -> int:
    y = SHIFT(x) + CONFIG["offset"] * SCALE + len(LABEL) + len(NAMES)
    y += int(ARR_A[1]) + int(ARR_B[0, 0]) + TABLE["inc"](0)
    return _clip(y)


@dataclass(frozen=True)
class Ops:
    """How a contender spells the four functions (Node factories, delayed, thunks, plain)."""

    leaf: Callable[..., Any]
    inc: Callable[..., Any]
    add: Callable[..., Any]
    total: Callable[..., Any]


# -- the shapes, written once for every contender -------------------------------------------


def chain(ops: Ops, n: int) -> Any:
    x = ops.leaf(0)
    for _ in range(n - 1):
        x = ops.inc(x)
    return x


def fan_in(ops: Ops, n: int) -> Any:
    return ops.total(*[ops.leaf(i) for i in range(n)])


def lattice(ops: Ops, n: int) -> Any:
    side = math.isqrt(n)
    row = [ops.leaf(0)]
    for _ in range(side - 1):
        row.append(ops.inc(row[-1]))
    for _ in range(side - 1):
        new = [ops.inc(row[0])]
        for j in range(1, side):
            new.append(ops.add(row[j], new[j - 1]))
        row = new
    return row[-1]


SHAPES: dict[str, Callable[[Ops, int], Any]] = {
    "chain": chain,
    "fan-in": fan_in,
    "lattice": lattice,
}


def node_count(shape: str, n: int) -> int:
    return n + 1 if shape == "fan-in" else (math.isqrt(n) ** 2 if shape == "lattice" else n)


# -- the floor: a bare pull evaluator (25 lines) -----------------------------------------------


class Thunk:
    __slots__ = ("func", "args", "deps", "value", "done")
    value: Any

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args, self.done = func, args, False
        self.deps = [a for a in args if type(a) is Thunk]


def bare_compute(root: Thunk) -> Any:
    stack = [root]
    while stack:
        t = stack[-1]
        if t.done:
            stack.pop()
            continue
        pending = [d for d in t.deps if not d.done]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        t.value = t.func(*[a.value if type(a) is Thunk else a for a in t.args])
        t.done = True
    return root.value


def thunk(func: Callable[..., Any]) -> Callable[..., Thunk]:
    return functools.partial(Thunk, func)


# -- Dask: a prebuilt dict graph for get_sync -----------------------------------------------


class DaskGraphOps:
    """Builds a Dask dict graph with the same shape code: each call adds one task."""

    def __init__(self) -> None:
        self.dsk: dict[Any, Any] = {}

    def _task(self, func: Callable[..., Any], *args: Any) -> tuple[str, int]:
        key = ("x", len(self.dsk))
        self.dsk[key] = (func, *args)
        return key

    def ops(self) -> Ops:
        return Ops(*(functools.partial(self._task, f) for f in (leaf, inc, add, total)))


def dask_graph(shape: str, n: int) -> tuple[Any, Any]:
    """The converted (prebuilt) graph and its root key."""
    from dask._task_spec import convert_legacy_graph

    builder = DaskGraphOps()
    root = SHAPES[shape](builder.ops(), n)
    return convert_legacy_graph(builder.dsk), root


# -- timing -------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    shape: str
    nodes: int
    best: float  # seconds per run
    median: float
    note: str = ""

    @property
    def us_per_node(self) -> float:
        return self.best / self.nodes * 1e6


@dataclass
class Contender:
    """One way to run a shape: ``run(state)`` after ``setup()``, ``teardown(state)`` after."""

    label: str
    run: Callable[[Any], Any]
    nodes: int
    repeat: int
    setup: Callable[[], Any] = lambda: None
    teardown: Callable[[Any], None] = lambda state: None
    note: str = ""


def round_robin(contenders: list[Contender]) -> dict[str, tuple[list[float], Any]]:
    """Seconds of each run and the last result, per contender.

    Contenders take turns, one run each per round, so a busy moment on the machine hits
    them alike; the first round warms caches (fingerprints, imports) and is dropped.
    """
    out: dict[str, tuple[list[float], Any]] = {c.label: ([], None) for c in contenders}
    for i in range(max(c.repeat for c in contenders) + 1):
        for c in contenders:
            if i > c.repeat:
                continue
            state = c.setup()
            gc.collect()
            start = time.perf_counter()
            result = c.run(state)
            elapsed = time.perf_counter() - start
            c.teardown(state)
            times = out[c.label][0]
            if i:
                times.append(elapsed)
            out[c.label] = (times, result)
    return out


LG_OPS = Ops(*(lazygraph.node(f) for f in (leaf, inc, add, total)))
DELAYED_OPS = Ops(*(dask.delayed(f, pure=True) for f in (leaf, inc, add, total)))
THUNK_OPS = Ops(*(thunk(f) for f in (leaf, inc, add, total)))
PLAIN_OPS = Ops(leaf, inc, add, total)


def run_shape(shape: str, n: int, *, repeat: int, delayed_chain: int) -> list[Timing]:
    build = SHAPES[shape]
    count = node_count(shape, n)
    expected = build(PLAIN_OPS, n)
    dsk, root = dask_graph(shape, n)
    d_n = min(n, delayed_chain) if shape == "chain" else n
    d_count = node_count(shape, d_n)
    contenders = [
        Contender(
            "lazygraph",
            lambda session: session.compute(build(LG_OPS, n))[0],
            count,
            repeat,
            setup=lambda: lazygraph.Session(progress=False),
            teardown=lambda session: session.close(),
        ),
        Contender(  # the bar's cost on the fast path (issue 16): its ticks, not its drawing
            "lazygraph, progress=True",
            lambda session: session.compute(build(LG_OPS, n))[0],
            count,
            repeat,
            setup=lambda: lazygraph.Session(progress=True),
            teardown=lambda session: session.close(),
        ),
        Contender("bare pull", lambda _: bare_compute(build(THUNK_OPS, n)), count, repeat),
        Contender("dask get_sync", lambda _: dask.local.get_sync(dsk, root), count, repeat),
        Contender(
            "dask.delayed",
            lambda _: build(DELAYED_OPS, d_n).compute(scheduler="sync"),
            d_count,
            max(1, min(repeat, 3)),
            note="" if d_count == count else f"{d_count:,} nodes (grows super-linearly)",
        ),
        Contender("plain python", lambda _: build(PLAIN_OPS, n), count, repeat),
    ]
    rows = []
    for c, (times, result) in zip(contenders, round_robin(contenders).values(), strict=True):
        if c.nodes == count and result != expected:
            raise AssertionError(f"{c.label} on {shape} returned {result!r}, not {expected!r}")
        rows.append(Timing(c.label, shape, c.nodes, min(times), statistics.median(times), c.note))
    return rows


# -- hits -----------------------------------------------------------------------------------


def per_call(func: Callable[[], Any], *, calls: int, repeat: int) -> tuple[float, float]:
    """Best and median seconds per call of ``func`` over ``repeat`` loops of ``calls``."""
    func()  # warm
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            func()
        times.append((time.perf_counter() - start) / calls)
    return min(times), statistics.median(times)


def hit_latencies(repeat: int, chain_n: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    cached_inc = functools.lru_cache(maxsize=None)(inc)
    out["lru_cache hit"] = per_call(lambda: cached_inc(1), calls=200_000, repeat=repeat)
    with tempfile.TemporaryDirectory() as tmp:
        memory = joblib.Memory(tmp, verbose=0)
        joblib_inc = memory.cache(inc)
        out["joblib.Memory hit"] = per_call(lambda: joblib_inc(1), calls=2_000, repeat=repeat)
        joblib_globals = memory.cache(read_globals)
        out["joblib.Memory hit, ten globals"] = per_call(
            lambda: joblib_globals(1), calls=2_000, repeat=repeat
        )
    lg_inc = LG_OPS.inc
    with lazygraph.Session(progress=False) as session:
        same = lg_inc(1)
        session.compute(same)
        out["lazygraph same Node, session.compute"] = per_call(
            lambda: session.compute(same), calls=50_000, repeat=repeat
        )
        out["lazygraph same Node, node.compute()"] = per_call(
            same.compute, calls=50_000, repeat=repeat
        )
        out["lazygraph new Node, node.compute()"] = per_call(
            lambda: lg_inc(1).compute(), calls=50_000, repeat=repeat
        )
        lg_globals = lazygraph.node(read_globals)
        lg_globals(1).compute()
        out["lazygraph new Node, ten globals, node.compute()"] = per_call(
            lambda: lg_globals(1).compute(), calls=50_000, repeat=repeat
        )
        session.compute(chain(LG_OPS, chain_n))
        rerun = per_call(
            lambda: session.compute(chain(LG_OPS, chain_n)), calls=1, repeat=max(3, repeat)
        )
        out[f"lazygraph re-run of a cached {chain_n:,}-chain, per node"] = (
            rerun[0] / chain_n,
            rerun[1] / chain_n,
        )
    return out


# -- the report -----------------------------------------------------------------------------


def print_graph_table(rows: list[Timing]) -> None:
    print(
        f"{'shape':<8} {'contender':<15} {'nodes':>7} {'us/node':>9} {'median':>9} "
        f"{'x lazygraph':>11}  note"
    )
    for shape in SHAPES:
        group = [r for r in rows if r.shape == shape]
        lg = next(r for r in group if r.label == "lazygraph")
        for r in group:
            ratio = r.us_per_node / lg.us_per_node
            median = r.median / r.nodes * 1e6
            print(
                f"{shape:<8} {r.label:<15} {r.nodes:>7,} {r.us_per_node:>9.2f} "
                f"{median:>9.2f} {ratio:>11.2f}  {r.note}"
            )


def print_hit_table(hits: dict[str, tuple[float, float]]) -> None:
    lru = hits["lru_cache hit"][0]
    print(f"{'hit':<52} {'us':>9} {'median':>9} {'x lru_cache':>11}")
    for label, (best, median) in hits.items():
        print(f"{label:<52} {best * 1e6:>9.3f} {median * 1e6:>9.3f} {best / lru:>11.1f}")


def goals(rows: list[Timing], hits: dict[str, tuple[float, float]]) -> list[tuple[str, bool]]:
    def us(shape: str, label: str) -> float:
        return next(r.us_per_node for r in rows if r.shape == shape and r.label == label)

    checks = []
    for shape in SHAPES:
        lg = us(shape, "lazygraph")
        bare, get_sync = us(shape, "bare pull"), us(shape, "dask get_sync")
        checks.append((f"{shape}: lazygraph <= 6x bare pull ({lg / bare:.1f}x)", lg <= 6 * bare))
        checks.append(
            (
                f"{shape}: lazygraph >= 5x faster than get_sync ({get_sync / lg:.1f}x)",
                get_sync >= 5 * lg,
            )
        )
    delayed = us("fan-in", "dask.delayed") / us("fan-in", "lazygraph")
    checks.append((f"fan-in: >= 50x faster than dask.delayed ({delayed:.1f}x)", delayed >= 50))
    new_hit = hits["lazygraph new Node, node.compute()"][0]
    joblib_hit = hits["joblib.Memory hit"][0]
    checks.append(
        (
            f"new-Node hit >= 30x faster than joblib.Memory ({joblib_hit / new_hit:.1f}x)",
            joblib_hit >= 30 * new_hit,
        )
    )
    new_hit = hits["lazygraph new Node, ten globals, node.compute()"][0]
    joblib_hit = hits["joblib.Memory hit, ten globals"][0]
    checks.append(
        (
            f"new-Node hit, ten globals, >= 30x faster than joblib.Memory "
            f"({joblib_hit / new_hit:.1f}x)",
            joblib_hit >= 30 * new_hit,
        )
    )
    same = hits["lazygraph same Node, node.compute()"][0]
    lru = hits["lru_cache hit"][0]
    checks.append(
        (f"same-Node re-pull <= 20x an lru_cache hit ({same / lru:.1f}x)", same <= 20 * lru)
    )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--delayed-chain",
        type=int,
        default=2_000,
        help="chain length for dask.delayed (its build is super-linear)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 nodes, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.repeat = 2_000, 3
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # dask.delayed recurses
    print(
        f"lazygraph {lazygraph.__version__}, dask {dask.__version__}, joblib "
        f"{joblib.__version__}, Python {sys.version.split()[0]}; best of {args.repeat}\n"
    )
    rows: list[Timing] = []
    for shape in SHAPES:
        rows += run_shape(shape, args.nodes, repeat=args.repeat, delayed_chain=args.delayed_chain)
    print_graph_table(rows)
    print()
    hits = hit_latencies(args.repeat, chain_n=min(args.nodes, 10_000))
    print_hit_table(hits)
    print()
    for text, ok in goals(rows, hits):
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
