"""``sparsecraft train``: sparse training of an in-project model with any registered training method.

The method flags are built from the options every method in ``UPDATERS`` declares, and defaults
(sparsity, pattern, allocation) come from the chosen method, so a new method needs no edit here.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from ..allocation import ALLOCATORS
from ..errors import SparsecraftError, check_learning_rate, check_positive_int, check_sparsity
from ..io import check_output
from ..options import Option, collect, union
from ..patterns import pattern_specs
from ._common import add_option_flags, console, csv_list, print_rows, reject_inapplicable
from .report import COLUMNS


def _method_options() -> list[Option]:
    """Every option of every registered training method, each name once, its help naming the methods."""
    from ..training import UPDATERS

    methods: dict[str, list[str]] = {}
    for name in UPDATERS.names():
        for opt in UPDATERS.get(name).options:
            methods.setdefault(opt.name, []).append(name)
    return [dataclasses.replace(opt, help=f"{opt.help} [{', '.join(methods[opt.name])}]")
            for opt in union(UPDATERS.get(name).options for name in UPDATERS.names())]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to ``subparsers``."""
    from ..training import UPDATERS

    p = subparsers.add_parser(
        "train", help="train an in-project model sparse (RigL, SET, GMP, IMP, SR-STE, soups, ...) and save it",
        description="Train an in-project model on an offline dataset with a sparse-training method, print a "
                    "per-layer sparsity table and the test accuracy, and save weights + masks to --out.",
        epilog="example: sparsecraft train --model cnn --data digits --method rigl --sparsity 0.9 "
               "--allocation erk --epochs 10 --out cnn-rigl.safetensors",
    )
    p.add_argument("--model", default="mlp", help="in-project model: mlp or cnn (default mlp)")
    p.add_argument("--data", default="digits", help="dataset: digits or mnist1d (default digits)")
    p.add_argument("--method", default="rigl", help="training method: " + ", ".join(UPDATERS.names()))
    p.add_argument("--sparsity", type=float, default=None,
                   help="final fraction of zeros in [0, 1) (default: the method's; N:M ignores it)")
    p.add_argument("--pattern", default=None, help=f"{pattern_specs()} (default: the method's, e.g. 2:4 for srste)")
    p.add_argument("--allocation", default=None,
                   help=f"per-layer budget: {', '.join(ALLOCATORS.names())} (default: the method's, mostly erk)")
    p.add_argument("--keep-dense", default="", help="comma-separated layers (or first,last) to leave dense "
                   "(default none: the first layer is sparse too; RigL keeps it dense: --keep-dense first)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate, cosine-annealed (default 3e-3)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune the final model this many epochs with its masks fixed (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sparse-kernels", action="store_true",
                   help="train the masked Linear and convolution layers on the native sparse kernels (forward, "
                        "both gradients and the optimizer over the kept weights only); refused for methods "
                        "that keep dense weights (dense, imp, masksparsity, soup, srste, gradflow, bidirectional)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_option_flags(p, _method_options(), "method options (each applies only to the methods that declare it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate everything, train with ``--method``, save ``--out`` and print the report."""
    from ..training import UPDATERS, make_updater

    check_output(args.out, args.force)
    cls = UPDATERS.get(args.method)
    reject_inapplicable(args, _method_options(), [o.name for o in cls.options], args.method)
    epochs = check_positive_int(args.epochs, "--epochs")
    check_positive_int(args.finetune_epochs, "--finetune-epochs", minimum=0)
    check_positive_int(args.batch_size, "--batch-size")
    check_learning_rate(args.lr, "--lr")
    if args.model not in ("mlp", "cnn"):
        raise SparsecraftError(f"--model must be mlp or cnn for training, got {args.model!r}")
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
    config = cls.default_config(args.sparsity, args.pattern, args.allocation, keep_dense=csv_list(args.keep_dense))
    updater = make_updater(args.method, config, seed=args.seed, sparse_kernels=args.sparse_kernels,
                           **collect(cls.options, vars(args)))

    from ..checkpoint import save_checkpoint
    from ..data import load_dataset
    from ..models import evaluate, fits_spec, model_for_data, model_spec
    from ..training import fit

    torch.manual_seed(args.seed)
    data = load_dataset(args.data, seed=args.seed)
    model = model_for_data(args.model, data)
    spec = model_spec(args.model, data)
    start = time.perf_counter()
    progress = not args.no_progress
    model = updater.run(model, data, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        progress=progress)
    sp = updater.sparsifier
    if args.finetune_epochs:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr / 3)
        if sp is not None:
            sp.attach(opt)
        fit(model, data, epochs=args.finetune_epochs, batch_size=args.batch_size, optimizer=opt,
            seed=args.seed + 1, progress=progress)
    acc = evaluate(model, data.test_x, data.test_y)
    description = updater.describe()
    if sp is not None:
        sp.save(args.out, force=args.force, model_spec=spec, extra=description)
    else:   # no masks (dense, or channels removed physically): weights only, spec only if still true
        save_checkpoint(args.out, model, {}, {}, force=args.force,
                        model_spec=spec if fits_spec(model, spec) else None, extra=description)
    summary = updater.summary()
    print_rows(updater.report(), COLUMNS, title=f"{args.method} {args.model} on {args.data} -> {args.out}",
               as_json=args.json, extra={"out": args.out, "method": args.method, "test_accuracy": acc,
                                         "seconds": time.perf_counter() - start, **summary})
    if not args.json:
        facts = "".join(f", {k.replace('_', ' ')} {v}" for k, v in summary.items() if isinstance(v, int))
        console.print(f"test accuracy {acc:.4f} after {epochs} epochs of {args.method} "
                      f"(sparsity {updater.sparsity():.4f}{facts})")
        if summary.get("masked_dense"):
            console.print("trained masked-dense (no sparse kernel): "
                          + ", ".join(f"{n} ({why})" for n, why in summary["masked_dense"].items()))
    return 0
