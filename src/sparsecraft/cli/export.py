"""``sparsecraft export``: write a pruned model for another tool (compressed-tensors for vLLM / llm-compressor,
ONNX for ONNX Runtime)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..errors import SparsecraftError, check_sparsity
from ..io import check_output
from ._common import csv_list, print_rows

FORMATS = ("compressed-tensors", "hf", "onnx")
COLUMNS = ["file", "bytes"]
ONNX_COLUMNS = ["inputs", "max_abs_diff", "tolerance"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a pruned model in another tool's format (compressed-tensors, hf, onnx)",
        description="Load a pruned model - a sparsecraft checkpoint of a transformers model (from `sparsecraft "
                    "prune` or `posttrain`), a transformers model directory with zeros in its weights, or (onnx) a "
                    "converted model from `sparsecraft convert` - and write it for another tool. --format "
                    "compressed-tensors writes a transformers directory in the sparse-bitmask or sparse-24-bitmask "
                    "format that llm-compressor writes (vLLM, compressed-tensors); "
                    "sparsecraft.export.load_compressed reads it back. --format hf writes a plain transformers "
                    "directory (AutoModel.from_pretrained loads it). Both directories get a README.md model card: "
                    "sparsity per layer, how the checkpoint was pruned, and the --metric values. "
                    "sparsecraft.inference.from_pretrained(DIR) loads either straight into the fast runtime. "
                    "--format onnx writes one .onnx file (dense "
                    "weights with their zeros; a converted model as its dense equivalent, dynamic batch and "
                    "sequence) and checks it in ONNX Runtime against torch on a padded batch.",
        epilog="example: sparsecraft posttrain --model minilm --method wanda --pattern 2:4 --out m24.safetensors\n"
               "         sparsecraft export --format compressed-tensors --checkpoint m24.safetensors --out m24-ct\n"
               "         sparsecraft export --format onnx --checkpoint m24.safetensors --out m24.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a sparsecraft checkpoint (weights + masks) of a transformers model")
    src.add_argument("--hf", help="a local transformers model directory (loaded offline)")
    src.add_argument("--converted", help="onnx: a converted model file (`sparsecraft convert --out`)")
    p.add_argument("--format", required=True, help="compressed-tensors, hf or onnx")
    p.add_argument("--out", required=True, help="output directory (compressed-tensors, hf) or .onnx file (onnx)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                   help="a quality metric for the model card (repeatable), e.g. --metric 'STS-B spearman=0.81'")
    p.add_argument("--sparse-format", default="auto",
                   help="compressed-tensors: auto (2:4 when every layer is), sparse-bitmask or sparse-24-bitmask")
    p.add_argument("--layers", default="", help="comma-separated Linear layers/globs that may be compressed")
    p.add_argument("--keep-dense", default="", help="comma-separated Linear layers/globs to leave dense")
    p.add_argument("--min-sparsity", type=float, default=0.05,
                   help="leave Linears with fewer zeros dense (default 0.05)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def load_model(checkpoint: str | None, hf: str | None) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The pruned transformers model (masks baked in, eval mode), its tokenizer and how it was pruned
    (a checkpoint's metadata; empty for a directory)."""
    from ..models.hf import HF, load_pretrained, load_tokenizer

    if checkpoint:
        from ..checkpoint import read_checkpoint
        from ..sparsifier import Sparsifier

        ckpt = read_checkpoint(checkpoint)
        if (ckpt.model_spec or {}).get("name") != HF:
            raise SparsecraftError(f"{checkpoint} holds a {(ckpt.model_spec or {}).get('name')!r} model; export "
                                   "needs a transformers model (prune one with `sparsecraft posttrain`)")
        model = Sparsifier.load(checkpoint, ckpt.build_model()).finalize().eval()
        return model, load_tokenizer(ckpt.model_spec["source"]), dict(ckpt.extra)
    return (*load_pretrained(hf), {})


