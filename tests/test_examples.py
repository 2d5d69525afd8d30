"""Every script in examples/ runs, at small sizes, in a fresh process, and says what it should.

Each script runs as a user would run it (``python examples/x.py --small-flags``) with a private
HOME, secret file and cache directories, so nothing touches the user's own cache; the checks
read its output. A script added to examples/ without an entry in ``CHECKS`` still runs here
with no arguments and must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """The environment a script runs with: no LAZYGRAPH_* from outside, private dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYGRAPH_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        LAZYGRAPH_SECRET_FILE=str(tmp_path / "config" / "lazygraph-secret"),
        TMPDIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
        PYTHONWARNINGS="ignore",
    )
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def run_script(script: Path, args: list[str], tmp_path: Path) -> str:
    """Run ``script`` with ``args``; its stdout, after asserting it exited 0."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def number(pattern: str, text: str) -> float:
    """The number captured by ``pattern`` in ``text`` (the pattern must match)."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


# -- one check per script ------------------------------------------------------------------


def check_pandas_pipeline(tmp_path: Path) -> None:
    out = run_script(EXAMPLES / "pandas_pipeline.py", ["--rows", "20000"], tmp_path)
    computed = [number(rf"pass {i}[^:]*: (\d+) nodes? computed", out) for i in range(1, 6)]
    # scratch: the 7 functions; unchanged: nothing; new min_amount: the 5 nodes below it;
    # same rows: clean, then cutoff; set back: nothing. (Inputs hold values: nothing runs.)
    assert computed == [7, 0, 5, 1, 0]
    revenue = [number(rf"pass {i}[^\n]*'revenue': ([\d.]+)", out) for i in range(1, 6)]
    assert revenue[0] == revenue[1] == revenue[4]
    assert revenue[2] == revenue[3] < revenue[0]  # a higher minimum drops sales
    assert re.search(r"^clean\s+3\s", out, re.MULTILINE), out  # the report: clean ran 3 times


def check_larger_than_ram(tmp_path: Path) -> None:
    args = ["--chunks", "6", "--chunk-mb", "2", "--memory-limit", "6MB"]
    out = run_script(EXAMPLES / "larger_than_ram.py", args, tmp_path)
    assert number(r"pass 1: (\d+) nodes computed", out) == 6 * 3 + 1
    assert number(r"rms ([\d.]+)", out) == pytest.approx(1.0, abs=1e-3)  # standardized
    assert number(r"spilled [\d.]+ \w+ in (\d+) files", out) > 0
    assert number(r"pass 2 \(histogram\): (\d+) nodes computed", out) == 6 + 1
    assert number(r"(\d+) chunks reloaded from spill files", out) > 0
    assert number(r"\n  (\d+) values", out) > 0.99 * 6 * 31250 * 8  # in [-4, 4]
    assert "came back as memmap, writeable=False (from spilled)" in out
    leftovers = list(tmp_path.glob("lazygraph-spill-*"))
    assert leftovers == [], f"spill directories left behind: {leftovers}"


def check_torch_features(tmp_path: Path) -> None:
    args = ["--images", "128", "--batch", "32", "--pixels", "16", "--width", "8"]
    out = run_script(EXAMPLES / "torch_features.py", args, tmp_path)
    # 4 batches + 4 embeddings + the model + the labels + the score
    assert number(r"4 batches embedded, (\d+) nodes computed", out) == 11
    assert number(r"nearest-centroid accuracy ([\d.]+)", out) >= 0.9
    assert re.search(r"features of batch 0: Tensor float32\[32, 8\] on (cpu|cuda:\d)", out), out
    assert number(r"\): (\d+) node computed, the network did not run again", out) == 1


def check_dask_cluster(tmp_path: Path) -> None:
    args = ["--workers", "2", "--chunks", "4", "--rows", "10000"]
    out = run_script(EXAMPLES / "dask_cluster.py", args, tmp_path)
    assert number(r"on the cluster: (\d+) nodes computed", out) == 4 * 2 + 1
    assert "not here: True" in out  # the node functions ran in worker processes
    assert number(r"pulled again: (\d+) nodes computed", out) == 0
    assert number(r"one chunk added: (\d+) nodes computed", out) == 3
    assert "same answer from the sync executor: True" in out


def check_persistent_cache(tmp_path: Path) -> None:
    script = EXAMPLES / "persistent_cache.py"
    cache = tmp_path / "example-cache"
    args = ["--cache-dir", str(cache), "--rows", "20000"]
    first = run_script(script, args, tmp_path)
    assert number(r"(\d+) nodes computed", first) == 3
    assert number(r"(\d+) loaded from", first) == 0
    assert "features from memory: ndarray (20000, 52), writeable=True" in first
    assert oct(cache.stat().st_mode & 0o777) == "0o700"

    second = run_script(script, args, tmp_path)
    assert number(r"(\d+) nodes computed", second) == 0
    assert number(r"(\d+) loaded from", second) >= 1
    assert "features from disk: memmap (20000, 52), writeable=False" in second
    assert number(r"score ([\d.-]+)", first) == number(r"score ([\d.-]+)", second)

    run_script(script, ["--cache-dir", str(cache), "--clear"], tmp_path)
    assert not cache.exists()


CHECKS: dict[str, Callable[[Path], None]] = {
    "pandas_pipeline.py": check_pandas_pipeline,
    "larger_than_ram.py": check_larger_than_ram,
    "torch_features.py": check_torch_features,
    "dask_cluster.py": check_dask_cluster,
    "persistent_cache.py": check_persistent_cache,
}


def test_every_example_is_checked_here_or_runs_plain() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert set(CHECKS) <= set(scripts), "a checked example is missing from examples/"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example(name: str, tmp_path: Path) -> None:
    check = CHECKS.get(name)
    if check is not None:
        check(tmp_path)
    else:
        out = run_script(EXAMPLES / name, [], tmp_path)
        assert out.strip(), f"{name} printed nothing"
