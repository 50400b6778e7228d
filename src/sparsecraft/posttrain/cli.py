"""Command-line glue: ``sparsecraft prune --model minilm --method sparsegpt ...`` and ``sparsecraft eval``.

:func:`add_arguments` / :func:`run` implement post-training pruning of a transformers model (the
core ``prune`` subcommand delegates here for the methods in :data:`METHODS` or a model path);
:func:`add_eval_arguments` / :func:`run_eval` compare a pruned model with its dense original.
Options that a parent parser already defines (e.g. ``--sparsity``) are not added twice.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import SparsecraftError, check_sparsity
from .methods import METHODS


def _add(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    if not any(f in parser._option_string_actions for f in flags):
        parser.add_argument(*flags, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of post-training pruning (see ``docs/posttrain.md``)."""
    _add(parser, "--model", default="minilm", help="'minilm' (offline all-MiniLM-L6-v2) or a transformers model directory")
    _add(parser, "--method", default="sparsegpt", help=f"one of: {', '.join(METHODS.names())}")
    _add(parser, "--sparsity", type=float, default=0.5, help="fraction of zeros in [0, 1) (ignored by N:M)")
    _add(parser, "--pattern", default="unstructured", help="unstructured, 2:4, 4:8, or any N:M")
    _add(parser, "--calib-samples", type=int, default=128, help="calibration paragraphs (disjoint from eval)")
    _add(parser, "--seq-len", type=int, default=128, help="max tokens per calibration paragraph")
    _add(parser, "--seed", type=int, default=0, help="seed of the calibration/eval paragraph split")
    _add(parser, "--blocksize", type=int, default=128, help="SparseGPT column block size")
    _add(parser, "--percdamp", type=float, default=0.01, help="SparseGPT dampening, fraction of mean Hessian diagonal")
    _add(parser, "--owl-m", type=float, default=5.0, help="OWL outlier threshold (times the mean score)")
    _add(parser, "--owl-lambda", type=float, default=0.08, help="OWL largest per-block sparsity deviation")
    _add(parser, "--out", required=True, help="output directory (transformers format + sparsity.json)")
    _add(parser, "--force", action="store_true", help="overwrite --out if it exists")
    _add(parser, "--json", action="store_true", help="print the pruning report as JSON")


def run(args: argparse.Namespace) -> int:
    """Prune ``args.model`` and save it to ``args.out``; validates everything before writing."""
    from ..io import check_output
    from .hf import calibration_texts, encode, load_model, model_path, save_pruned
    from .pipeline import check_request, prune_model

    check_sparsity(args.sparsity, "--sparsity")
    method, sparsity, pattern = check_request(args.method, args.sparsity, args.pattern)
    check_output(args.out, args.force)
    model_path(args.model)
    texts = calibration_texts(args.calib_samples, args.seed)
    model, tokenizer = load_model(args.model)
    batches = encode(tokenizer, texts, args.seq_len, by_length=True)
    report = prune_model(
        model, batches, method, sparsity, pattern, owl_m=args.owl_m, owl_lambda=args.owl_lambda,
        blocksize=args.blocksize, percdamp=args.percdamp, progress=not args.json,
    )
    metadata = {"source_model": args.model, "seed": args.seed, "seq_len": args.seq_len, **report.to_metadata()}
    out = save_pruned(model, tokenizer, args.out, metadata, args.force)
    if args.json:
        print(json.dumps(metadata, indent=1))
    else:
        err = report.mean_rel_error
        print(
            f"pruned {len(report.layers)} layers of {args.model} with {method.name} ({pattern}) to "
            f"{report.overall_sparsity:.1%} sparsity in {report.seconds:.1f}s; mean relative layer error "
            f"{err:.4f}; saved to {out}" if err is not None else f"saved to {out}"
        )
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sparsecraft eval``."""
    parser.add_argument("--model", required=True, help="pruned model directory (or 'minilm')")
    parser.add_argument("--dense", default=None, help="dense reference; default: the source recorded in sparsity.json")
    parser.add_argument("--eval-samples", type=int, default=0, help="eval paragraphs to use (0 = all)")
    parser.add_argument("--seq-len", type=int, default=128, help="max tokens per paragraph")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration/eval paragraph split")
    parser.add_argument("-k", type=int, default=10, help="neighbours compared in the retrieval agreement")
    parser.add_argument("--layers", action="store_true", help="also print every layer's error")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_eval(args: argparse.Namespace) -> int:
    """Compare ``args.model`` with its dense original on the eval paragraphs."""
    from .hf import eval_texts, encode, load_model, load_pruned
    from .metrics import layer_errors, sentence_embeddings, summarize

    sparse, tokenizer, metadata = load_pruned(args.model)
    dense_spec = args.dense or (metadata or {}).get("source_model")
    if dense_spec is None:
        raise SparsecraftError(f"{args.model} has no sparsity.json naming its dense model; pass --dense minilm or a path")
    dense, _ = load_model(dense_spec)
    batches = encode(tokenizer, eval_texts(args.eval_samples, args.seed), args.seq_len)
    errors = layer_errors(dense, sparse, batches)
    result = summarize(sentence_embeddings(dense, batches), sentence_embeddings(sparse, batches), errors, args.k)
    zeros = sum(int((dict(sparse.named_modules())[n].weight == 0).sum()) for n in errors)
    total = sum(dict(sparse.named_modules())[n].weight.numel() for n in errors)
    result = {"model": str(args.model), "dense": dense_spec, "eval_texts": sum(len(b["input_ids"]) for b in batches),
              "sparsity": zeros / max(total, 1), **result}
    if args.layers or args.json:
        result["layers"] = errors
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model} vs {dense_spec}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key != "layers":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for name, err in (result.get("layers") or {}).items():
        table.add_row(f"error {name}", f"{err:.4f}")
    Console(file=sys.stdout).print(table)
    return 0
