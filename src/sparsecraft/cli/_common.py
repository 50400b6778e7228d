"""Helpers shared by the subcommands: tables, JSON output, list arguments."""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None,
               as_json: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Print ``rows`` as a rich table, or as one JSON document on stdout when ``as_json``."""
    if as_json:
        json.dump({**(extra or {}), "rows": list(rows)}, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in ("layer", "method", "pattern", "shape") else "right")
    for r in rows:
        table.add_row(*[_fmt(r.get(c, "")) for c in columns])
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    return str(v)


def model_and_data(args: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, data, model_spec)`` from ``--checkpoint`` or a fresh ``--model`` sized for ``--data``.

    A fresh model is trained ``--train-epochs`` epochs first (progress on stderr unless ``--json``).
    A checkpoint's model is rebuilt from its stored spec, its masks attached, and paired with the
    dataset it names.
    """
    import torch

    from ..checkpoint import read_checkpoint
    from ..data import load_dataset
    from ..errors import SparsecraftError
    from ..models import model_for_data, model_spec, train_classifier
    from ..sparsifier import Sparsifier

    if args.train_epochs < 0:
        raise SparsecraftError(f"--train-epochs must be >= 0, got {args.train_epochs}")
    torch.manual_seed(args.seed)
    if args.checkpoint:
        ckpt = read_checkpoint(args.checkpoint)
        spec = ckpt.model_spec or {}
        name = spec.get("data", {}).get("name")
        if spec and name is None:
            raise SparsecraftError(f"{args.checkpoint} holds a pretrained transformers model, not an in-project one "
                                   "trained on a bundled dataset; use `sparsecraft posttrain`, `convert` or `eval`")
        model = ckpt.build_model()
        if ckpt.masks:  # held on the model, so pruning it again never revives a pruned weight
            Sparsifier(model, ckpt.masks, ckpt.patterns)
        if getattr(args, "data", None) not in (None, name):
            raise SparsecraftError(f"{args.checkpoint} was trained on {name}, not {args.data}; remove --data")
        return model, load_dataset(name, seed=args.seed), spec
    args.data = getattr(args, "data", None) or "digits"
    data = load_dataset(args.data, seed=args.seed)
    model = model_for_data(args.model, data)
    if args.train_epochs:
        train_classifier(model, data, epochs=args.train_epochs, seed=args.seed, progress=not args.json)
    return model, data, model_spec(args.model, data)


def add_option_flags(parser: Any, options: Sequence[Any], title: str | None = None) -> None:
    """Add one ``--flag`` per :class:`sparsecraft.options.Option` (default ``None`` = not given).

    Parameters
    ----------
    parser : argparse.ArgumentParser
    options : sequence of Option
        Declared by the registered methods; each name is added once.
    title : str, optional
        Heading of the argument group in ``--help``.
    """
    group = parser.add_argument_group(title) if title else parser
    for opt in options:
        default = "" if opt.default is None else f" (default {opt.default})"
        text = (opt.help + ("" if opt.type is bool else default)).replace("%", "%%")  # argparse formats help
        if opt.type is bool:
            group.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=text)
        else:
            group.add_argument(opt.flag, dest=opt.name, type=opt.type, default=None, choices=opt.choices,
                               help=text)


def reject_inapplicable(args: Any, options: Sequence[Any], allowed: Sequence[str], who: str) -> None:
    """One-line error if any of ``options`` was given on the command line but is not in ``allowed``.

    Parameters
    ----------
    args : argparse.Namespace
    options : sequence of Option
        Every option flag the parser knows (added by :func:`add_option_flags`).
    allowed : names of the options that apply to the chosen method
    who : the chosen method, for the message
    """
    from ..errors import SparsecraftError

    for opt in options:
        if getattr(args, opt.name, None) is not None and opt.name not in allowed:
            raise SparsecraftError(f"{opt.flag} does not apply to {who}; remove it")


def csv_list(text: str | None) -> list[str]:
    """Split ``"a,b , c"`` into ``["a", "b", "c"]``; empty or None gives []."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]
