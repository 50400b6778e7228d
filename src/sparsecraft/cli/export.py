"""``sparsecraft export``: write a pruned model for another tool (compressed-tensors for vLLM / llm-compressor)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..errors import SparsecraftError, check_sparsity
from ..io import check_output
from ._common import csv_list, print_rows

FORMATS = ("compressed-tensors",)
COLUMNS = ["file", "bytes"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a pruned model in another tool's format (compressed-tensors)",
        description="Load a pruned model - a sparsecraft checkpoint of a transformers model (from `sparsecraft "
                    "prune` or `posttrain`) or a transformers model directory with zeros in its weights - and write "
                    "it for another tool: --format compressed-tensors writes a transformers directory in the "
                    "sparse-bitmask or sparse-24-bitmask format that llm-compressor writes (vLLM, "
                    "compressed-tensors); sparsecraft.export.load_compressed reads it back.",
        epilog="example: sparsecraft posttrain --model minilm --method wanda --pattern 2:4 --out m24.safetensors\n"
               "         sparsecraft export --format compressed-tensors --checkpoint m24.safetensors --out m24-ct",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a sparsecraft checkpoint (weights + masks) of a transformers model")
    src.add_argument("--hf", help="a local transformers model directory (loaded offline)")
    p.add_argument("--format", required=True, help="compressed-tensors")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sparse-format", default="auto",
                   help="compressed-tensors: auto (2:4 when every layer is), sparse-bitmask or sparse-24-bitmask")
    p.add_argument("--layers", default="", help="comma-separated Linear layers/globs that may be compressed")
    p.add_argument("--keep-dense", default="", help="comma-separated Linear layers/globs to leave dense")
    p.add_argument("--min-sparsity", type=float, default=0.05,
                   help="leave Linears with fewer zeros dense (default 0.05)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def load_model(checkpoint: str | None, hf: str | None) -> tuple[torch.nn.Module, Any]:
    """The pruned transformers model (masks baked in, eval mode) and its tokenizer (None if unknown)."""
    from ..models.hf import HF, load_pretrained, load_tokenizer

    if checkpoint:
        from ..checkpoint import read_checkpoint
        from ..sparsifier import Sparsifier

        ckpt = read_checkpoint(checkpoint)
        if (ckpt.model_spec or {}).get("name") != HF:
            raise SparsecraftError(f"{checkpoint} holds a {(ckpt.model_spec or {}).get('name')!r} model; export "
                                   "needs a transformers model (prune one with `sparsecraft posttrain`)")
        model = Sparsifier.load(checkpoint, ckpt.build_model()).finalize().eval()
        return model, load_tokenizer(ckpt.model_spec["source"])
    return load_pretrained(hf)


def run(args: argparse.Namespace) -> int:
    from ..export import save_compressed
    from ..export.compressed_tensors import CT_FORMATS

    if args.format not in FORMATS:
        raise SparsecraftError(f"unknown --format {args.format!r}; choose one of: {', '.join(FORMATS)}")
    if args.sparse_format != "auto":
        CT_FORMATS.get(args.sparse_format)
    check_sparsity(args.min_sparsity, "--min-sparsity")
    check_output(args.out, args.force, directory=True)
    model, tokenizer = load_model(args.checkpoint, args.hf)
    out = save_compressed(model, args.out, tokenizer=tokenizer, format=args.sparse_format,
                          layers=csv_list(args.layers) or None, keep_dense=csv_list(args.keep_dense),
                          min_sparsity=args.min_sparsity, force=args.force)
    rows = [{"file": f.name, "bytes": f.stat().st_size} for f in sorted(Path(out).iterdir())]
    sc = _sparsity_config(out)
    print_rows(rows, COLUMNS, title=f"{out}: {sc['format']}, {len(sc['ignore'])} Linears left dense",
               as_json=args.json, extra={"out": str(out), "sparsity_config": sc})
    return 0


def _sparsity_config(out: Path) -> dict[str, Any]:
    from ..export.compressed_tensors import read_config

    return read_config(out)["quantization_config"]["sparsity_config"]
