"""``sparsecraft eval``: how close a pruned transformers model stays to its dense original.

Prints mean cosine similarity of sentence embeddings, top-k retrieval agreement and per-layer
relative reconstruction error on the evaluation paragraphs (see ``docs/posttrain.md``).
"""
from __future__ import annotations

import argparse

from ._common import print_rows


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="compare a pruned transformers model with its dense original",
        description="Mean cosine similarity of sentence embeddings, top-k neighbour agreement and "
                    "per-layer relative reconstruction error of a pruned model vs its dense original, on "
                    "held-out paragraphs (disjoint from the calibration ones).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint",
                     help="sparsecraft checkpoint of a transformers model (from `sparsecraft posttrain`)")
    src.add_argument("--hf", help="a transformers model directory (e.g. written by `posttrain --export-hf`)")
    p.add_argument("--dense", default=None,
                   help="dense reference: 'minilm' or a directory (default: the checkpoint's source model)")
    p.add_argument("--eval-samples", type=int, default=0, help="eval paragraphs to use (0 = all)")
    p.add_argument("--seq-len", type=int, default=128, help="max tokens per paragraph")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/eval paragraph split")
    p.add_argument("-k", type=int, default=10, help="neighbours compared in the retrieval agreement")
    p.add_argument("--layers", action="store_true", help="also print every layer's error")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def load_sparse(args: argparse.Namespace):
    """``(model, tokenizer, dense source)`` of ``--checkpoint`` or ``--hf``."""
    from ..checkpoint import read_checkpoint
    from ..errors import SparsecraftError
    from ..models.hf import HF, load_pretrained, load_tokenizer
    from ..sparsifier import Sparsifier

    if args.hf:
        if args.dense is None:
            raise SparsecraftError(f"--hf {args.hf} does not record its dense model; pass --dense minilm or a path")
        model, tokenizer = load_pretrained(args.hf)
        return model, tokenizer, args.dense
    ckpt = read_checkpoint(args.checkpoint)
    spec = ckpt.model_spec or {}
    if spec.get("name") != HF:
        raise SparsecraftError(f"{args.checkpoint} holds an in-project model, not a transformers model; "
                               "eval compares transformers models (use `sparsecraft report` for sparsity)")
    model = Sparsifier.load(args.checkpoint, ckpt.build_model()).finalize()
    dense = args.dense or spec["source"]
    return model.eval(), load_tokenizer(dense), dense


def check_k(k: int, n_texts: int, eval_samples: int, available: int) -> None:
    """One line unless each of the ``n_texts`` eval texts has ``k`` others to be its neighbours.

    Parameters
    ----------
    k : int
        ``-k``.
    n_texts : int
        Eval texts that ``--eval-samples`` gives.
    eval_samples : int
        ``--eval-samples`` (0 = all).
    available : int
        Eval texts there are.
    """
    from ..errors import SparsecraftError

    if k < 1:
        raise SparsecraftError(f"-k must be an integer >= 1, got {k}")
    if k >= n_texts:
        fixes = [f"--eval-samples {k + 1} or more (0 = all {available})"] if k < available else []
        fixes += [f"-k {n_texts - 1} or less"] if n_texts > 1 else []
        raise SparsecraftError(f"-k {k} needs {k + 1} eval texts (each is compared with its {k} nearest others), "
                               f"but --eval-samples {eval_samples} gives {n_texts}: use {' or '.join(fixes)}")


def run(args: argparse.Namespace) -> int:
    """Compare the sparse model with its dense original on the eval paragraphs."""
    from ..models.hf import load_pretrained
    from ..posttrain.hf import encode, eval_texts
    from ..posttrain.metrics import layer_errors, sentence_embeddings, summarize

    texts = eval_texts(args.eval_samples, args.seed)
    check_k(args.k, len(texts), args.eval_samples, len(eval_texts(0, args.seed)))
    sparse, tokenizer, dense_source = load_sparse(args)
    dense, _ = load_pretrained(dense_source)
    batches = encode(tokenizer, texts, args.seq_len)
    errors = layer_errors(dense, sparse, batches)
    modules = dict(sparse.named_modules())
    zeros = sum(int((modules[n].weight == 0).sum()) for n in errors)
    total = sum(modules[n].weight.numel() for n in errors)
    result = {"model": str(args.checkpoint or args.hf), "dense": dense_source,
              "eval_texts": sum(len(b["input_ids"]) for b in batches), "sparsity": zeros / max(total, 1),
              **summarize(sentence_embeddings(dense, batches), sentence_embeddings(sparse, batches), errors, args.k)}
    if args.layers or args.json:
        result["layers"] = errors
    rows = [{"metric": k, "value": v} for k, v in result.items() if k != "layers"]
    rows += [{"metric": f"error {n}", "value": e} for n, e in (result.get("layers") or {}).items()]
    if args.json:
        import json
        import sys

        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_rows(rows, ("metric", "value"), title=f"{result['model']} vs {dense_source}")
    return 0
