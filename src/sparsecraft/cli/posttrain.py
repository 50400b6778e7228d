"""``sparsecraft posttrain``: calibrated post-training pruning of a pretrained transformers model.

The result is a sparsecraft checkpoint (weights + masks, checksummed) like every other pruning
command's, so ``sparsecraft report``, ``convert`` and fine-tuning read it the same way;
``--export-hf DIR`` also writes a plain transformers directory for ``from_pretrained`` users.
"""
from __future__ import annotations

import argparse

from ..options import union
from ._common import add_option_flags, csv_list, print_rows, reject_inapplicable

COLUMNS = ("layer", "shape", "target", "sparsity", "rel_error")


def _methods():
    from ..posttrain import METHODS

    return METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    methods = _methods()
    p = subparsers.add_parser(
        "posttrain", help="prune a pretrained transformer after training (magnitude, Wanda, SparseGPT, OWL)",
        description="Prune the Linear layers inside the transformer blocks of a pretrained transformers model, "
                    "block by block on calibration paragraphs (offline pydoc text), and save weights + masks "
                    "as a sparsecraft checkpoint (--out). Method-specific options are listed below.",
        epilog="example: sparsecraft posttrain --model minilm --method sparsegpt --pattern 2:4 "
               "--calib-samples 128 --out minilm-24.safetensors\n"
               "then: sparsecraft report minilm-24.safetensors; sparsecraft convert --checkpoint "
               "minilm-24.safetensors --out minilm-24.sparse.safetensors; sparsecraft eval --checkpoint "
               "minilm-24.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="minilm",
                   help="'minilm' (offline all-MiniLM-L6-v2) or a transformers model directory")
    p.add_argument("--method", default="sparsegpt", help=f"one of: {', '.join(methods.names())} (default sparsegpt)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction of zeros in [0, 1) per layer "
                        "(default 0.5; not with N:M patterns, whose density is N/M)")
    p.add_argument("--pattern", default="unstructured", help="unstructured (default) or N:M such as 2:4, 4:8")
    p.add_argument("--layers", default="",
                   help="comma-separated layers/globs inside the blocks to prune (default all Linear)")
    p.add_argument("--keep-dense", default="", help="comma-separated layers/globs inside the blocks to leave dense")
    p.add_argument("--calib-samples", type=int, default=128,
                   help="calibration paragraphs, disjoint from eval (default 128)")
    p.add_argument("--seq-len", type=int, default=128, help="max tokens per calibration paragraph (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/eval paragraph split")
    add_option_flags(p, union(m.options for m in (methods.get(n) for n in methods.names())), "method options")
    p.add_argument("--out", required=True, help="output sparsecraft checkpoint (.safetensors)")
    p.add_argument("--export-hf", default=None, metavar="DIR",
                   help="also write the pruned model as a transformers directory (loads with from_pretrained)")
    p.add_argument("--force", action="store_true", help="overwrite --out / --export-hf if they exist")
    p.add_argument("--json", action="store_true", help="print the pruning report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune ``args.model`` and save it to ``args.out``; validates everything before any work."""
    from ..errors import SparsecraftError, check_sparsity
    from ..io import check_output
    from ..models.hf import export_pretrained, hf_spec, load_pretrained, model_path
    from ..patterns import get_pattern
    from ..posttrain import prune_model
    from ..posttrain.hf import calibration_texts, encode
    from ..posttrain.pipeline import check_request

    methods = _methods()
    method = methods.get(args.method)
    every_option = union(methods.get(n).options for n in methods.names())
    reject_inapplicable(args, every_option, [o.name for o in method.options], f"method {method.name}")
    options = {o.name: getattr(args, o.name) for o in method.options if getattr(args, o.name) is not None}
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
        if get_pattern(args.pattern).fixed_density is not None:
            raise SparsecraftError(f"--sparsity does not apply to pattern {args.pattern} (its density is fixed); "
                                   "remove it")
    method, sparsity, pattern, _ = check_request(method, 0.5 if args.sparsity is None else args.sparsity,
                                                 args.pattern, options)
    check_output(args.out, args.force)
    if args.export_hf:
        check_output(args.export_hf, args.force, directory=True)
    model_path(args.model)
    texts = calibration_texts(args.calib_samples, args.seed)
    model, tokenizer = load_pretrained(args.model)
    batches = encode(tokenizer, texts, args.seq_len, by_length=True)
    sp, report = prune_model(model, batches, method, sparsity, pattern, layers=csv_list(args.layers) or None,
                             keep_dense=csv_list(args.keep_dense), progress=not args.json, **options)
    metadata = {"source_model": args.model, "seed": args.seed, "seq_len": args.seq_len, **report.to_metadata()}
    sp.save(args.out, force=args.force, model_spec=hf_spec(args.model, model), extra=metadata)
    if args.export_hf:
        export_pretrained(model, tokenizer, args.export_hf, args.force)
    rows = [{"layer": r.name, "shape": list(r.shape), "target": r.target, "sparsity": r.sparsity,
             "rel_error": r.rel_error} for r in report.layers]
    err = report.mean_rel_error
    title = (f"{method.name} ({pattern}) on {args.model}: {report.overall_sparsity:.1%} sparsity in "
             f"{report.seconds:.1f}s" + (f", mean relative layer error {err:.4f}" if err is not None else "")
             + f" -> {args.out}")
    print_rows(rows, COLUMNS, title=title, as_json=args.json,
               extra={"out": str(args.out), "export_hf": args.export_hf,
                      **{k: v for k, v in metadata.items() if k != "layers"}})
    return 0
