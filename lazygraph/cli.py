"""The ``lazygraph`` command: the built-in demo and the cache directory tools (SPEC S9).

Covers: the argument parser (``lazygraph --help``, ``--version``, ``demo``, ``cache
info|ls|clear``), printing, and exit codes: 0 done, 1 the command failed (an unsafe cache
directory, a disk error), 2 bad usage (unknown command, a malformed size or age), 130
interrupted. Every problem is one line on stderr, never a traceback: errors as
``lazygraph: error: ...``, the library's warnings while a command runs (a file in a cache
directory that is not an entry, an entry that cannot be read) as ``lazygraph: warning: ...``.
Does not cover: what the commands do (``demo``, ``store.cachedir``).

>>> main(["--version"])  # doctest: +ELLIPSIS
lazygraph 0...
0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import parse_size
from .errors import ConfigError, LazyGraphError
from .store.cachedir import default_cache_dir, parse_age

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own code for usage errors
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C

_DEMO_SIZE = "1GB"  # kept equal to demo.DEFAULT_SIZE: cli does not import the demo to parse
_DEMO_MEMORY_LIMIT = "256MB"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lazygraph`` command with ``argv`` (default: ``sys.argv[1:]``); the exit code.

    >>> main(["cache", "info", "--dir", "/nonexistent/lazygraph-doc"])
    /nonexistent/lazygraph-doc: no cache here yet
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    library = logging.getLogger("lazygraph")
    lines = _OneLine()
    library.addHandler(lines)
    try:
        return int(args.run(args))
    except ConfigError as exc:  # a value from the command line the library refused
        print(f"lazygraph: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (LazyGraphError, OSError) as exc:
        print(f"lazygraph: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lazygraph: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        library.removeHandler(lines)


class _OneLine(logging.Handler):
    """The library's warnings while a command runs, one line each on stderr (no traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
        except Exception:  # a bad format string in a log call: logging's own report
            self.handleError(record)
            return
        print(f"lazygraph: {record.levelname.lower()}: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lazygraph`` command."""
    parser = argparse.ArgumentParser(
        prog="lazygraph",
        description="Lazy, cached computation graphs that keep native Python objects.",
        epilog=(
            "examples:\n"
            "  lazygraph demo                    run the demo (twice, to see the cache work)\n"
            "  lazygraph cache info              size and largest entries of the cache\n"
            "  lazygraph cache clear --older-than 7d\n"
            "\nrun 'lazygraph COMMAND --help' for a command's options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lazygraph {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_demo(commands)
    _add_cache(commands)
    return parser


# -- demo --------------------------------------------------------------------------------


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a built-in pipeline on data larger than its memory limit",
        description=(
            "Run a built-in pipeline (generate sensor readings in chunks, clean them with "
            "pandas, reduce them with numpy, summarize) on data larger than its memory limit, "
            "with a progress bar and a closing report. Run it twice with the same cache "
            "directory: the second run computes nothing."
        ),
    )
    default_dir = default_cache_dir() / "demo"
    demo.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        help=f"where results are kept between runs (default: {default_dir}, "
        "i.e. demo/ under $LAZYGRAPH_CACHE_DIR, $XDG_CACHE_HOME/lazygraph or ~/.cache/lazygraph)",
    )
    demo.add_argument(
        "--size",
        metavar="SIZE",
        type=_size("--size"),
        default=_DEMO_SIZE,
        help=f"how much data to generate, e.g. 200MB or 4GB (default: {_DEMO_SIZE})",
    )
    demo.add_argument(
        "--memory-limit",
        metavar="SIZE",
        type=_size("--memory-limit"),
        default=_DEMO_MEMORY_LIMIT,
        help=f"memory the cache may hold before spilling (default: {_DEMO_MEMORY_LIMIT})",
    )
    demo.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imports pandas: only when the demo runs

    run_demo(
        cache_dir=args.cache_dir,
        size=args.size,
        memory_limit=args.memory_limit,
        progress=not args.no_progress,
        say=print,
    )
    return EXIT_OK


# -- cache -------------------------------------------------------------------------------


def _add_cache(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser(
        "cache",
        help="show and manage a cache directory (info, ls, clear)",
        description="Show and manage a lazygraph cache directory.",
    )
    actions = cache.add_subparsers(dest="action", metavar="ACTION", title="actions")
    actions.required = True
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"the cache directory (default: {default_cache_dir()})",
    )
    info = actions.add_parser(
        "info", parents=[where], help="size, entry count and the largest entries"
    )
    info.add_argument(
        "--largest", metavar="N", type=_count, default=10, help="entries to list (default: 10)"
    )
    info.set_defaults(run=_cache_info)
    ls = actions.add_parser("ls", parents=[where], help="every entry, most recently used first")
    ls.add_argument(
        "--function", metavar="NAME", help="only entries of NAME (a glob like 'load_*')"
    )
    ls.set_defaults(run=_cache_ls)
    clear = actions.add_parser(
        "clear", parents=[where], help="remove entries (all of them without a filter)"
    )
    clear.add_argument(
        "--older-than",
        metavar="AGE",
        type=_age,
        help="only entries last used longer ago than AGE, e.g. 90s, 15m, 12h, 7d, 2w",
    )
    clear.add_argument(
        "--function", metavar="NAME", help="only entries of NAME (a glob like 'load_*')"
    )
    clear.set_defaults(run=_cache_clear)


def _directory(args: argparse.Namespace) -> Path:
    return args.dir.expanduser() if args.dir is not None else default_cache_dir()


def _cache_info(args: argparse.Namespace) -> int:
    from .store.cachedir import cache_info, format_info

    directory = _directory(args)
    print(format_info(cache_info(directory, largest=args.largest)))
    for sub, entries, nbytes in _nested_caches(directory):
        count = f"{entries} {'entry' if entries == 1 else 'entries'}"
        print(f"also: {sub} holds {count} ({_bytes(nbytes)}); see --dir {sub}")
    return EXIT_OK


def _nested_caches(directory: Path) -> list[tuple[Path, int, int]]:
    """Cache directories one level below ``directory`` (the demo keeps its own)."""
    from .store.cachedir import cache_info

    try:
        subs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:  # not a directory, or not readable: the main listing said what it could
        return []
    found = []
    for sub in subs:
        try:
            info = cache_info(sub, largest=0)
        except (LazyGraphError, OSError) as exc:  # any directory may sit in a cache directory
            logging.getLogger(__name__).debug("%s is not a cache: %s", sub, exc)
            continue
        if info["entries"]:
            found.append((sub, int(info["entries"]), int(info["bytes"])))
    return found


def _cache_ls(args: argparse.Namespace) -> int:
    import fnmatch

    from .store.cachedir import cache_ls, format_ls

    entries = cache_ls(_directory(args))
    if args.function is not None:
        entries = [e for e in entries if fnmatch.fnmatchcase(e.function or "", args.function)]
    print(format_ls(entries))
    return EXIT_OK


def _cache_clear(args: argparse.Namespace) -> int:
    from .store.cachedir import cache_clear

    directory = _directory(args)
    removed = cache_clear(directory, older_than=args.older_than, function=args.function)
    print(f"removed {removed} {'entry' if removed == 1 else 'entries'} from {directory}")
    # Caches one level below are not cleared (the demo keeps its own, `demo/`): say so, or a
    # user who ran the demo sees "removed 0 entries" while gigabytes stay on disk.
    for sub, entries, nbytes in _nested_caches(directory):
        count = f"{entries} {'entry' if entries == 1 else 'entries'}"
        print(
            f"not cleared: {sub} holds {count} ({_bytes(nbytes)}); "
            f"clear it with: lazygraph cache clear --dir {sub}"
        )
    return EXIT_OK


# -- argument types: a bad value is a usage error (exit 2) with the library's message -------


def _size(option: str) -> argparse._ActionType:
    def parse(text: str) -> int:
        try:
            return parse_size(text, name=option)
        except ConfigError as exc:  # argparse already names the option: drop it once
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from exc

    return parse


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number like 10 (got {text!r})")
    return int(text)


def _bytes(nbytes: int) -> str:
    from .units import format_bytes

    return format_bytes(nbytes)


if __name__ == "__main__":
    raise SystemExit(main())
