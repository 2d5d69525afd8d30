"""``python -m lazygraph``: the same as the ``lazygraph`` command (see ``lazygraph.cli``)."""

from .cli import main

if __name__ == "__main__":  # importing this module (e.g. doctest collection) runs nothing
    raise SystemExit(main())
