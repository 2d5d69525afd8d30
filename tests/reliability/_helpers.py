"""Shared pieces of the reliability suite: node functions that count their calls and fail on
demand in any process, random graphs with a naive evaluator beside them, real interrupts.

Nothing here replaces lazygraph code: node functions are ordinary user functions, faults are
flag files they look at, interrupts are real SIGINT signals.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import lazygraph

CALL_LOG_ENV = "LGTEST_CALL_LOG"
CALL_PID_ENV = "LGTEST_CALL_PID"
FAULTS_ENV = "LGTEST_FAULTS"
PRIME = 1_000_003
BLOCK = 2_000  # int64 elements of an array node's result: 16 kB


# -- what node functions call: counting and injected faults -----------------------------------


# Calls made in the test's own process, by log path. A list append is atomic, and unlike a
# file write it cannot leak a descriptor when a SIGINT lands between open and close.
_IN_PROCESS: dict[str, list[str]] = {}


def record_call(label: str) -> None:
    """Count a call: in memory in the test's process, else in the log file (O_APPEND)."""
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    if os.environ.get(CALL_PID_ENV) == str(os.getpid()):
        _IN_PROCESS.setdefault(path, []).append(label)
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (label + "\n").encode())
    finally:
        os.close(fd)


def check_fault(label: str) -> None:
    """Raise what the test planted for ``label``: ``<label>.fail`` or ``<label>.interrupt``."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    if os.path.exists(os.path.join(folder, label + ".fail")):
        raise ValueError(f"injected failure in {label}")
    if os.path.exists(os.path.join(folder, label + ".interrupt")):
        raise KeyboardInterrupt


class CallLog:
    """Reads the call log that ``record_call`` writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def counts(self) -> collections.Counter[str]:
        found = collections.Counter(list(_IN_PROCESS.get(str(self.path), ())))
        if self.path.exists():
            found.update(self.path.read_text().split())
        return found

    def total(self) -> int:
        return sum(self.counts().values())


class Faults:
    """Plants and removes the flag files ``check_fault`` looks for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fail(self, label: str) -> None:
        (self.folder / f"{label}.fail").touch()

    def interrupt(self, label: str) -> None:
        (self.folder / f"{label}.interrupt").touch()

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()


# -- node functions ---------------------------------------------------------------------------


def label_seed(label: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(label)) % PRIME


def pure_step(label: str, *parts: int) -> int:
    """The arithmetic of a step, also used by the naive evaluator."""
    return (sum(parts) * 31 + label_seed(label)) % PRIME


def step(label: str, *parts: int) -> int:
    record_call(label)
    check_fault(label)
    return pure_step(label, *parts)


def slow_step(label: str, *parts: int) -> int:
    record_call(label)
    check_fault(label)
    time.sleep(0.0005)  # widens the window an interrupt or another thread can land in
    return pure_step(label, *parts)


def napping(label: str, *parts: int) -> int:
    """A step that takes a while (0.3 s): an interrupt finds it running in a worker."""
    record_call(label)
    time.sleep(0.3)
    return pure_step(label, *parts)


def block(label: str, *parts: Any) -> np.ndarray:
    """An int64 array filled with the step's value, so the store spills and persists it.

    Its length is ``BLOCK`` (16 kB), or the number after a colon in the label ("d3:250000");
    parts may be ints or such arrays.
    """
    record_call(label)
    check_fault(label)
    value = pure_step(label, *(_scalar(p) for p in parts))
    size = int(label.rsplit(":", 1)[1]) if ":" in label else BLOCK
    return np.full(size, value, dtype=np.int64)


def _scalar(part: Any) -> int:
    return int(part[0]) if isinstance(part, np.ndarray) else int(part)


# -- random graphs with a naive evaluator -----------------------------------------------------


@dataclass
class Spec:
    """A DAG: node ``i`` is named ``labels[i]`` and depends on ``deps[i]`` (indices < i), and
    on the Input ``inputs[j]`` for each ``j`` in ``input_deps[i]``."""

    labels: list[str]
    deps: list[list[int]]
    input_deps: list[list[int]]

    @classmethod
    def random(
        cls,
        n: int,
        *,
        seed: int,
        inputs: int = 1,
        max_deps: int = 3,
        window: int = 50,
        chain: bool = True,
    ) -> Spec:
        rng = random.Random(seed)
        labels, deps, input_deps = [], [], []
        for i in range(n):
            pool = list(range(max(0, i - window), i))
            chosen = set(rng.sample(pool, min(len(pool), rng.randint(0, max_deps))))
            if chain and i:
                chosen.add(i - 1)  # a long path: failures and interrupts land deep
            labels.append(f"n{i}")
            deps.append(sorted(chosen))
            input_deps.append([j for j in range(inputs) if rng.random() < 0.1 or i == 0])
        return cls(labels, deps, input_deps)

    @classmethod
    def chain(cls, sizes: Sequence[int], *, prefix: str = "d") -> Spec:
        """Node ``i`` depends on node ``i - 1`` and on the Input; its array has ``sizes[i]``."""
        labels = [f"{prefix}{i}:{size}" for i, size in enumerate(sizes)]
        deps = [[i - 1] if i else [] for i in range(len(sizes))]
        return cls(labels, deps, [[0] for _ in sizes])

    def descendants(self, index: int) -> set[int]:
        """Indices of nodes that depend on node ``index`` (transitively), itself included."""
        found = {index}
        for i in range(index + 1, len(self.labels)):
            if any(d in found for d in self.deps[i]):
                found.add(i)
        return found


def ancestors(spec: Spec, roots: Sequence[int]) -> set[int]:
    """``roots`` and every node they depend on, transitively (indices into ``spec``)."""
    found: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i not in found:
            found.add(i)
            stack.extend(spec.deps[i])
    return found


def build(
    spec: Spec,
    inputs: Sequence[lazygraph.Node],
    func: Callable[..., Any] = step,
) -> list[lazygraph.Node]:
    """The Nodes of ``spec``, one named factory per label (names show in errors and paths)."""
    nodes: list[lazygraph.Node] = []
    for label, deps, input_deps in zip(spec.labels, spec.deps, spec.input_deps, strict=True):
        factory = lazygraph.node(name=label)(func)
        args = [inputs[j] for j in input_deps] + [nodes[d] for d in deps]
        nodes.append(factory(label, *args))
    return nodes


def evaluate(spec: Spec, input_values: Sequence[int]) -> list[int]:
    """Every node's value, computed naively from scratch (what lazygraph must agree with)."""
    values: list[int] = []
    for label, deps, input_deps in zip(spec.labels, spec.deps, spec.input_deps, strict=True):
        parts = [input_values[j] for j in input_deps] + [values[d] for d in deps]
        values.append(pure_step(label, *parts))
    return values


