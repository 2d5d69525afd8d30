"""Dask's conveniences on Nodes: lazy items and operators, ``nout``, method binding, names.

Covers: ``NodeOps``, the mixin ``Node`` inherits (``node[k]``, arithmetic and ordering
operators return new lazy Nodes; ``nout`` unpacking; ``bool``/``iter``/``len``/
``np.asarray`` refused with a ``TypeError`` saying to call ``.compute()``),
``BindsLikeAMethod`` (``@node`` on a method binds the instance), and readable names for
partials and callable instances. Does not cover: building Nodes (``node``: the mixin asks
``self._derive`` for each new Node), keys or running.

``==`` and ``!=`` are not lazy: Nodes compare and hash by identity, so they stay usable as
dict keys. Lazy attributes are spelled ``node.lazy.attr`` and ``node.lazy.method(...)``
(``LazyAccess``), not dask's bare ``node.attr``: a ``__getattr__`` on Node itself makes
CPython 3.11 give up its specialized attribute loads for every Node attribute read — the
scheduler reads ~29 per node of a fresh pull, which measured +14-19 % per node
(``benchmarks/compare.py``). The accessor is its own small class, so that cost stays there.

>>> import functools
>>> readable_name(functools.partial(readable_name, 1))
'partial(readable_name)'
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

__all__ = [
    "BindsLikeAMethod",
    "BoundNodeFactory",
    "LazyAccess",
    "call_method",
    "NodeOps",
    "checked_nout",
    "readable_name",
]

def _refuse(what: str) -> NoReturn:
    raise TypeError(
        f"{what} of a lazygraph Node is not known until it runs: call .compute() first "
        "(or lazygraph.compute(...) for several)"
    )


class NodeOps:
    """Lazy attribute, item, operator access on a Node; each returns a new Node."""

    __slots__ = ()

    def _derive(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        label: str,
    ) -> Any:
        raise NotImplementedError  # Node implements it

    def _attribute(self, name: str) -> Any:
        raise NotImplementedError  # Node implements it

    @property
    def lazy(self) -> LazyAccess:
        """Lazy attribute and method access: ``node.lazy.attr``, ``node.lazy.method(...)``.

        Each returns a new Node, as dask's ``delayed.attr`` does; nothing runs.

        >>> import lazygraph
        >>> words = lazygraph.Input("a b c", name="words")
        >>> parts = words.lazy.split(" ")
        >>> with lazygraph.Session(progress=False):
        ...     parts.compute(), words.lazy.upper().compute()
        (['a', 'b', 'c'], 'A B C')
        """
        return LazyAccess(self)

    def __getitem__(self, key: Any) -> Any:
        return self._derive(operator.getitem, (self, key), f"[{_clip(repr(key))}]")

    def __bool__(self) -> NoReturn:
        _refuse("The truth value")

    def __iter__(self) -> Iterator[Any]:
        nout = self._nout()
        if nout is None:
            _refuse("The items")
        return iter([self[i] for i in range(nout)])

    def __len__(self) -> int:
        nout = self._nout()
        if nout is None:
            _refuse("The length")
        return nout

    def _nout(self) -> int | None:
        nout: int | None = self.options.nout  # type: ignore[attr-defined]
        return nout

    def __array__(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("The array")

    # numpy: an ndarray on the left of an operator defers to the Node's reflected operator
    __array_ufunc__ = None


def _binary(op: Callable[[Any, Any], Any], label: str, *, reflected: bool = False) -> Any:
    if reflected:
        def method(self: Any, other: Any) -> Any:
            return self._derive(op, (other, self), label)
    else:
        def method(self: Any, other: Any) -> Any:
            return self._derive(op, (self, other), label)
    return method


def _unary(op: Callable[[Any], Any], label: str) -> Any:
    def method(self: Any) -> Any:
        return self._derive(op, (self,), label)
    return method


_BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "pow": operator.pow, "matmul": operator.matmul, "and": operator.and_,
    "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift,
}
for _name, _op in _BINARY.items():
    setattr(NodeOps, f"__{_name}__", _binary(_op, _name))
    setattr(NodeOps, f"__r{_name}__", _binary(_op, _name, reflected=True))
for _name, _op in {"lt": operator.lt, "le": operator.le, "gt": operator.gt,
                   "ge": operator.ge}.items():
    setattr(NodeOps, f"__{_name}__", _binary(_op, _name))
_UNARY: dict[str, Callable[[Any], Any]] = {
    "neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert,
}
for _name, _op1 in _UNARY.items():
    setattr(NodeOps, f"__{_name}__", _unary(_op1, _name))


class LazyAccess:
    """What ``node.lazy`` returns: ``.attr`` builds ``getattr(value, "attr")`` as a Node.

    The Node it builds (an ``AttributeNode``) can itself be called (``node.lazy.mean(axis=0)``):
    the call builds one Node that calls the method on the value, so a bound method is never
    a result.
    """

    __slots__ = ("_node",)

    def __init__(self, node: Any) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # copy/pickle/IPython probes
            raise AttributeError(name)
        return self._node._attribute(name)

    def __dir__(self) -> list[str]:
        return []  # the attributes are those of a value not yet computed

    def __repr__(self) -> str:
        return f"<lazy attributes of {self._node!r}>"


def call_method(obj: Any, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """``obj.name(*args, **kwargs)``: what ``node.lazy.name(...)`` runs.

    >>> call_method("a-b", "split", "-")
    ['a', 'b']
    """
    return getattr(obj, name)(*args, **kwargs)


class BoundNodeFactory:
    """A node factory bound to an instance (or class): calls pass it first."""

    __slots__ = ("factory", "instance")

    def __init__(self, factory: Callable[..., Any], instance: Any) -> None:
        self.factory = factory
        self.instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(self.instance, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<bound {self.factory!r} of {_clip(repr(self.instance))}>"


class BindsLikeAMethod:
    """A descriptor like a function's: ``obj.method`` binds ``obj`` as the first argument."""

    __slots__ = ()

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundNodeFactory(self, instance)  # type: ignore[arg-type]


def readable_name(func: Any) -> str:
    """A short name for a node function, the same in every process.

    Functions and classes: their qualified name without ``<locals>`` parts; partials:
    ``partial(<inner>)``; callable instances: their class's name.

    >>> class Scale:
    ...     def __call__(self, x):
    ...         return x
    >>> readable_name(Scale()), readable_name(len)
    ('Scale', 'len')
    """
    if isinstance(func, functools.partial):
        return f"partial({readable_name(func.func)})"
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(func).__qualname__
    # A function defined inside another is named by its own part: "outer.<locals>.f" -> "f"
    return qualname.rsplit("<locals>.", 1)[-1]


def checked_nout(nout: object) -> int | None:
    """``nout`` if it is None or a non-negative int, else ``TypeError``.

    >>> checked_nout(2)
    2
    """
    if nout is not None and (isinstance(nout, bool) or not isinstance(nout, int) or nout < 0):
        raise TypeError(f"nout must be a non-negative int (got {nout!r})")
    return nout


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
