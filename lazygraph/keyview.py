r"""explain_key(): what a node's key is made of (SPEC S3.7), as an aligned table and HTML.

Covers: turning a node's fingerprint parts (``fingerprint.cache_entry(...).parts``: the
function's code, each helper followed, each global read with where it lives, closure cells,
defaults, the ``version=``, installed packages by version) and its keyed arguments (each with
a short hash; Nodes by their key; what ``@node(ignore=...)`` left out) into rows, plus what
was keyed by identity and so keeps the node out of ``cache_dir``. Registered in ``display``
as ``"explain_key"`` (``Node.explain_key()`` calls it). Does not cover: computing keys or
fingerprints (``keys``, ``fingerprint``) or why a pull reused a result (``explain``).

>>> import lazygraph
>>> cell = {"__name__": "notebook"}  # a notebook cell's code (user code: followed)
>>> exec("SCALE = {'factor': 3}\n"
...      "def scaled(x, verbose=False):\n    return x * SCALE['factor']", cell)
>>> print(lazygraph.node(cell["scaled"], ignore=["verbose"])(2).explain_key())  # doctest: +ELLIPSIS
explain_key(scaled): key ... (persistable)
  kind      name                where     hash
  code      scaled              notebook  ...
  global    SCALE               dict      ...
  defaults  defaults of scaled  tuple     ...
  argument  x                   int       ...
  ignored   verbose             bool      -
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from html import escape as esc
from typing import Any

from . import display
from .fingerprint import KeyPart, cache_entry, function_fingerprint
from .hashing import content_hash

__all__ = ["KeyExplanation", "explain_key"]

_SHORT = 12  # hex digits of a hash shown
_KINDS = ("code", "version", "helper", "global", "library", "closure", "defaults")


def _order(part: KeyPart) -> int:
    return _KINDS.index(part.kind) if part.kind in _KINDS else len(_KINDS)


class KeyExplanation:
    """The rows of a key (:class:`~lazygraph.fingerprint.KeyPart`), and what was not hashed.

    Iterating gives the rows; ``str()`` is an aligned table, ``_repr_html_`` an HTML one.
    """

    def __init__(
        self, name: str, key: str, *, persistable: bool, rows: list[KeyPart], unhashed: list[str]
    ) -> None:
        self.name = name
        self.key = key
        self.persistable = persistable
        self.rows = rows
        self.unhashed = unhashed

    def __iter__(self) -> Iterator[KeyPart]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def kinds(self, kind: str) -> list[KeyPart]:
        """The rows of one kind: ``"code"``, ``"helper"``, ``"global"``, ``"argument"``..."""
        return [row for row in self.rows if row.kind == kind]

    def summary(self) -> str:
        state = "persistable" if self.persistable else "not persistable: keyed by identity"
        return f"explain_key({self.name}): key {self.key} ({state})"

    def __str__(self) -> str:
        table = [("kind", "name", "where", "hash"), *self.rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(3)]
        lines = [self.summary()]
        for row in table:
            cells = [f"{str(row[i]):<{widths[i]}}" for i in range(3)]
            lines.append(("  " + "  ".join(cells) + "  " + str(row[3])).rstrip())
        lines += [f"  not hashable (keyed by identity): {item}" for item in self.unhashed]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<KeyExplanation {self.summary()}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr class='lazygraph-key-{esc(r.kind)}'><td>{esc(r.kind)}</td>"
            f"<td><code>{esc(r.name)}</code></td><td>{esc(r.where)}</td>"
            f"<td><code>{esc(r.digest)}</code></td></tr>"
            for r in self.rows
        )
        notes = "".join(
            f"<li>not hashable, keyed by identity: <code>{esc(item)}</code></li>"
            for item in self.unhashed
        )
        return (
            f"<div class='lazygraph-explain-key'><p><b>{esc(self.summary())}</b></p>"
            "<table><thead><tr><th>kind</th><th>name</th><th>where</th><th>hash</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )


def explain_key(node: Any) -> KeyExplanation:
    """What ``node``'s key is made of: one row per code part, global, argument (S3.7)."""
    key = node.key  # resolves it (and the fingerprint) first
    options = node.options
    function_fingerprint(node.func, options.version)
    entry = cache_entry(node.func, options.version)
    rows = sorted(entry.parts, key=_order) if entry is not None else []
    unhashed = list(entry.unhashed) if entry is not None else []
    if not any(row.kind == "code" for row in rows):  # library code, builtins: by name
        module = getattr(node.func, "__module__", None) or type(node.func).__module__
        digest = function_fingerprint(node.func, options.version).hex()[:_SHORT]
        rows.insert(0, KeyPart("code", node.name, str(module), digest))
    rows += _argument_rows(node, unhashed)
    return KeyExplanation(
        node.name, key, persistable=bool(node._persistable), rows=rows, unhashed=unhashed
    )


def _argument_rows(node: Any, unhashed: list[str]) -> list[KeyPart]:
    names = _positional_names(node.func, len(node.args))
    positions, keywords = node.options._ignored or (frozenset(), frozenset())
    rows = []
    for i, value in enumerate(node.args):
        rows.append(_argument(names[i], value, unhashed, ignored=i in positions))
    for name, value in node.kwargs.items():
        rows.append(_argument(name, value, unhashed, ignored=name in keywords))
    return rows


def _argument(name: str, value: Any, unhashed: list[str], *, ignored: bool) -> KeyPart:
    if ignored:
        return KeyPart("ignored", name, type(value).__name__, "-")
    if hasattr(value, "__lazygraph_token__") and hasattr(value, "options"):
        return KeyPart("argument", name, f"node {value.name}", value.key[:_SHORT])
    digest, persistable = content_hash(value)
    if not persistable:
        unhashed.append(f"argument {name} ({type(value).__name__})")
    shown = digest.hex()[:_SHORT] if persistable else "identity"
    return KeyPart("argument", name, type(value).__name__, shown)


def _positional_names(func: Any, count: int) -> list[str]:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
    names += [f"{star}[{i}]" for i in range(count - len(names))]
    return names[:count]


display.register("explain_key", explain_key)
