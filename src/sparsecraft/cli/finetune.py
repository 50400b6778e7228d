"""``sparsecraft finetune``: fine-tune any sparsecraft checkpoint with its masks held fixed.

One command for every pruned model, whatever pruned it (``prune``, ``train`` or ``posttrain``):
the checkpoint's masks go into a :class:`sparsecraft.Sparsifier` attached to the optimizer, so
pruned weights stay exactly zero. An in-project model trains on its own dataset (cross-entropy,
``--epochs``); a transformers model distils from its dense source model on the training
paragraphs (SquareHead or output distillation, ``--steps``).
"""
from __future__ import annotations

import argparse

from ._common import print_rows
from .report import COLUMNS

#: options that apply to one kind of model only: flag name -> kind
KIND_OF_OPTION = {"epochs": "in-project", "batch_size": "in-project", "steps": "transformers",
                  "loss": "transformers", "seq_len": "transformers"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a pruned checkpoint with its masks fixed (any model, any pruning)",
        description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  sparsecraft finetune --checkpoint cnn90.safetensors --epochs 2 --out cnn90-ft.safetensors\n"
               "  sparsecraft finetune --checkpoint minilm24.safetensors --steps 100 --loss squarehead "
               "--out minilm24-ft.safetensors",
    )
    p.add_argument("--checkpoint", required=True, help="sparsecraft checkpoint (weights + masks)")
    p.add_argument("--out", required=True, help="output sparsecraft checkpoint (.safetensors)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate (default 1e-3 in-project, 1e-4 transformers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order (and the paragraph split)")
    group = p.add_argument_group("in-project models")
    group.add_argument("--epochs", type=int, default=None, help="epochs on the model's dataset (default 2)")
    group.add_argument("--batch-size", type=int, default=None, help="batch size (default 64)")
    group = p.add_argument_group("transformers models")
    group.add_argument("--steps", type=int, default=None, help="distillation steps (default 100)")
    group.add_argument("--loss", default=None, help="squarehead (default) or output distillation")
    group.add_argument("--seq-len", type=int, default=None, help="max tokens per training paragraph (default 128)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_checkpoint
    from ..errors import SparsecraftError, check_learning_rate, check_positive_int
    from ..io import check_output
    from ..models.hf import HF
    from ..sparsifier import Sparsifier

    check_output(args.out, args.force)
    ckpt = read_checkpoint(args.checkpoint)
    if not ckpt.masks:
        raise SparsecraftError(f"{args.checkpoint} holds no masks; prune it first (sparsecraft prune / posttrain)")
    kind = "transformers" if (ckpt.model_spec or {}).get("name") == HF else "in-project"
    for name, applies in KIND_OF_OPTION.items():
        if getattr(args, name) is not None and applies != kind:
            raise SparsecraftError(f"--{name.replace('_', '-')} applies to {applies} models; {args.checkpoint} "
                                   f"holds a {kind} model; remove it")
    if args.lr is not None:
        check_learning_rate(args.lr, "--lr")
    for name in ("epochs", "batch_size", "steps", "seq_len"):
        if getattr(args, name) is not None:
            check_positive_int(getattr(args, name), f"--{name.replace('_', '-')}")
    sp = Sparsifier.load(str(args.checkpoint), ckpt.build_model())
    summary = (_distill(args, sp, ckpt.model_spec) if kind == "transformers"
               else _train(args, sp, ckpt.model_spec))
    sp.save(args.out, force=args.force, model_spec=ckpt.model_spec,
            extra={**ckpt.extra, "finetune": {k: v for k, v in summary.items() if k != "history"}})
    print_rows(sp.report(), COLUMNS, title=f"fine-tuned {args.checkpoint} -> {args.out}", as_json=args.json,
               extra={"out": str(args.out), **summary})
    return 0


def _train(args: argparse.Namespace, sp, spec: dict) -> dict:
    """Cross-entropy fine-tuning of an in-project model on the dataset it was trained on."""
    import torch

    from ..data import load_dataset
    from ..errors import SparsecraftError
    from ..models import evaluate
    from ..training import fit

    name = (spec.get("data") or {}).get("name")
    if name is None:
        raise SparsecraftError(f"{args.checkpoint} does not record its dataset; fine-tune it from Python")
    data = load_dataset(name, seed=args.seed)
    before = evaluate(sp.model, data.test_x, data.test_y)
    opt = torch.optim.AdamW(sp.model.parameters(), lr=args.lr or 1e-3)
    sp.attach(opt)
    result = fit(sp.model, data, epochs=args.epochs or 2, batch_size=args.batch_size or 64, optimizer=opt,
                 seed=args.seed, progress=not args.json)
    return {"dataset": name, "epochs": args.epochs or 2, "accuracy_before": before,
            "accuracy_after": evaluate(sp.model, data.test_x, data.test_y), "final_train_loss": result.epoch_loss[-1]}


def _distill(args: argparse.Namespace, sp, spec: dict) -> dict:
    """Distillation of a pruned transformers model from its dense source on the training paragraphs."""
    from ..data import load_text
    from ..models.hf import load_pretrained
    from ..posttrain import DISTILL_LOSSES, distill
    from ..posttrain.hf import encode

    loss = args.loss or "squarehead"
    DISTILL_LOSSES.get(loss)
    teacher, tokenizer = load_pretrained(spec["source"])
    batches = encode(tokenizer, load_text(args.seed).train, args.seq_len or 128, batch_size=16)
    history = distill(sp, teacher, batches, loss, args.steps or 100, lr=args.lr or 1e-4, seed=args.seed,
                      progress=not args.json)
    tail = history[-10:]
    return {"teacher": spec["source"], "loss": loss, "steps": len(history), "loss_first": history[0],
            "loss_last": sum(tail) / len(tail), "history": history}
