"""``sparsecraft demo``: the main job, end to end on bundled data.

1. train the in-project ResNet-style CNN on scikit-learn's digits;
2. prune it several ways (criteria, allocations, patterns), fine-tune each briefly with its masks
   held fixed, and compare accuracy and sparsity;
3. train sparse from scratch at 90% (static random ERK, SET, RigL) and compare with pruning;
4. prune a real pretrained transformer (all-MiniLM-L6-v2, shipped offline) one-shot with Wanda and
   with magnitude, and gradually during a short distillation from the dense model (80%, where the
   kernels beat dense); measure how close its sentence embeddings stay to the dense
   model's, convert it to the CPU sparse kernels and measure the speedup over dense torch at
   sequence length 128.
"""
from __future__ import annotations

import argparse
import copy

import torch

from .. import prune
from ..errors import SparsecraftError
from ..timing import Stopwatch
from ._common import console, print_rows

#: stage 4: the gradual operating point (pattern, sparsity) and its distillation steps (training sequence length 64)
#: (80%: the kernels beat dense by 1.6-1.9x there; docs/distill.md: cosine 0.87 after 300 steps, wanda scores)
DISTILL_POINT, DISTILL_STEPS, DISTILL_LR = ("unstructured", 0.8), 200, 1e-3

#: (label, sparsity, pattern, criterion, allocation, keep_dense)
RECIPES = [
    ("magnitude / global", 0.9, "unstructured", "magnitude", "global", ()),
    ("magnitude / uniform", 0.9, "unstructured", "magnitude", "uniform", ()),
    ("magnitude / ERK", 0.9, "unstructured", "magnitude", "erk", ()),
    ("random / ERK", 0.9, "unstructured", "random", "erk", ()),
    ("SNIP / global", 0.9, "unstructured", "snip", "global", ()),
    ("magnitude 2:4", 0.5, "2:4", "magnitude", "global", ("first",)),
    ("magnitude block4x1", 0.8, "block4x1", "magnitude", "global", ("first", "last")),
    ("L1 filters (channel)", 0.5, "channel", "l1_norm", "uniform", ("last",)),
]


