"""The docs stay true: their code runs, their links resolve, the API reference is current.

- Every ```python block of a docs page (and of README.md's Quickstart) runs: the blocks of
  one page are joined in order into one script (later blocks build on earlier ones, as a
  reader types them) and run in a fresh process with private cache and secret locations.
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


def readme_quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no '## Quickstart' section"
    return match.group(1)


def run_python(code: str, tmp_path: Path, label: str) -> str:
    """Run ``code`` as a script in a fresh process; its stdout (asserting exit code 0)."""
    script = tmp_path / "page.py"
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
    assert done.returncode == 0, f"the code of {label} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    code = blocks(page.read_text(encoding="utf-8"), "python")
    if not code:
        return  # a page of prose only (index.md): its links are checked below
    run_python("\n".join(code), tmp_path, page.name)


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    code = blocks(readme_quickstart(), "python")
    assert code, "README.md's Quickstart has no python block"
    out = run_python("\n".join(code), tmp_path, "README.md's Quickstart")
    assert "loading 1000000" in out and "scaling by 2.0" in out


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
