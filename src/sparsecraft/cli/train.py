"""``sparsecraft train``: sparse training of an in-project model with any training method."""
from __future__ import annotations

import argparse
import time

import torch

from ..allocation import ALLOCATORS
from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..io import check_output
from ..patterns import get_pattern
from ._common import console, csv_list, print_rows
from .report import COLUMNS

NM_METHODS = {"srste", "gradflow", "bidirectional"}
SOUP = "soup"


def _methods() -> list[str]:
    from ..training import UPDATERS

    return UPDATERS.names() + [SOUP]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train an in-project model sparse (RigL, SET, GMP, IMP, SR-STE, ...) and save it",
        description="Train an in-project model on an offline dataset with a sparse-training method, print a "
                    "per-layer sparsity table and the test accuracy, and save weights + masks to --out.",
        epilog="example: sparsecraft train --model cnn --data digits --method rigl --sparsity 0.9 "
               "--allocation erk --epochs 10 --out cnn-rigl.safetensors",
    )
    p.add_argument("--model", default="mlp", help="in-project model: mlp or cnn (default mlp)")
    p.add_argument("--data", default="digits", help="dataset: digits or mnist1d (default digits)")
    p.add_argument("--method", default="rigl", help="training method: " + ", ".join(_methods()))
    p.add_argument("--sparsity", type=float, default=0.9, help="final fraction of zeros in [0, 1) (N:M ignores it)")
    p.add_argument("--pattern", default=None, help="unstructured (default) or N:M such as 2:4 (default for N:M methods)")
    p.add_argument("--allocation", default=None,
                   help=f"per-layer budget: {', '.join(ALLOCATORS.names())} (default erk; uniform for masksparsity)")
    p.add_argument("--criterion", default="random", help="initial-mask criterion for --method static (default random)")
    p.add_argument("--keep-dense", default="", help="comma-separated layers (or first,last) to leave dense")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate, cosine-annealed (default 3e-3)")
    p.add_argument("--update-every", type=int, default=None, help="steps between SET/RigL updates (default ~1/20 of training)")
    p.add_argument("--rounds", type=int, default=3, help="IMP prune rounds / soup phases (default 3)")
    p.add_argument("--ingredients", type=int, default=3, help="soup: models averaged per phase (default 3)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune the final model this many epochs with its masks fixed (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _hparams(args: argparse.Namespace, steps: int) -> dict:
    if args.method in ("set", "rigl"):
        return {"update_every": check_positive_int(args.update_every or max(1, steps // 20), "--update-every")}
    if args.method == "imp":
        return {"rounds": check_positive_int(args.rounds, "--rounds")}
    if args.method == "static":
        return {"criterion": args.criterion}
    return {}


def run(args: argparse.Namespace) -> int:
    from ..training import SparsityConfig, make_updater

    check_output(args.out, args.force)
    if args.method not in _methods():
        raise SparsecraftError(f"unknown training method {args.method!r}; choose one of: {', '.join(_methods())}")
    check_sparsity(args.sparsity, "--sparsity")
    pattern = args.pattern or ("2:4" if args.method in NM_METHODS else "unstructured")
    get_pattern(pattern)
    args.allocation = args.allocation or ("uniform" if args.method == "masksparsity" else "erk")
    ALLOCATORS.get(args.allocation)
    epochs = check_positive_int(args.epochs, "--epochs")
    check_positive_int(args.finetune_epochs, "--finetune-epochs", minimum=0)
    check_positive_int(args.batch_size, "--batch-size")
    if not args.lr > 0:
        raise SparsecraftError(f"--lr must be > 0, got {args.lr}")
    if args.model not in ("mlp", "cnn"):
        raise SparsecraftError(f"--model must be mlp or cnn for training, got {args.model!r}")
    config = SparsityConfig(args.sparsity if args.method != "dense" else 0.0, pattern, args.allocation,
                            keep_dense=csv_list(args.keep_dense))
    if args.method != SOUP:   # build once with a dummy length so bad method/option combinations fail now
        make_updater(args.method, config, total_steps=1, seed=args.seed, **_hparams(args, 1))

    from ..checkpoint import model_spec, save_checkpoint
    from ..data import load_dataset
    from ..models import evaluate, model_for_data
    from ..training import fit

    torch.manual_seed(args.seed)
    data = load_dataset(args.data, seed=args.seed)
    model = model_for_data(args.model, data)
    spec = model_spec(args.model, data)
    steps = epochs * ((len(data.train_x) + args.batch_size - 1) // args.batch_size)
    start = time.perf_counter()
    if args.method == SOUP:
        sp, extra = _soup(args, config, data, model)
        updater_desc = {"method": SOUP, "sparsity": args.sparsity, "allocation": args.allocation}
    else:
        updater = make_updater(args.method, config, total_steps=steps, seed=args.seed, **_hparams(args, steps))
        result = fit(model, data, updater, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     progress=not args.no_progress)
        model = updater.finalize()
        sp = updater.sparsifier
        updater_desc = updater.describe()
        extra = {"final_train_loss": result.epoch_loss[-1], "steps": result.steps,
                 "ms_per_step": 1e3 * result.median_step_seconds, "left_dense": updater.skipped}
        if args.method == "masksparsity":
            extra.update(updater.removed)
    if args.finetune_epochs:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr / 3)
        if sp is not None:
            sp.attach(opt)
        fit(model, data, epochs=args.finetune_epochs, batch_size=args.batch_size, optimizer=opt,
            seed=args.seed + 1, progress=not args.no_progress)
    acc = evaluate(model, data.test_x, data.test_y)
    if sp is not None:
        sp.save(args.out, force=args.force, model_spec=spec, extra=updater_desc)
        rows = sp.report()
    else:   # dense or physically shrunk model: weights only
        save_checkpoint(args.out, model, {}, {}, force=args.force,
                        model_spec=spec if args.method != "masksparsity" else None, extra=updater_desc)
        rows = updater.report() if args.method == "masksparsity" else []
    summary = {"out": args.out, "method": args.method, "test_accuracy": acc,
               "seconds": time.perf_counter() - start, **extra}
    print_rows(rows, COLUMNS, title=f"{args.method} {args.model} on {args.data} -> {args.out}", as_json=args.json,
               extra=summary)
    if not args.json:
        what = (f"{extra['params_before']} -> {extra['params_after']} parameters" if args.method == "masksparsity"
                else f"sparsity {sp.sparsity() if sp is not None else 0.0:.4f}")
        console.print(f"test accuracy {acc:.4f} after {epochs} epochs of {args.method} ({what})")
    return 0


def _soup(args: argparse.Namespace, config, data, model):
    """Sparse Model Soups: dense training, then ``--rounds`` prune-retrain phases of averaged copies,
    scored on a held-out 10% of the training set."""
    from ..models import evaluate
    from ..training import fit, sparse_model_soup

    n_val = max(1, len(data.train_x) // 10)
    perm = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(args.seed))
    val, tr = perm[:n_val], perm[n_val:]
    train = (data.train_x[tr], data.train_y[tr])
    progress = not args.no_progress
    fit(model, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)
    rounds = check_positive_int(args.rounds, "--rounds")
    levels = [1.0 - (1.0 - config.sparsity) ** (r / rounds) for r in range(1, rounds + 1)]
    retrain = max(1, args.epochs // 2)

    def train_one(m, sp, seed):
        opt = torch.optim.AdamW(m.parameters(), lr=args.lr)
        sp.attach(opt)
        fit(m, train, epochs=retrain, batch_size=args.batch_size, optimizer=opt, seed=seed, progress=progress)

    sp, phases = sparse_model_soup(model, config, train_one,
                                   lambda m: evaluate(m, data.train_x[val], data.train_y[val]),
                                   sparsities=levels, ingredients=args.ingredients, seed=args.seed)
    return sp, {"phases": [vars(p) for p in phases]}
