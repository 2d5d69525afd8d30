"""The docs stay true: their code runs, their links resolve, the API reference is current.

- Every ```python block of a docs page (and of README.md's Quickstart) runs ON ITS OWN, as a
  reader pastes it: each block is a script run in a fresh interpreter with private cache and
  secret locations. What the text says a block prints is checked: a ``# prints X`` comment
  (``...`` stands for any text) and a ```text block that follows a python block with only
  prose between (each of its lines, spaces collapsed, ``...`` again any text).
- Every ``lazygraph ...`` command line shown in a ```bash block parses with the real CLI parser
  (running them would take minutes: the CLI's own tests run them).
- Relative links between pages point at files that exist.
- docs/api.md is what docs/gen_api.py renders from the current docstrings.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The user docs, whose code this suite runs and whose links it checks (the architecture,
# benchmarks, reliability and incremental pages describe internals and may show fragments).
USER_PAGES = ("index.md", "getting-started.md", "concepts.md", "guide.md", "api.md")
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name in USER_PAGES or p.name.startswith("guide-"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` in ``text``, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def python_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Each ```python block of ``text`` with the output the text says it prints."""
    found: list[tuple[str, list[str]]] = []
    fences = list(FENCE.finditer(text))
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        body = fence.group(2)
        expected = [m.group(1).strip() for m in PRINTS.finditer(body)]
        if i + 1 < len(fences) and fences[i + 1].group(1) == "text":
            expected += [line.strip() for line in fences[i + 1].group(2).splitlines()]
        found.append((body, [line for line in expected if line]))
    return found


PRINTS = re.compile(r"#\s*prints\s+(.+)$", re.MULTILINE)


def shows(expected: str, stdout: str) -> bool:
    """Whether ``stdout`` holds ``expected`` (spaces collapsed; ``...`` is any text)."""
    flat = " ".join(stdout.split())
    pattern = r".*?".join(re.escape(" ".join(part.split())) for part in expected.split("..."))
    return re.search(pattern, flat) is not None


def page_blocks() -> list[tuple[str, int, str, list[str]]]:
    """(page, block number from 1, code, expected output) of each docs and Quickstart block."""
    texts = [(page.name, page.read_text("utf-8")) for page in PAGES]
    texts.append(("README.md", readme_quickstart()))
    return [
        (name, number, code, expected)
        for name, text in texts
        for number, (code, expected) in enumerate(python_blocks(text), 1)
    ]


def readme_quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no '## Quickstart' section"
    return match.group(1)


def run_python(code: str, tmp_path: Path, label: str, expected: Sequence[str] = ()) -> str:
    """Run ``code`` as a script in a fresh process; its stdout (asserting exit code 0).

    Each line of ``expected`` must show in the output (see :func:`shows`).
    """
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYGRAPH_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        LAZYGRAPH_SECRET_FILE=str(tmp_path / "config" / "lazygraph-secret"),
        TMPDIR=str(tmp_path),
        PYTHONWARNINGS="ignore",
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{label} failed on its own:\n{code}\n{done.stdout}\n{done.stderr}"
    missing = [line for line in expected if not shows(line, done.stdout)]
    assert not missing, f"{label} does not print {missing}; it printed:\n{done.stdout}"
    return done.stdout


BLOCKS = page_blocks()


@pytest.mark.parametrize(
    ("page", "number", "code", "expected"),
    BLOCKS,
    ids=[f"{page}-{number}" for page, number, _, _ in BLOCKS],
)
def test_each_block_runs_alone(
    page: str, number: int, code: str, expected: list[str], tmp_path: Path
) -> None:
    run_python(code, tmp_path, f"{page} block {number}", expected)


def test_readme_quickstart_shows_what_runs() -> None:
    found = python_blocks(readme_quickstart())
    assert found, "README.md's Quickstart has no python block"
    assert sum(len(expected) for _, expected in found) >= 2  # it says what it prints


def test_output_checks_catch_a_wrong_claim(tmp_path: Path) -> None:
    assert shows("cycle in the graph: a -> ... -> a", "x\ncycle in  the graph: a -> b -> a; y")
    assert not shows("10.0", "11.0")
    with pytest.raises(AssertionError, match="does not print"):
        run_python("print(1 + 1)  # prints 3", tmp_path, "a wrong block", ["3"])


def test_user_pages_have_runnable_examples() -> None:
    for page in PAGES:
        if page.name.startswith("guide-") or page.name == "getting-started.md":
            assert blocks(page.read_text(encoding="utf-8"), "python"), f"{page.name}: no example"


def test_command_lines_parse() -> None:
    from lazygraph.cli import build_parser

    parser = build_parser()
    seen = 0
    for page in [*PAGES, ROOT / "README.md"]:
        for body in blocks(page.read_text(encoding="utf-8"), "bash"):
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                for command in _lazygraph_commands(words):
                    seen += 1
                    try:
                        parser.parse_args(command)
                    except SystemExit:
                        pytest.fail(f"{page.name}: `lazygraph {' '.join(command)}` does not parse")
    assert seen >= 5  # the CLI guide shows every command


def _lazygraph_commands(words: list[str]) -> list[list[str]]:
    """The argument lists of each ``lazygraph ...`` command in a shell line (split on &&)."""
    commands: list[list[str]] = []
    current: list[str] | None = None
    for word in [*words, "&&"]:
        if word in ("&&", "||", ";", "|"):
            if current is not None:
                commands.append(current)
            current = None
        elif current is not None:
            current.append(word)
        elif word == "lazygraph":
            current = []
    return commands


def test_relative_links_resolve() -> None:
    missing = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not (page.parent / target).exists():
                missing.add(f"{page.name} -> {target}")
    assert not missing, f"links to missing files: {sorted(missing)}"


def test_api_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    current = (DOCS / "api.md").read_text(encoding="utf-8")
    assert current == gen_api.render(), "docs/api.md is out of date: run python docs/gen_api.py"
