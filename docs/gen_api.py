"""Render the API reference, docs/api.md, from the docstrings of lazygraph's public names.

Covers: which names are public (``lazygraph.__all__`` plus the objects its functions return),
turning their signatures and docstrings into Markdown, and checking that the committed file
is current. Does not cover: the guide (written by hand, in docs/guide*.md).

Usage::

    python docs/gen_api.py           # rewrite docs/api.md
    python docs/gen_api.py --check   # exit 1 if docs/api.md is out of date

tests/test_docs.py runs the check, so a changed docstring fails the suite until the file is
regenerated.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

API_MD = Path(__file__).resolve().parent / "api.md"

# (section title, one-line introduction, dotted names). A name missing from the installed
# package (a feature not built yet) is left out rather than failing the whole reference.
SECTIONS: list[tuple[str, str, list[str]]] = [
    (
        "Building graphs",
        "Decorate functions, call them to build nodes, feed them inputs.",
        ["lazygraph.node", "lazygraph.Node", "lazygraph.Input"],
    ),
    (
        "Running",
        "Pull nodes in a session; sessions own the store and the executor.",
        [
            "lazygraph.compute",
            "lazygraph.Session",
            "lazygraph.configure",
            "lazygraph.current_session",
            "lazygraph.config.Config",
            "lazygraph.config.parse_size",
        ],
    ),
    (
        "joblib, scikit-learn and files",
        "joblib.Memory's interface on a Session (`Pipeline(memory=...)`), and file sources.",
        [
            "lazygraph.Memory",
            "lazygraph.memo.MemorizedFunc",
            "lazygraph.file",
            "lazygraph.sources.FileInput",
        ],
    ),
    (
        "Executors",
        "Who runs the nodes of a pull; pass a name or one of these objects as `executor=`.",
        [
            "lazygraph.DaskExecutor",
            "lazygraph.executors.threads.ThreadExecutor",
            "lazygraph.executors.processes.ProcessExecutor",
        ],
    ),
    (
        "Seeing what happened",
        "What `session.stats()`, `node.info()`, `session.report()` and `node.explain()` return.",
        [
            "lazygraph.store.store.Stats",
            "lazygraph.inspection.NodeInfo",
            "lazygraph.report.Report",
            "lazygraph.report.ReportRow",
            "lazygraph.explain.Explanation",
        ],
    ),
    (
        "Errors",
        "Every error derives from `LazyGraphError` and from the built-in a caller would catch.",
        [
            "lazygraph.LazyGraphError",
            "lazygraph.ConfigError",
            "lazygraph.NodeError",
            "lazygraph.CycleError",
            "lazygraph.CacheSecurityError",
        ],
    ),
]

# Classes users get back rather than build: their constructor is not part of the API.
RETURNED_ONLY = {
    "lazygraph.Node",
    "lazygraph.config.Config",
    "lazygraph.store.store.Stats",
    "lazygraph.inspection.NodeInfo",
    "lazygraph.report.Report",
    "lazygraph.report.ReportRow",
    "lazygraph.explain.Explanation",
}

HEADER = """\
# API reference

Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand. The guide
([guide.md](guide.md)) explains each feature with examples; this page lists every public
name, its signature and its docstring. The examples are the docstrings' doctests (run by the
test suite in the namespace of the module that defines the name).
"""


def resolve(dotted: str) -> Any:
    """The object named ``dotted`` (a module attribute path), or None if it does not exist.

    >>> resolve("lazygraph.Session").__name__
    'Session'
    >>> resolve("lazygraph.NoSuchThing") is None
    True
    """
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attr, None)


def format_signature(obj: Any, *, drop_self: bool = False) -> str:
    """``(a: int, *, b: str = 'x') -> bool`` with string annotations shown unquoted.

    >>> def f(a: int, *, b: str = "x") -> bool: ...
    >>> format_signature(f)
    "(a: int, *, b: str = 'x') -> bool"
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    star_done = False
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        prefixes: dict[inspect._ParameterKind, str] = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}
        prefix = prefixes.get(p.kind, "")
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            p is params[-1] or params[params.index(p) + 1].kind is not p.POSITIONAL_ONLY
        ):
            parts.append("/")
    result = f"({', '.join(parts)})"
    if sig.return_annotation is not sig.empty and sig.return_annotation not in ("None",):
        result += f" -> {_annotation(sig.return_annotation)}"
    return result


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def markdown_doc(doc: str | None) -> str:
    """A docstring as Markdown: doctest examples fenced as ``pycon``, reST roles flattened.

    >>> markdown_doc("Adds ``a``.\\n\\n>>> add(1, 2)\\n3").splitlines()
    ['Adds `a`.', '', '```pycon', '>>> add(1, 2)', '3', '```']
    """
    if not doc:
        return "*(no docstring)*"
    out: list[str] = []
    in_example = False
    for line in doc.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not in_example:
            out.append("```pycon")
            in_example = True
        elif in_example and not line.strip():
            out.append("```")
            in_example = False
        out.append(line if in_example else _inline(line))
    if in_example:
        out.append("```")
    return "\n".join(out).strip()


def _inline(line: str) -> str:
    line = re.sub(r":(?:class|func|meth|data|attr|mod):`~?([^`]+)`", r"`\1`", line)
    return line.replace("``", "`")


def members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined on ``cls`` itself, in source order."""
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if name == "__init__":
            continue  # the class heading shows the constructor's signature
        if isinstance(value, (property, classmethod, staticmethod)) or inspect.isfunction(value):
            found.append((name, value))
    return found


def render_member(owner: str, name: str, value: Any) -> str:
    if isinstance(value, property):
        return f"#### `{owner}.{name}` (property)\n\n{markdown_doc(inspect.getdoc(value))}\n"
    func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
    signature = format_signature(func, drop_self=not isinstance(value, staticmethod))
    return f"#### `{owner}.{name}{signature}`\n\n{markdown_doc(inspect.getdoc(func))}\n"


def render_object(dotted: str, obj: Any) -> str:
    public = dotted
    short = public.rsplit(".", 1)[-1]
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        bases = ""
        if kind == "exception":
            bases = " — subclass of " + ", ".join(f"`{b.__name__}`" for b in obj.__bases__)
        signature = "" if dotted in RETURNED_ONLY else format_signature(obj)
        signature = "" if signature == "(...)" else signature
        blocks = [
            f"### {kind} `{public}{signature}`{bases}\n",
            markdown_doc(inspect.getdoc(obj)) + "\n",
        ]
        if dataclasses.is_dataclass(obj):
            fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(obj))
            blocks.append(f"Fields: {fields}.\n")
        blocks += [render_member(short, name, value) for name, value in members(obj)]
        return "\n".join(blocks)
    return f"### `{public}{format_signature(obj)}`\n\n{markdown_doc(inspect.getdoc(obj))}\n"


def render() -> str:
    """The whole of docs/api.md as it should be for the installed package."""
    parts = [HEADER]
    for title, intro, names in SECTIONS:
        found = [(name, resolve(name)) for name in names]
        found = [(name, obj) for name, obj in found if obj is not None]
        if not found:
            continue
        parts.append(f"## {title}\n\n{intro}\n")
        parts += [render_object(name, obj) for name, obj in found]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else ""
        if current != text:
            print(f"{API_MD} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    API_MD.write_text(text, encoding="utf-8")
    print(f"wrote {API_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
