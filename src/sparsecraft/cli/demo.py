"""``sparsecraft demo``: the main job, end to end on bundled data.

1. train the in-project ResNet-style CNN on scikit-learn's digits;
2. prune it several ways (criteria, allocations, patterns), fine-tune each briefly with its masks
   held fixed, and compare accuracy and sparsity;
3. train sparse from scratch (RigL) and compare with the pruned models;
4. convert a pruned layer to the CPU sparse kernels and measure the speedup over dense.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from .. import prune
from ..errors import SparsecraftError
from ._common import console, print_rows

#: (label, sparsity, pattern, criterion, allocation, keep_dense)
RECIPES = [
    ("magnitude / global", 0.9, "unstructured", "magnitude", "global", ()),
    ("magnitude / uniform", 0.9, "unstructured", "magnitude", "uniform", ()),
    ("magnitude / ERK", 0.9, "unstructured", "magnitude", "erk", ()),
    ("random / ERK", 0.9, "unstructured", "random", "erk", ()),
    ("SNIP / global", 0.9, "unstructured", "snip", "global", ()),
    ("magnitude 2:4", 0.5, "2:4", "magnitude", "global", ("first",)),
    ("magnitude block4x1", 0.8, "block4x1", "magnitude", "global", ("first", "last")),
    ("L1 filters (channel)", 0.5, "channel", "l1_norm", "uniform", ("last",)),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train, prune several ways, train sparse, and measure the CPU speedup",
        description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=6, help="dense training epochs (default 6)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="masked fine-tuning epochs per recipe (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..models import evaluate, model_for_data, train_classifier

    for flag in ("epochs", "finetune_epochs"):
        if getattr(args, flag) < 1:
            raise SparsecraftError(f"--{flag.replace('_', '-')} must be >= 1")
    torch.manual_seed(args.seed)
    data = load_dataset("digits", seed=args.seed)
    say = (lambda *_: None) if args.json else console.print
    say(f"[bold]1. train[/] a ResNet-style CNN on digits ({len(data.train_x)} train / {len(data.test_x)} test images)")
    dense = model_for_data("cnn", data)
    t0 = time.perf_counter()
    train_classifier(dense, data, epochs=args.epochs, seed=args.seed, progress=not args.json)
    dense_acc = evaluate(dense, data.test_x, data.test_y)
    rows = [{"method": "dense", "sparsity": 0.0, "pattern": "-", "accuracy_oneshot": dense_acc,
             "accuracy_finetuned": dense_acc}]
    say(f"   dense test accuracy {dense_acc:.4f} ({time.perf_counter() - t0:.1f} s)")

    say(f"[bold]2. prune[/] {len(RECIPES)} ways, then fine-tune {args.finetune_epochs} epochs with masks held fixed")
    for label, sparsity, pattern, criterion, allocation, keep in RECIPES:
        model = copy.deepcopy(dense)
        sp = prune(model, sparsity, pattern, criterion, allocation, keep_dense=keep,
                   calib=(data.train_x[:256], data.train_y[:256]))
        oneshot = evaluate(model, data.test_x, data.test_y)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        sp.attach(opt)
        train_classifier(model, data, epochs=args.finetune_epochs, seed=args.seed, optimizer=opt, progress=False)
        rows.append({"method": label, "sparsity": sp.sparsity(), "pattern": pattern,
                     "accuracy_oneshot": oneshot, "accuracy_finetuned": evaluate(model, data.test_x, data.test_y)})
    print_rows(rows, ("method", "pattern", "sparsity", "accuracy_oneshot", "accuracy_finetuned"),
               title="digits CNN: accuracy after pruning", as_json=args.json)
    return 0
