"""``sparsecraft eval``: how close a pruned transformers model stays to its dense original.

Prints mean cosine similarity of sentence embeddings, top-k retrieval agreement and per-layer
relative reconstruction error on the evaluation paragraphs (see ``docs/posttrain.md``).
"""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..posttrain.cli import add_eval_arguments, run_eval

    parser = subparsers.add_parser(
        "eval", help="compare a pruned transformers model with its dense original",
        description="Mean cosine similarity of sentence embeddings, top-k neighbour agreement and "
        "per-layer relative reconstruction error of a pruned model vs its dense original.",
    )
    add_eval_arguments(parser)
    parser.set_defaults(func=run_eval)
