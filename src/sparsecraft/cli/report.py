"""``sparsecraft report``: per-layer sparsity of a checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoint import MASK_PREFIX, read_checkpoint
from ..errors import SparsecraftError
from ..io import read_safetensors, verify_manifest
from ..sparsifier import report_rows
from ._common import print_rows

COLUMNS = ("layer", "shape", "pattern", "params", "kept", "sparsity")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="per-layer sparsity table of a checkpoint",
        description="Print the per-layer sparsity of a sparsecraft checkpoint (.safetensors) or of any "
                    "directory/file of safetensors weights (e.g. a pruned Hugging Face model).",
    )
    p.add_argument("path", help="checkpoint file or model directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(func=run)


def _weights_in(path: Path) -> dict[str, torch.Tensor]:
    """The weight matrices of a safetensors file or model directory (its manifest verified)."""
    if path.is_dir():
        verify_manifest(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise SparsecraftError(f"no .safetensors files in {path}")
    out = {}
    for f in files:
        out.update(read_safetensors(f, select=lambda k: k.endswith("weight") and not k.startswith(MASK_PREFIX))[0])
    weights = {k: v for k, v in out.items() if v.dim() >= 2}
    if not weights:
        raise SparsecraftError(f"{path} holds no weight matrices; report reads sparsecraft checkpoints and "
                               "safetensors model weights")
    return weights


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise SparsecraftError(f"{path} not found; give a checkpoint file or model directory")
    if path.is_file() and _is_sparsecraft(path):
        ckpt = read_checkpoint(path)
        rows = report_rows(ckpt.masks, {n: str(p) for n, p in ckpt.patterns.items()})
        extra = {"path": str(path), "model": ckpt.model_spec, "extra": ckpt.extra}
    else:
        weights = _weights_in(path)
        rows = report_rows({k: v != 0 for k, v in weights.items()}, {})
        extra = {"path": str(path)}
    print_rows(rows, COLUMNS, title=f"sparsity of {path}", as_json=args.json, extra=extra)
    return 0


def _is_sparsecraft(path: Path) -> bool:
    try:
        return "sparsecraft" in read_safetensors(path, select=lambda k: False)[1]
    except SparsecraftError:
        return True  # let read_checkpoint produce the precise error
