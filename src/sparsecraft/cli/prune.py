"""``sparsecraft prune``: one-shot pruning of an in-project model or a sparsecraft checkpoint.

Pretrained transformers models are pruned by ``sparsecraft posttrain`` (calibrated, layer by layer).
"""
from __future__ import annotations

import argparse

from .. import prune as prune_model
from ..allocation import ALLOCATORS
from ..criteria import CRITERIA
from ..errors import SparsecraftError, check_sparsity
from ..io import check_output
from ..patterns import get_pattern
from ._common import console, csv_list, model_and_data, print_rows
from .report import COLUMNS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune", help="prune an in-project model or a checkpoint in one shot and save a sparse checkpoint",
        description="Prune an in-project model (--model, optionally trained first with --train-epochs) "
                    "or a sparsecraft checkpoint (--checkpoint) in one shot, then save weights + masks "
                    "to --out and print the per-layer sparsity. For a pretrained transformers model "
                    "(all-MiniLM-L6-v2 or a model directory) use `sparsecraft posttrain`.",
        epilog="examples:\n  sparsecraft prune --model cnn --data digits --train-epochs 3 --sparsity 0.9 "
               "--allocation erk --out cnn90.safetensors\n  sparsecraft prune --checkpoint cnn90.safetensors "
               "--pattern 2:4 --keep-dense first --out cnn24.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="in-project model: mlp, cnn or transformer")
    src.add_argument("--checkpoint", help="sparsecraft checkpoint of an in-project model to prune again")
    p.add_argument("--data", default=None, help="dataset for training, calibration and accuracy (default digits; "
                                                "a checkpoint uses the one it was trained on)")
    p.add_argument("--train-epochs", type=int, default=0, help="train a fresh --model this many epochs first")
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction of zeros in [0, 1) (default 0.5; not with N:M patterns, whose density is N/M)")
    p.add_argument("--pattern", default="unstructured",
                   help="unstructured, N:M (2:4), blockRxC (block4x1), channel, headD")
    p.add_argument("--criterion", default="magnitude", help=f"one of: {', '.join(CRITERIA.names())}")
    p.add_argument("--allocation", default="global", help=f"one of: {', '.join(ALLOCATORS.names())}")
    p.add_argument("--keep-dense", default="", help="comma-separated layers (or first,last) to leave dense")
    p.add_argument("--layers", default="", help="comma-separated layers (or globs) to prune; default all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output sparsecraft checkpoint (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> float:
    """Reject options that do not apply, and every bad value, before any data is loaded.

    Returns the sparsity to use.
    """
    from ..models import MODELS

    if args.model is not None and args.model not in MODELS:
        hint = " (a pretrained transformer: use `sparsecraft posttrain --model ...`)" if args.model == "minilm" else ""
        raise SparsecraftError(f"unknown model {args.model!r}{hint}; choose one of: {', '.join(MODELS.names())}")
    if args.checkpoint and args.train_epochs:
        raise SparsecraftError("--train-epochs applies to a fresh --model, not to --checkpoint; remove it")
    pattern = get_pattern(args.pattern)
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
        if pattern.fixed_density is not None:
            raise SparsecraftError(f"--sparsity does not apply to pattern {pattern} (its density is fixed); remove it")
    CRITERIA.get(args.criterion)
    ALLOCATORS.get(args.allocation)
    return 0.5 if args.sparsity is None else args.sparsity


def run(args: argparse.Namespace) -> int:
    from ..models import evaluate

    check_output(args.out, args.force)
    sparsity = check_args(args)
    model, data, spec = model_and_data(args)
    criterion = CRITERIA.get(args.criterion)
    calib = None
    if criterion.needs_labels:
        calib = (data.train_x[:256], data.train_y[:256])
    elif criterion.needs_data:
        calib = data.calib_x
    classify = data.task == "classification"
    dense_acc = evaluate(model, data.test_x, data.test_y) if classify else None
    model.eval()
    sp = prune_model(model, sparsity, args.pattern, args.criterion, args.allocation, calib=calib,
                     layers=csv_list(args.layers) or None, keep_dense=csv_list(args.keep_dense))
    acc = evaluate(model, data.test_x, data.test_y) if classify else None
    sp.save(args.out, force=args.force, model_spec=spec,
            extra={"criterion": args.criterion, "allocation": args.allocation, "sparsity": sparsity})
    summary = {"out": args.out, "accuracy_before": dense_acc, "accuracy_after": acc}
    print_rows(sp.report(), COLUMNS, title=f"pruned {spec['name']} -> {args.out}", as_json=args.json, extra=summary)
    if not args.json and acc is not None:
        console.print(f"test accuracy on {data.name}: {dense_acc:.4f} before, {acc:.4f} after pruning")
    return 0
