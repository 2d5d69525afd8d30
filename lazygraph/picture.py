"""Pictures of a graph: Graphviz dot text, files, and a picture a notebook shows (S8.5).

Covers: :func:`to_dot` (one box per distinct result, coloured by where it lives, labelled with
its summary and compute time, with a legend of the colours), :func:`visualize` (a ``.dot``
file, or ``.svg``/``.png``/``.pdf`` through Graphviz's ``dot`` program) and :class:`Picture`,
what ``visualize()`` returns without a path (SVG in a notebook when ``dot`` is installed).
Graphviz is a program, not a Python package: nothing here imports one.

Does not cover: what each box says (``inspection.node_info``) or laying the graph out
(Graphviz does).

>>> import lazygraph
>>> @lazygraph.node
... def inc(x):
...     return x + 1
>>> with lazygraph.Session(progress=False):
...     picture = visualize(inc(inc(1)))
>>> picture.dot.count(" -> ")
1
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from . import display
from .errors import ConfigError, LazyGraphError
from .inspection import (
    LOCATION_COLORS,
    NodeInfo,
    distinct_nodes,
    format_seconds,
    node_info,
    session_of,
)
from .node import Node

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Picture", "to_dot", "visualize"]

_PICTURE_FORMATS = ("svg", "png", "pdf")
_LABEL_CHARS = 48  # a summary longer than this is cut at a word in a box's label


def to_dot(node: Node, session: Session | None = None) -> str:
    """The graph above ``node`` in Graphviz dot: one box per node, coloured by location.

    Labels carry the name, the result's summary and its compute time; edges point from a
    dependency to its consumer. Colours: :data:`LOCATION_COLORS`.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def inc(x):
    ...     return x + 1
    >>> with lazygraph.Session(progress=False):
    ...     top = inc(inc(1))
    ...     _ = top.compute()
    ...     dot = to_dot(top)
    >>> dot.splitlines()[0], dot.count(" -> "), LOCATION_COLORS["memory"] in dot
    ('digraph lazygraph {', 1, True)
    """
    session = session if session is not None else session_of(node)
    nodes = distinct_nodes(node)
    ids = {n._key: f"n{i}" for i, n in enumerate(nodes)}
    lines = [
        "digraph lazygraph {",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        *_dot_legend(),
    ]
    for n in nodes:
        info = node_info(n, session)
        tooltip = f"{info.name} key {info.key} ({info.location})"
        lines.append(
            f"  {ids[n._key]} [label={_dot_str(_dot_label(info))}, "
            f'fillcolor="{LOCATION_COLORS[info.location]}", tooltip={_dot_str(tooltip)}];'
        )
    edges: dict[str, None] = {}  # ordered and without repeats
    for n in nodes:
        for d in n.deps:
            edges[f"  {ids[d._key]} -> {ids[n._key]};"] = None
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_label(info: NodeInfo) -> str:
    parts = [info.name, _shorten(info.summary, _LABEL_CHARS)]
    if info.compute_seconds is not None:
        parts.append(f"{format_seconds(info.compute_seconds)} · {info.location}")
    else:
        parts.append(info.location)
    return "\n".join(parts)


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in "…".

    >>> _shorten("DataFrame 1,000 rows × 3 cols (a: int64, b: float64)", 30)
    'DataFrame 1,000 rows × 3 cols…'
    """
    if len(text) <= limit:
        return text
    cut = text[:limit]  # a space at its end means the word before it is whole
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut[: limit - 1]).rstrip(" ,;:(") + "…"


def _dot_legend() -> list[str]:
    """A boxed key of the colours, one small node per location (no edges)."""
    entries = " ".join(
        f'legend_{loc} [label="{loc}", fillcolor="{color}", fontsize=8];'
        for loc, color in LOCATION_COLORS.items()
    )
    return [
        '  subgraph cluster_legend { label="where results live"; fontsize=9; style=dashed;',
        f"    rank=same; {entries}",
        "  }",
    ]


def _dot_str(text: str) -> str:
    """``text`` as a double-quoted dot string (newlines become line breaks)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def visualize(
    node: Node, path: str | os.PathLike[str] | None = None, *, session: Session | None = None
) -> str | Picture:
    """Draw ``node``'s graph: to the file ``path`` (returns the path), or as a :class:`Picture`.

    ``.dot`` files are always written; ``.svg``, ``.png`` and ``.pdf`` need Graphviz's ``dot``
    program on ``PATH`` (raises ``LazyGraphError`` saying how to get it when missing). Without
    a path nothing is written: the returned :class:`Picture` shows itself in a notebook (as
    SVG when ``dot`` is installed) and can be saved later with ``picture.save(path)``.

    >>> import lazygraph, tempfile, os
    >>> @lazygraph.node
    ... def one():
    ...     return 1
    >>> target = os.path.join(tempfile.mkdtemp(), "graph.dot")
    >>> with lazygraph.Session(progress=False):
    ...     visualize(one(), target) == target
    True
    """
    picture = Picture(to_dot(node, session))
    if path is None:
        return picture
    return picture.save(path)


class Picture:
    """A drawn graph: its dot text, shown as SVG in notebooks when Graphviz is installed.

    >>> p = Picture("digraph lazygraph {}")
    >>> str(p), repr(p)
    ('digraph lazygraph {}', '<lazygraph.Picture: 1 lines of dot; .save(path) or .svg() to render>')
    """

    def __init__(self, dot: str) -> None:
        self.dot = dot

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the picture to ``path`` (.dot, .svg, .png or .pdf); returns the path."""
        target = os.fspath(path)
        suffix = os.path.splitext(target)[1].lower().lstrip(".")
        if suffix != "dot" and suffix not in _PICTURE_FORMATS:
            raise ConfigError(
                f"visualize() writes .dot, .svg, .png or .pdf files (got {target!r}); "
                "pick one of those suffixes"
            )
        if suffix == "dot":
            with open(target, "w", encoding="utf-8") as out:
                out.write(self.dot)
        else:
            _render(self.dot, target, suffix)
        return target

    def svg(self) -> str:
        """The picture as SVG text; ``LazyGraphError`` when Graphviz's ``dot`` is missing."""
        return _render(self.dot, None, "svg").decode()

    def _repr_svg_(self) -> str | None:
        # None tells IPython to fall back to the text view (the dot source).
        return self.svg() if shutil.which("dot") is not None else None

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        lines = len(self.dot.splitlines())
        return f"<lazygraph.Picture: {lines} lines of dot; .save(path) or .svg() to render>"


def _render(dot_text: str, target: str | None, fmt: str) -> bytes:
    """Run Graphviz: write ``target`` (returns b"") or, without one, return the output."""
    program = shutil.which("dot")
    if program is None:
        raise LazyGraphError(
            f"writing a .{fmt} picture needs Graphviz's 'dot' program, which is not on PATH; "
            "install Graphviz (apt install graphviz, brew install graphviz or conda install "
            "graphviz), or write a .dot file instead"
        )
    import subprocess  # only when drawing: it costs milliseconds at import

    done = subprocess.run(
        [program, f"-T{fmt}", *(["-o", target] if target is not None else [])],
        input=dot_text.encode(),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise LazyGraphError(f"Graphviz 'dot' failed writing {target or fmt} ({message})")
    return done.stdout if target is None else b""


display.register("to_dot", to_dot)
display.register("visualize", visualize)
