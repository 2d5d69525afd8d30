"""The built-in demo: correct results, spilling past its memory limit, reuse on a second run."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd

from lazygraph import cli, demo
from lazygraph.demo import build_pipeline, run_demo


def test_cli_defaults_are_the_demo_defaults():
    assert (cli._DEMO_SIZE, cli._DEMO_MEMORY_LIMIT) == (
        demo.DEFAULT_SIZE,
        demo.DEFAULT_MEMORY_LIMIT,
    )


def test_pipeline_shape():
    top = build_pipeline(4 * demo.CHUNK_BYTES + 1)  # five chunks
    assert top.name == "summary"
    stats = top.deps[0].deps
    assert len(stats) == 5
    assert [d.name for d in stats[0].deps] == ["features", "clean"]


def test_summary_matches_plain_pandas(tmp_path):
    lines = []
    run = run_demo(
        cache_dir=tmp_path / "c",
        size="400KB",
        memory_limit="64KB",
        progress=False,
        say=lines.append,
    )
    chunks = demo.MIN_CHUNKS
    rows = 400_000 // (chunks * 32)
    frames = [demo.clean.func(demo.load_chunk.func(i, rows, 0)) for i in range(chunks)]
    whole = pd.concat(frames)
    expected = whole.groupby("sensor")["temperature"].agg(["count", "mean"])
    assert run.summary["readings"].tolist() == expected["count"].tolist()
    np.testing.assert_allclose(run.summary["temperature_mean"], expected["mean"], atol=0.006)
    assert run.computed == run.total == 4 * chunks + 2
    assert run.cache_entries == 3 * chunks + 2  # load_chunk results are never persisted


def test_first_run_spills_past_its_memory_limit(tmp_path):
    lines = []
    run = run_demo(
        cache_dir=tmp_path / "c",
        size="2MB",
        memory_limit="256KB",
        progress=False,
        say=lines.append,
    )
    text = "\n".join(lines)
    assert text.startswith(
        "lazygraph demo: 2.0 MB of generated sensor readings, more than the 256 kB"
    )
    assert f"{run.total} of {run.total} nodes computed" in text
    # evicted past the limit into cache_dir: the disk tier, as the stats count it (issue 16)
    assert re.search(r"^clean +4 +0 .* disk \d", run.report, re.M), run.report
    assert "0 spills" in run.stats and "on disk  0 B" not in run.stats
    assert "run the same command again" in text
    assert run.cache_bytes > 2_000_000


def _demo(cache_dir, *extra):
    command = [
        sys.executable,
        "-m",
        "lazygraph",
        "demo",
        "--cache-dir",
        str(cache_dir),
        "--size",
        "2MB",
        "--memory-limit",
        "512KB",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_second_run_in_a_new_process_computes_nothing(tmp_path):
    first = _demo(tmp_path / "cache", "--no-progress")
    second = _demo(tmp_path / "cache", "--no-progress")
    total = int(re.search(r"; (\d+) nodes\.", first).group(1))
    assert f"{total} of {total} nodes computed" in first
    assert re.search(
        rf"^0 of {total} nodes computed in [\d.]+ s, [\d.]+ KiB reused from disk "
        rf"\(summary\); the {total - 1} nodes above it were not needed\.$",
        second,
        re.M,
    ), second
    assert "0 computes" in second
    # the same result table both times
    assert (
        first[first.index("result (per sensor):") :].split("cache:")[0]
        == (second[second.index("result (per sensor):") :].split("cache:")[0])
    )


def test_default_cache_dir_is_under_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYGRAPH_CACHE_DIR", str(tmp_path / "home"))
    assert demo.default_demo_dir() == tmp_path / "home" / "demo"
    lines = []
    run = run_demo(size="200KB", memory_limit="64KB", progress=False, say=lines.append)
    assert run.cache_dir == tmp_path / "home" / "demo"
    assert (tmp_path / "home" / "demo").is_dir()
    again = run_demo(size="200KB", memory_limit="64KB", progress=False, say=lines.append)
    assert again.computed == 0 and again.reused[0][:2] == ("summary", "disk")