def bars(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (a finished bar leaves a blank line in a pipe or log file)."""
    return not args.json and console.is_terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train, prune several ways, train sparse, and measure the CPU speedup",
        description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=6, help="dense training epochs (default 6)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="masked fine-tuning epochs per recipe (default 2)")
    p.add_argument("--sparse-epochs", type=int, default=12, help="epochs of sparse training from scratch (default 12)")
    p.add_argument("--skip-transformer", action="store_true", help="skip stage 4 (the pretrained transformer)")
    p.add_argument("--distill-steps", type=int, default=DISTILL_STEPS,
                   help=f"steps of the gradual pruning + distillation in stage 4 (default {DISTILL_STEPS}; 0 skips it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..models import evaluate, model_for_data, train_classifier

    for flag in ("epochs", "finetune_epochs", "sparse_epochs"):
        if getattr(args, flag) < 1:
            raise SparsecraftError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.distill_steps < 0:
        raise SparsecraftError(f"--distill-steps must be >= 0, got {args.distill_steps}")
    torch.manual_seed(args.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the digits CNN is tiny: one thread is fastest and immune to busy cores
    data = load_dataset("digits", seed=args.seed)
    say = (lambda *_: None) if args.json else console.print
    say(f"[bold]1. train[/] a ResNet-style CNN on digits ({len(data.train_x)} train / {len(data.test_x)} test images)")
    dense = model_for_data("cnn", data)
    watch = Stopwatch()
    train_classifier(dense, data, epochs=args.epochs, seed=args.seed, progress=bars(args))
    dense_acc = evaluate(dense, data.test_x, data.test_y)
    rows = [{"method": "dense", "sparsity": 0.0, "pattern": "-", "acc_oneshot": dense_acc,
             "acc_finetuned": dense_acc}]
    say(f"   dense test accuracy {dense_acc:.4f} ({watch.seconds:.1f} s)")

    say(f"[bold]2. prune[/] {len(RECIPES)} ways, then fine-tune {args.finetune_epochs} epochs with masks held fixed")
    for label, sparsity, pattern, criterion, allocation, keep in RECIPES:
        model = copy.deepcopy(dense)
        sp = prune(model, sparsity, pattern, criterion, allocation, keep_dense=keep,
                   calib=(data.train_x[:256], data.train_y[:256]))
        oneshot = evaluate(model, data.test_x, data.test_y)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        sp.attach(opt)
        train_classifier(model, data, epochs=args.finetune_epochs, seed=args.seed, optimizer=opt, progress=False)
        rows.append({"method": label, "sparsity": sp.sparsity(), "pattern": pattern,
                     "acc_oneshot": oneshot, "acc_finetuned": evaluate(model, data.test_x, data.test_y)})
    columns = ("method", "pattern", "sparsity", "acc_oneshot", "acc_finetuned")
    if not args.json:
        print_rows(rows, columns, title="digits CNN: accuracy after pruning")

    say(f"[bold]3. train sparse from scratch[/] at 90% (ERK), {args.sparse_epochs} epochs each")
    sparse_rows = sparse_training(data, args)
    if not args.json:
        print_rows(sparse_rows, ("method", "sparsity", "accuracy"),
                   title="digits CNN: sparse training from scratch")
    transformer_rows: list[dict] = []
    torch.set_num_threads(threads)
    if not args.skip_transformer:
        say("[bold]4. a pretrained transformer[/]: all-MiniLM-L6-v2, pruned, converted to sparse kernels")
        transformer_rows = transformer_speedup(args, say)
        if not args.json:
            print_rows(transformer_rows, ("method", "pattern", "sparsity", "cosine", "knn10", "speedup"),
                       title="all-MiniLM-L6-v2, sequence length 128, batch 1")
            say("   cosine/knn10: agreement of sentence embeddings with the dense model on held-out text "
                "(1 = identical); speedup: dense ms / converted ms (--json also gives the weight bytes). "
                "One-shot pruning loses quality at the sparsities that run faster; pruning gradually while "
                "distilling keeps it (longer runs: `sparsecraft distill`, docs/distill.md).")
    if args.json:
        import json
        import sys

        json.dump({"pruning": rows, "sparse_training": sparse_rows, "transformer": transformer_rows},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


def sparse_training(data, args: argparse.Namespace) -> list[dict]:
    """Dense, static random-ERK, SET and RigL runs of the CNN from the same initialisation."""
    from ..models import evaluate, model_for_data
    from ..training import SparsityConfig, fit, make_updater

    torch.manual_seed(args.seed + 1)
    init = model_for_data("cnn", data)
    rows = []
    for method in ("dense", "static", "set", "rigl"):
        model = copy.deepcopy(init)
        extra = {"update_every": 25} if method in ("set", "rigl") else {}
        updater = make_updater(method, SparsityConfig(sparsity=0.9, allocation="erk", keep_dense=("first",)),
                               seed=args.seed, **extra)
        fit(model, data, updater, epochs=args.sparse_epochs, lr=3e-3, seed=args.seed, progress=bars(args))
        zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1)
        total = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1)
        rows.append({"method": {"static": "static random (ERK)"}.get(method, method), "sparsity": zeros / total,
                     "accuracy": evaluate(model, data.test_x, data.test_y)})
    return rows


def transformer_speedup(args: argparse.Namespace, say) -> list[dict]:
    """MiniLM one-shot (Wanda 50% and at the gradual point, magnitude 90%) and gradual + distillation at
    :data:`DISTILL_POINT`: embeddings vs dense, and the converted model timed against dense."""
    from ..models.hf import load_pretrained
    from ..posttrain import prune_model
    from ..posttrain.hf import calibration_texts, encode, eval_texts
    from ..posttrain.metrics import EmbeddingAgreement, speed_vs_dense

    dense, tokenizer = load_pretrained("minilm")
    calib = encode(tokenizer, calibration_texts(32, args.seed), 128, by_length=True)
    probe = EmbeddingAgreement(dense, encode(tokenizer, eval_texts(96, args.seed), 128))
    sample = tokenizer(["sparse " * 126], truncation=True, max_length=128, return_tensors="pt")
    rows = []

    def measure(label: str, pattern: str, sparsity: float, model: torch.nn.Module) -> None:
        rows.append({"method": label, "pattern": pattern, "sparsity": sparsity, **probe(model),
                     **speed_vs_dense(dense, model, sample)})
        say(f"   {label} {pattern} {sparsity:.0%}: cosine {rows[-1]['cosine']:.3f}, "
            f"{rows[-1]['speedup']:.2f}x dense")

    for method, sparsity in (("wanda", 0.5), ("wanda", DISTILL_POINT[1]), ("magnitude", 0.9)):
        model = copy.deepcopy(dense)
        prune_model(model, calib, method, sparsity, "unstructured", progress=bars(args))[0].finalize()
        measure(method, "unstructured", sparsity, model)
    if args.distill_steps:
        pattern, sparsity = DISTILL_POINT
        say(f"   gradual pruning to {pattern} {sparsity:.0%} while distilling from the dense model")
        measure(f"gradual {args.distill_steps} steps", pattern, sparsity, gradual_model(dense, tokenizer, args))
    return rows


def gradual_model(dense: torch.nn.Module, tokenizer, args: argparse.Namespace) -> torch.nn.Module:
    """A copy of ``dense`` pruned to :data:`DISTILL_POINT` gradually while distilling from it (seq 64)."""
    from ..data import load_text
    from ..posttrain.gradual import GradualConfig, GradualDistiller
    from ..posttrain.hf import encode
    from ..posttrain.longrun import run_to_end

    pattern, sparsity = DISTILL_POINT
    train = encode(tokenizer, load_text(args.seed).train, 64, batch_size=16, by_length=True)
    config = GradualConfig(sparsity=sparsity, pattern=pattern, steps=args.distill_steps, lr=DISTILL_LR, seed=args.seed)
    distiller = GradualDistiller(copy.deepcopy(dense), dense, train, config)
    run_to_end(distiller, progress=bars(args))
    return distiller.sparsifier.finalize()
