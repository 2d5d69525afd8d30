"""What lazygraph knows about scikit-learn values: a content hash of fitted trees.

Imported by ``handlers.registry`` the first time a type from ``sklearn`` is seen (sklearn
is loaded by then). Covers ``sklearn.tree._tree.Tree`` (the ``tree_`` of every fitted
decision tree, random forest and gradient-boosted model): its pickled ``nodes`` array is a
structured array whose 64-byte records hold 7 padding bytes that sklearn never writes, so
hashing its raw bytes could give a fitted estimator a different key in every process. The
tree is hashed from its ``__reduce__`` (constructor arguments and state) with ``nodes``
fed field by field, padding left out. Does not cover: estimators themselves (hashed
through pickle by ``hashing``, which reaches their trees through this handler).

>>> import numpy as np
>>> from sklearn.tree import DecisionTreeClassifier
>>> tree = DecisionTreeClassifier().fit(np.eye(2), [0, 1]).tree_
>>> sorted(HANDLERS) == [type(tree)]
True
"""

from __future__ import annotations

from typing import Any

from sklearn.tree._tree import Tree

from .base import HashWalk, TypeHandler, text, type_token

__all__ = ["HANDLERS", "hash_tree"]


def hash_tree(walk: HashWalk, h: Any, tree: Any) -> None:
    """Feed a fitted Tree's content into ``h``: constructor arguments, then its state with
    the structured ``nodes`` array field by field (its padding bytes are uninitialised)."""
    _, args, state = tree.__reduce__()
    h.update(type_token(tree))
    walk.feed(h, args)
    for name in sorted(state):
        h.update(text(name))
        value = state[name]
        fields = getattr(getattr(value, "dtype", None), "names", None)
        if not fields:
            walk.feed(h, value)
            continue
        for field in fields:  # a field of a record array is a strided view: copied compact
            h.update(text(field))
            walk.feed(h, value[field].copy())


HANDLERS: dict[type, TypeHandler] = {Tree: TypeHandler(hash=hash_tree)}
