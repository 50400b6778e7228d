"""The ``sparsecraft`` command.

Each subcommand lives in its own module in this package and defines
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered automatically, so
adding a subcommand is one new file.

Exit codes: 0 success, 1 internal failure (a bug: traceback shown), 2 user error (one line, no
traceback), 130 interrupted (SIGINT), 143 terminated (SIGTERM). Both signals unwind the run, so
temporary outputs are removed and nothing is left half-written.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import signal
import sys
import threading
import warnings
from typing import Iterator, NoReturn

from ..errors import SparsecraftError

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class _Terminated(BaseException):
    """SIGTERM, raised where the run is so that every ``finally`` (temporary outputs) runs."""


def _check_seed(seed: int | None) -> None:
    """Every ``--seed`` seeds numpy and scikit-learn too, which take [0, 2**32)."""
    if seed is not None and not 0 <= seed < 2**32:
        raise SparsecraftError(f"--seed must be an integer in [0, 2**32), got {seed}")


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Show each warning as one line ``sparsecraft COMMAND: warning: ...`` on stderr while the command runs."""
    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = " ".join(str(message).split())
        print(f"sparsecraft {command}: warning: {text}", file=sys.stderr)

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (the usage itself is under --help)."""

    commands: list[str] = []  # the subcommand names, set on the top-level parser

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sparsecraft",
        description="Prune, train sparse, convert and benchmark neural networks on the CPU.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    parser.commands = sorted(subparsers.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        print(f"sparsecraft: error: give a command: {', '.join(parser.commands)}; see `sparsecraft --help`",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        with _sigterm_unwinds(), _one_line_warnings(args.command):
            _check_seed(getattr(args, "seed", None))
            return int(args.func(args) or EXIT_OK)
    except SparsecraftError as err:
        print(f"sparsecraft {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
