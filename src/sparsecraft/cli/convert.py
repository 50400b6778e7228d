"""``sparsecraft convert``: pack a pruned model's Linear layers for fast sparse CPU inference."""
from __future__ import annotations

import argparse

import torch

from ..errors import SparsecraftError, check_sparsity
from ..io import check_output
from ._common import csv_list, print_rows

COLUMNS = ["layer", "shape", "sparsity", "format", "params", "bytes_per_weight", "bytes_vs_dense"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a pruned model to packed sparse layers (fast CPU inference)",
        description="Load a pruned model - a sparsecraft checkpoint (from `sparsecraft prune`, `train` or "
                    "`posttrain`) or a transformers model directory with zeros in its weights - replace every "
                    "selected Linear layer with at least --min-sparsity zeros by a packed SparseLinear (csr16, "
                    "bitmask, RxC blocks or N:M, detected per layer unless --format is given) and save it to "
                    "--out. Load it back with sparsecraft.inference.load_converted(path).",
        epilog="example: sparsecraft posttrain --model minilm --method magnitude --sparsity 0.9 --out m90.safetensors\n"
               "         sparsecraft convert --checkpoint m90.safetensors --out m90.sparse.safetensors\n"
               "         sparsecraft convert --checkpoint m90.safetensors --int8 --out m90.int8.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a sparsecraft checkpoint (weights + masks)")
    src.add_argument("--hf", help="a local transformers model directory (loaded offline)")
    p.add_argument("--out", required=True, help="output .safetensors file of the converted model")
    p.add_argument("--layers", default="", help="comma-separated Linear layers/globs to convert (default all)")
    p.add_argument("--keep-dense", default="", help="comma-separated Linear layers/globs to leave dense")
    p.add_argument("--format", default="auto", help="auto (default), csr16, bitmask, block, nm")
    p.add_argument("--min-sparsity", type=float, default=0.3, help="leave layers with fewer zeros dense (default 0.3)")
    p.add_argument("--int8", action="store_true",
                   help="store every selected Linear's values as int8 with one fp32 scale per --group-size stored "
                        "values (the smallest of block_int8, csr16_int8 and dense_int8; dense_int8 below "
                        "--min-sparsity): weight-only, activations stay fp32")
    p.add_argument("--group-size", type=int, default=None, help="stored values per int8 scale, a power of two >= 16 "
                                                                "(default 64; needs --int8)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the per-layer report as JSON")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, dict | None]:
    """The model with its masks applied (exact zeros), and how to rebuild its architecture (None:
    a transformers model's own config, which ``save_converted`` records)."""
    if args.checkpoint:
        from ..checkpoint import read_checkpoint
        from ..sparsifier import Sparsifier

        ckpt = read_checkpoint(args.checkpoint)
        model = Sparsifier.load(args.checkpoint, ckpt.build_model()).finalize()
        return model.eval(), {"kind": "spec", "spec": ckpt.model_spec}
    from ..models.hf import load_pretrained

    model, _ = load_pretrained(args.hf)
    return model, None


def run(args: argparse.Namespace) -> int:
    from ..formats.int8 import DEFAULT_GROUP, check_group
    from ..inference import convert
    from ..inference.convert import FORMAT_CHOICES
    from ..inference.serialize import save_converted

    check_output(args.out, args.force)
    if args.format not in FORMAT_CHOICES:
        raise SparsecraftError(f"unknown --format {args.format!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    check_sparsity(args.min_sparsity, "--min-sparsity")
    if args.group_size is not None and not args.int8:
        raise SparsecraftError("--group-size applies to int8 weights only; add --int8 or drop --group-size")
    int8 = {"weights": "int8", "group_size": args.group_size or DEFAULT_GROUP} if args.int8 else {}
    if int8:
        check_group(int8["group_size"])
        if args.format != "auto":
            raise SparsecraftError(f"--int8 picks block_int8, csr16_int8 or dense_int8, not --format {args.format}; "
                                   "drop --format")
    model, source = _load(args)
    with torch.no_grad():
        model, report = convert(model, layers=csv_list(args.layers) or None, keep_dense=csv_list(args.keep_dense),
                                format=args.format, min_sparsity=args.min_sparsity, **int8)
    save_converted(model, args.out, force=args.force, source=source)
    rows = [{"layer": r.name, "shape": list(r.shape), "sparsity": r.sparsity, "format": r.format,
             "params": ",".join(f"{k}={v}" for k, v in r.params.items()), "bytes_per_weight": r.bytes_per_weight,
             "bytes_vs_dense": r.nbytes / r.dense_nbytes} for r in report]
    stored, dense = sum(r.nbytes for r in report), sum(r.dense_nbytes for r in report)
    per_weight = 4 * stored / max(dense, 1)
    print_rows(rows, COLUMNS, title=f"{args.out}: Linear weights {stored / 1e6:.2f} MB vs {dense / 1e6:.2f} MB dense "
               f"({stored / max(dense, 1):.3f}x, {per_weight:.3f} bytes per weight)", as_json=args.json,
               extra={"out": str(args.out), "weight_bytes": stored, "dense_weight_bytes": dense,
                      "bytes_per_weight": per_weight})
    return 0