# -- executors --------------------------------------------------------------------------------


def built_executors() -> list[str]:
    """The executor names whose modules exist in this checkout (others are still being built)."""
    names = ["sync"]
    for name, module in (("threads", "threads"), ("processes", "processes"), ("dask", "dask")):
        if importlib.util.find_spec(f"lazygraph.executors.{module}") is not None:
            names.append(name)
    return names


def lazygraph_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("lazygraph"))


# -- real interrupts --------------------------------------------------------------------------


@dataclass
class Interrupted:
    """How a pull under ``pull_with_interrupt`` ended."""

    outcome: str  # "interrupted", "finished" (no signal sent in time) or "swallowed"
    value: Any = None


def pull_with_interrupt(run: Callable[[], Any], delay: float) -> Interrupted:
    """Call ``run()``, sending a real SIGINT to the main thread after ``delay`` seconds.

    The signal is sent only while ``run`` is still going, and this function does not return
    before the handler has run, so the KeyboardInterrupt can never escape into the test
    runner. "swallowed" means the handler ran but no exception came out of ``run`` (Python
    ignores exceptions raised inside ``__del__`` and weakref callbacks).
    """
    handled = threading.Event()
    done = threading.Event()
    sent = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        handled.set()
        raise KeyboardInterrupt

    def fire() -> None:
        if not done.wait(delay):
            sent.set()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    timer = threading.Thread(target=fire, name="lgtest-interrupter", daemon=True)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        try:
            timer.start()  # inside the try: with no delay the signal may land right away
            value = run()
        finally:
            done.set()
            timer.join()
            deadline = time.monotonic() + 10
            while sent.is_set() and not handled.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)  # the handler runs here at the latest
    except KeyboardInterrupt:
        return Interrupted("interrupted")
    finally:
        signal.signal(signal.SIGINT, previous)
    return Interrupted("swallowed" if handled.is_set() else "finished", value)


# -- child processes --------------------------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """This environment plus what a child needs to import ``reliability._helpers``.

    Node functions come from that module in parent and child alike, so their keys agree.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_child(
    code: str,
    *args: str,
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; check it exited cleanly; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
    )
    assert result.returncode == 0, f"child failed ({result.returncode}):\n{result.stderr}"
    return result


def start_child(code: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter, its stdout a pipe (the caller must wait for it)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(**env),
    )


def entry_files(directory: str | Path | None) -> list[Path]:
    """The ``<key>.joblib`` files of a spill or cache directory."""
    if directory is None or not os.path.isdir(directory):
        return []
    return sorted(p for p in Path(directory).iterdir() if p.name.endswith(".joblib"))


def temp_files(directory: str | Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".lgtmp-"))
