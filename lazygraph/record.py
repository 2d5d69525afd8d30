"""What a pull did to each node it visited: ``Record``, read by ``explain()``.

Covers: the log of ``(node, outcome, detail)`` lines a pull appends to, in its short form
(a node that ran for the first time is logged as the bare Node). Does not cover: deciding
the outcomes (``scheduler``, ``incremental``) or explaining them (``explain``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .node import Node

__all__ = ["Outcome", "Record"]


Outcome = tuple[Node, str, str]  # (node, "hit" | "ran" | "backdated", detail)


class Record(Sequence[Outcome]):
    """What a pull did to each node it visited, in order: ``(node, outcome, detail)``.

    The sync loop logs a node that ran for the first time as the Node alone, the most
    common line, so it allocates nothing per node for it; reading expands it.
    """

    __slots__ = ("log",)

    def __init__(self) -> None:
        self.log: list[Node | Outcome] = []

    def __len__(self) -> int:
        return len(self.log)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [_outcome(item) for item in self.log[index]]
        return _outcome(self.log[index])

    def __iter__(self) -> Iterator[Outcome]:
        return map(_outcome, self.log)


def _outcome(item: Node | Outcome) -> Outcome:
    return (item, "ran", "new") if isinstance(item, Node) else item
