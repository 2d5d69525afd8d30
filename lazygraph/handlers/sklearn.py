"""What lazygraph knows about scikit-learn values: estimators and fitted trees.

Imported by ``handlers.registry`` the first time a type from ``sklearn`` is seen (sklearn
is loaded by then). Covers:

- ``sklearn.base.BaseEstimator`` (every estimator, and user classes deriving from it):
  hashed as its class's code fingerprint (a scikit-learn class by the installed version,
  a user's class by its code, so editing a transformer's ``fit`` misses) plus its instance
  ``__dict__`` (parameters, fitted attributes, anything set beyond them). That is what
  pickle would see (scikit-learn's ``__getstate__`` adds only its version), fed straight
  into the hash instead of pickled first: the key of a ``Pipeline(memory=...)`` call
  hashes a clone per call. A class that changes how it pickles (its own ``__getstate__``,
  ``__reduce__``, ``__slots__``, a container base) is hashed through pickle as before.
- ``sklearn.tree._tree.Tree`` (the ``tree_`` of every fitted decision tree, random forest
  and gradient-boosted model): its pickled ``nodes`` array is a structured array whose
  64-byte records hold 7 padding bytes that sklearn never writes, so hashing its raw bytes
  could give a fitted estimator a different key in every process. The tree is hashed from
  its ``__reduce__`` (constructor arguments and state) with ``nodes`` fed field by field,
  padding left out.

- ``sklearn.utils.Bunch`` (the routed parameters ``Pipeline`` passes to each cached call):
  its items, sorted by name, without pickling it.

Does not cover: other scikit-learn values (scorers, splitters), hashed through pickle by
``hashing``, which reaches estimators, bunches and trees inside them through this module.

>>> import numpy as np
>>> from sklearn.base import BaseEstimator
>>> from sklearn.tree import DecisionTreeClassifier
>>> tree = DecisionTreeClassifier().fit(np.eye(2), [0, 1]).tree_
>>> sorted(HANDLERS, key=str) == [BaseEstimator, type(tree), Bunch]
True
"""

from __future__ import annotations

import functools
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.tree._tree import Tree
from sklearn.utils import Bunch

from .base import HashWalk, TypeHandler, text, type_token

__all__ = ["HANDLERS", "hash_bunch", "hash_estimator", "hash_tree"]

# What a class may define that makes pickle see something other than its instance dict.
_PICKLE_HOOKS = ("__getstate__", "__reduce__", "__reduce_ex__", "__getnewargs__",
                 "__getnewargs_ex__", "__slots__")
_CONTAINERS = (dict, list, tuple, set, frozenset, bytes, bytearray, str)


@functools.lru_cache(maxsize=1024)  # a bound, whatever code defines classes on the fly
def _pickles_its_dict(cls: type) -> bool:
    """Whether pickle's state of a ``cls`` instance is its ``__dict__`` (scikit-learn's
    own ``__getstate__`` only adds the scikit-learn version, which the class's fingerprint
    holds).

    >>> from sklearn.decomposition import NMF, PCA
    >>> _pickles_its_dict(PCA), _pickles_its_dict(NMF)  # NMF derives from abc.ABC
    (True, True)
    >>> _pickles_its_dict(type("Odd", (PCA, list), {}))
    False
    """
    if issubclass(cls, _CONTAINERS):
        return False
    for base in cls.__mro__:
        if base is BaseEstimator or base is object:
            continue
        hooks = [name for name in _PICKLE_HOOKS if name in vars(base)]
        if hooks and (hooks != ["__slots__"] or _slot_names(vars(base)["__slots__"])):
            return False  # an empty __slots__ (abc.ABC has one) adds no state
    return True


def _slot_names(slots: Any) -> list[str]:
    names = [slots] if isinstance(slots, str) else list(slots)
    return [name for name in names if name not in ("__dict__", "__weakref__")]


def hash_estimator(walk: HashWalk, h: Any, estimator: Any) -> None:
    """Feed an estimator into ``h``: its class's code fingerprint, then its ``__dict__``.

    >>> from sklearn.decomposition import PCA
    >>> from lazygraph.hashing import content_hash
    >>> content_hash(PCA(n_components=2)) == content_hash(PCA(n_components=2))
    True
    >>> content_hash(PCA(n_components=2)) == content_hash(PCA(n_components=3))
    False
    """
    state = getattr(estimator, "__dict__", None)
    cls: Any = type(estimator)  # a type is hashable; typeshed's type[Any] is not Hashable
    if type(state) is not dict or not _pickles_its_dict(cls):
        walk.pickled(h, estimator)
        return
    names = _stream_names(state)
    if names is None:
        h.update(b"O")
        walk.code(h, cls)
        walk.feed(h, state)  # the dict handler: order-free, and a cycle back here ends
        return
    h.update(b"U")
    walk.code(h, cls)
    walk.feed(h, (names, tuple([state[name] for name in names])))


# Values that cannot lead back to the object holding them without passing through a
# container the walk tracks (a dict or list: a cycle through one ends in a back-reference).
_STREAMED = frozenset({type(None), bool, int, float, complex, str, bytes, dict, list})


def _stream_names(state: dict[Any, Any]) -> tuple[str, ...] | None:
    """``state``'s names in order, when its values can be hashed as one flat stream; else None.

    Hashing a dict costs a hasher per item (items are combined order-free); names that are
    strings can be sorted instead, which is several times cheaper for the dozen parameters
    of an estimator. Other values (arrays, estimators, functions) take the dict's way.

    >>> _stream_names({"k": 2, "alpha": None}), _stream_names({"k": (2,)})
    (('alpha', 'k'), None)
    """
    for name, value in state.items():
        if type(name) is not str or type(value) not in _STREAMED:
            return None
    return tuple(sorted(state))


def hash_bunch(walk: HashWalk, h: Any, bunch: Any) -> None:
    """Feed a ``Bunch`` (the routed parameters Pipeline passes to every cached call) into
    ``h``: its items sorted by name, then its attributes; a subclass as pickle sees it.

    >>> from lazygraph.hashing import content_hash
    >>> content_hash(Bunch(fit={}, k=1)) == content_hash(Bunch(k=1, fit={}))
    True
    >>> content_hash(Bunch(fit={})) == content_hash({"fit": {}})
    False
    """
    names = _stream_names(bunch) if type(bunch) is Bunch else None
    if names is None:
        walk.pickled(h, bunch)
        return
    h.update(b"B")
    walk.feed(h, (names, tuple([bunch[name] for name in names])))
    walk.feed(h, vars(bunch))  # scikit-learn keeps its deprecated keys' warnings there


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


HANDLERS: dict[type, TypeHandler] = {
    BaseEstimator: TypeHandler(hash=hash_estimator),
    Bunch: TypeHandler(hash=hash_bunch),
    Tree: TypeHandler(hash=hash_tree),
}