def parse_metrics(items: list[str]) -> dict[str, float]:
    """``["name=0.9", ...]`` -> ``{"name": 0.9}``; one-line error for anything else."""
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            name = ""
        if not sep or not name.strip():
            raise SparsecraftError(f"--metric {item!r} is not NAME=NUMBER; write e.g. --metric 'cosine=0.97'")
    return out


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise SparsecraftError(f"unknown --format {args.format!r}; choose one of: {', '.join(FORMATS)}")
    return run_onnx(args) if args.format == "onnx" else run_compressed(args)


def _refuse(args: argparse.Namespace, flags: dict[str, Any]) -> None:
    """Refuse options that do not apply to ``--format`` (``flags``: dest -> default)."""
    for dest, default in flags.items():
        if getattr(args, dest) != default:
            raise SparsecraftError(f"--{dest.replace('_', '-')} does not apply to --format {args.format}; drop it")


def example_inputs(config: Any, batch: int, seq: int, pad: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of a transformers encoder's vocabulary, an attention mask (row 0 padded from ``pad``)
    and zero token types, each ``(batch, seq)``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad is not None:
        mask[0, pad:] = 0
    return {"input_ids": torch.randint(0, int(config.vocab_size), (batch, seq), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}


def run_onnx(args: argparse.Namespace) -> int:
    from ..export.onnx import TOLERANCE, export_onnx, max_difference

    _refuse(args, {"sparse_format": "auto", "layers": "", "keep_dense": "", "min_sparsity": 0.05, "metric": []})
    check_output(args.out, args.force)
    if args.converted:
        from ..inference import load_converted

        model = load_converted(args.converted)
    else:
        model, _, _ = load_model(args.checkpoint, args.hf)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "vocab_size"):
        raise SparsecraftError("the ONNX command exports transformers encoders; export other models with "
                               "sparsecraft.export.export_onnx(model, path, example_inputs)")
    out = export_onnx(model, args.out, example_inputs(config, 2, 8), force=args.force)
    check = example_inputs(config, 3, 13, pad=5, seed=1)
    diff = max_difference(out, model, check)
    rows = [{"inputs": "3x13, row 0 padded from 5", "max_abs_diff": diff, "tolerance": TOLERANCE}]
    print_rows(rows, ONNX_COLUMNS, title=f"{out}: {out.stat().st_size / 1e6:.1f} MB, ONNX Runtime vs torch",
               as_json=args.json, extra={"out": str(out), "bytes": out.stat().st_size})
    return 0


def run_compressed(args: argparse.Namespace) -> int:
    """``--format compressed-tensors`` or ``hf`` (a plain transformers directory): both with a model card."""
    from ..export import save_compressed
    from ..export.card import model_card
    from ..export.compressed_tensors import CT_FORMATS, read_config

    if args.converted:
        raise SparsecraftError(f"--converted applies to --format onnx; give the pruned model with --checkpoint or "
                               f"--hf for --format {args.format}")
    if args.format == "hf":
        _refuse(args, {"sparse_format": "auto", "layers": "", "keep_dense": "", "min_sparsity": 0.05})
    elif args.sparse_format != "auto":
        CT_FORMATS.get(args.sparse_format)
    check_sparsity(args.min_sparsity, "--min-sparsity")
    metrics = parse_metrics(args.metric)
    check_output(args.out, args.force, directory=True)
    model, tokenizer, how = load_model(args.checkpoint, args.hf)
    layer_metrics = how.get("layers") if isinstance(how.get("layers"), dict) else None
    card = model_card(model, method=how, metrics=metrics, layer_metrics=layer_metrics)
    out = save_compressed(model, args.out, tokenizer=tokenizer,
                          format="dense" if args.format == "hf" else args.sparse_format,
                          layers=csv_list(args.layers) or None, keep_dense=csv_list(args.keep_dense),
                          min_sparsity=args.min_sparsity, force=args.force, card=card)
    rows = [{"file": f.name, "bytes": f.stat().st_size} for f in sorted(Path(out).iterdir())]
    sc = (read_config(out).get("quantization_config") or {}).get("sparsity_config")
    what = f"{sc['format']}, {len(sc['ignore'])} Linears left dense" if sc else "transformers directory"
    print_rows(rows, COLUMNS, title=f"{out}: {what}", as_json=args.json,
               extra={"out": str(out), "sparsity_config": sc})
    return 0
