"""``sparsecraft prune``: one-shot pruning of an in-project model or a checkpoint, or post-training
pruning of a pretrained transformers model (``--model minilm|DIR``, ``--method``), which is delegated to
:mod:`sparsecraft.posttrain.cli`."""
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

GRADIENT_CRITERIA = {"snip", "taylor", "movement"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune", help="prune a model or checkpoint in one shot and save a sparse checkpoint",
        description="Prune an in-project model (--model, optionally trained first with --train-epochs) "
                    "or a sparsecraft checkpoint (--checkpoint) in one shot, then save weights + masks "
                    "to --out and print the per-layer sparsity. With --model minilm (or a transformers "
                    "model directory) or --method, run calibrated post-training pruning instead "
                    "(magnitude, wanda, sparsegpt, owl-*) and write a transformers model directory.",
        epilog="examples:\n  sparsecraft prune --model cnn --data digits --train-epochs 3 --sparsity 0.9 "
               "--allocation erk --out cnn90.safetensors\n  sparsecraft prune --model minilm --method sparsegpt "
               "--pattern 2:4 --calib-samples 128 --out minilm-24",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="in-project model (mlp, cnn, transformer), or minilm / a transformers "
                                     "model directory for post-training pruning")
    src.add_argument("--checkpoint", help="sparsecraft checkpoint to prune further")
    p.add_argument("--data", default="digits", help="dataset for training, calibration and accuracy (default digits)")
    p.add_argument("--train-epochs", type=int, default=0, help="train a fresh --model this many epochs first")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of zeros in [0, 1) (default 0.5)")
    p.add_argument("--pattern", default="unstructured", help="unstructured, N:M (2:4), blockRxC (block4x1), channel, headD")
    p.add_argument("--criterion", default="magnitude", help=f"one of: {', '.join(CRITERIA.names())}")
    p.add_argument("--allocation", default="global", help=f"one of: {', '.join(ALLOCATORS.names())}")
    p.add_argument("--keep-dense", default="", help="comma-separated layers (or first,last) to leave dense")
    p.add_argument("--layers", default="", help="comma-separated layers (or globs) to prune; default all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--method", default=None, help="post-training method (default sparsegpt for transformers models): "
                                                   f"{', '.join(posttrain_methods())}")
    from ..posttrain.cli import add_arguments

    add_arguments(p)  # post-training options (--calib-samples, --seq-len, ...), only those not defined above
    p.set_defaults(func=run)


def posttrain_methods() -> list[str]:
    from ..posttrain import METHODS

    return METHODS.names()


def is_posttrain(args: argparse.Namespace) -> bool:
    """Post-training pruning applies to a transformers model (minilm or a directory) or an explicit --method."""
    from pathlib import Path

    from ..models import MODELS

    return args.method is not None or (args.model is not None and args.model not in MODELS
                                       and (args.model == "minilm" or Path(args.model).is_dir()))


def run(args: argparse.Namespace) -> int:
    from ..models import evaluate

    if is_posttrain(args):
        if args.checkpoint:
            raise SparsecraftError("--method applies to transformers models (--model minilm or a directory), not --checkpoint")
        from ..posttrain.cli import run as run_posttrain

        args.method = args.method or "sparsegpt"
        return run_posttrain(args)

    check_output(args.out, args.force)
    # check every cheap argument before loading data or training, so a typo fails at once
    check_sparsity(args.sparsity)
    get_pattern(args.pattern)
    CRITERIA.get(args.criterion)
    ALLOCATORS.get(args.allocation)
    model, data, spec = model_and_data(args)
    calib = None
    if args.criterion in GRADIENT_CRITERIA:
        calib = (data.train_x[:256], data.train_y[:256])
    elif args.criterion == "wanda":
        calib = data.calib_x
    dense_acc = evaluate(model, data.test_x, data.test_y) if data.task == "classification" else None
    model.eval()
    sp = prune_model(model, args.sparsity, args.pattern, args.criterion, args.allocation, calib=calib,
                     layers=csv_list(args.layers) or None, keep_dense=csv_list(args.keep_dense))
    acc = evaluate(model, data.test_x, data.test_y) if data.task == "classification" else None
    sp.save(args.out, force=args.force, model_spec=spec,
            extra={"criterion": args.criterion, "allocation": args.allocation, "sparsity": args.sparsity})
    summary = {"out": args.out, "accuracy_before": dense_acc, "accuracy_after": acc}
    print_rows(sp.report(), COLUMNS, title=f"pruned {spec['name']} -> {args.out}", as_json=args.json, extra=summary)
    if not args.json and acc is not None:
        console.print(f"test accuracy on {data.name}: {dense_acc:.4f} before, {acc:.4f} after pruning")
    return 0
