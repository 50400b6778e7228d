"""``sparsecraft activations``: per-layer activation sparsity of a model, and the effect of keeping
only the top-k MLP activations per token (see :mod:`sparsecraft.representations.activations`)."""
from __future__ import annotations

import argparse

import torch

from ..errors import SparsecraftError, check_positive_int
from ._common import console, model_and_data, print_rows

COLUMNS = ["layer", "kind", "width", "zero_fraction", "mean_active"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``activations`` subcommand and its options.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``sparsecraft`` command's subcommands.
    """
    p = subparsers.add_parser(
        "activations", help="per-layer activation sparsity; accuracy with top-k MLP activations",
        description="Run an in-project model (--model, optionally trained first with --train-epochs) or a "
                    "sparsecraft checkpoint (--checkpoint) on test inputs and print, for every activation "
                    "module, the share of activations with |a| <= --eps and the mean active units per "
                    "token. With --topk-fraction, also keep only that share of MLP hidden units per "
                    "token and report test accuracy (or LM loss) before and after.",
        epilog="example:\n  sparsecraft activations --model transformer --data digits --train-epochs 5 "
               "--topk-fraction 0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="in-project model: mlp, cnn, transformer")
    src.add_argument("--checkpoint", help="sparsecraft checkpoint (.safetensors)")
    p.add_argument("--data", default="digits", help="dataset (default digits; a checkpoint names its own)")
    p.add_argument("--train-epochs", type=int, default=0, help="train a fresh --model this many epochs first")
    p.add_argument("--eps", type=float, default=0.0, help="count |a| <= eps as zero (default 0)")
    p.add_argument("--samples", type=int, default=512, help="test inputs to run (default 512)")
    p.add_argument("--topk-fraction", type=float, default=None,
                   help="also evaluate with this share in (0, 1] of MLP hidden units kept per token")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _quality(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> tuple[str, float]:
    from ..models import evaluate, evaluate_loss

    if task == "classification":
        return "accuracy", evaluate(model, x, y)
    return "loss", evaluate_loss(model, x, y)


def run(args: argparse.Namespace) -> int:
    """Run ``sparsecraft activations`` (exit codes: see :mod:`sparsecraft.cli`)."""
    from ..representations import measure_activation_sparsity, sparsify_activations

    if not args.eps >= 0:
        raise SparsecraftError(f"--eps must be >= 0, got {args.eps}")
    samples = check_positive_int(args.samples, "--samples")
    if args.topk_fraction is not None and not 0 < args.topk_fraction <= 1:
        raise SparsecraftError(f"--topk-fraction must be in (0, 1] (share of units kept), got {args.topk_fraction}")
    model, data, _ = model_and_data(args)
    x, y = data.test_x[:samples], data.test_y[:samples]
    rows = [r.as_dict() for r in measure_activation_sparsity(model, x, eps=args.eps)]
    for r in rows:
        r["layer"] = r.pop("name")
    summary: dict[str, object] = {"data": data.name, "samples": len(x), "eps": args.eps}
    if args.topk_fraction is not None:
        metric, before = _quality(model, x, y, data.task)
        summary["topk_layers"] = sparsify_activations(model, fraction=args.topk_fraction)
        _, after = _quality(model, x, y, data.task)
        summary.update({"metric": metric, "dense": before, "topk": after, "topk_fraction": args.topk_fraction})
    print_rows(rows, COLUMNS, title=f"activation sparsity on {len(x)} {data.name} test inputs",
               as_json=args.json, extra=summary)
    if not args.json and args.topk_fraction is not None:
        console.print(f"test {summary['metric']}: {summary['dense']:.4f} dense, {summary['topk']:.4f} with top "
                      f"{args.topk_fraction:g} of MLP units per token ({len(summary['topk_layers'])} layers)")
    return 0
