"""``sparsecraft distill``: gradual pruning of a pretrained transformer while distilling from its dense self.

Sparsity rises on a cubic schedule over a pruning window, then the masks stay fixed for a
recovery phase; the loss is SquareHead (per-layer hidden states) plus the output, against the
dense teacher run on the fly on unlabelled text (pydoc paragraphs, or --text FILE). The result is
a sparsecraft checkpoint like every pruning command's (`eval --checkpoint`, `report`,
`convert --checkpoint` and `finetune` read it; --export-hf DIR also writes a transformers
directory). Long runs survive: the state is saved every --save-every steps and on Ctrl-C/SIGTERM,
and --resume continues exactly where it stopped.
"""
from __future__ import annotations

import argparse
import sys

from ..options import union
from ..posttrain.saliency import SALIENCIES
from ._common import add_option_flags, csv_list, print_rows, reject_inapplicable

COLUMNS = ("step", "sparsity", "loss", "lr", "cosine", "knn10", "train_cosine")
EXAMPLE = """example: sparsecraft distill --model minilm --sparsity 0.8 --pattern block4x1 --criterion magnitude \\
             --steps 2000 --out minilm-b41-80.safetensors
then: sparsecraft eval --checkpoint minilm-b41-80.safetensors
      sparsecraft convert --checkpoint minilm-b41-80.safetensors --out minilm-b41-80.sparse.safetensors"""
CRITERION_OPTIONS = union(c.options for _, c in SALIENCIES.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    help_line = "gradual pruning during distillation of a pretrained transformer (long runs, --resume)"
    p = subparsers.add_parser("distill", help=help_line, description=__doc__.split("\n", 1)[1], epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm",
                   help="'minilm' (offline all-MiniLM-L6-v2) or a transformers model directory")
    p.add_argument("--sparsity", type=float, default=None,
                   help="final fraction of zeros in [0, 1) (default 0.8; not with N:M, whose density is N/M)")
    p.add_argument("--pattern", default="unstructured", help="unstructured (default), N:M such as 2:4, or block4x1")
    p.add_argument("--criterion", default="wanda",
                   help=f"one of: {', '.join(SALIENCIES.names())} (default wanda)")
    p.add_argument("--allocation", default="uniform", choices=("global", "uniform"),
                   help="the same sparsity in every layer (uniform, default) or one threshold over all layers")
    p.add_argument("--steps", type=int, default=2000, help="total optimizer steps (default 2000)")
    p.add_argument("--initial-sparsity", type=float, default=0.0, help="sparsity at --prune-start (default 0)")
    p.add_argument("--prune-start", type=int, default=0, help="first step of the pruning window (default 0)")
    p.add_argument("--prune-end", type=int, default=None,
                   help="step reaching the final sparsity (default 2/3 of --steps); then masks are fixed")
    p.add_argument("--prune-every", type=int, default=None, help="steps between pruning events (default: 25 events)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--lr-schedule", default="linear", choices=("linear", "cyclic"),
                   help="linear (default): warm-up, then one decay to 0; cyclic (GMP*): back to the peak at every "
                        "pruning event, linear decay to --cycle-floor x peak before the next, then to 0 over the "
                        "recovery")
    p.add_argument("--cycle-floor", type=float, default=0.1,
                   help="with --lr-schedule cyclic: fraction of the peak rate at the end of each cycle (default 0.1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="linear warm-up steps (default 5%% of --steps with --lr-schedule linear, 0 with cyclic)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    p.add_argument("--loss", default="squarehead", choices=("squarehead", "output"),
                   help="squarehead: per-layer hidden states + output (default); output: output only")
    p.add_argument("--dropout", action="store_true",
                   help="train the student with its dropout on (default off: it imitates the deterministic teacher)")
    p.add_argument("--batch-size", type=int, default=16, help="paragraphs per step (default 16)")
    p.add_argument("--seq-len", type=int, default=128, help="max tokens per paragraph (default 128)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="train on this UTF-8 file, one paragraph per line (default: the pydoc training paragraphs)")
    p.add_argument("--layers", default="", help="comma-separated layers/globs inside the blocks to prune (default all)")
    p.add_argument("--keep-dense", default="", help="comma-separated layers/globs inside the blocks to leave dense")
    p.add_argument("--eval-every", type=int, default=100,
                   help="steps between held-out evaluations (cosine, knn10) logged as JSON lines (default 100)")
    p.add_argument("--eval-samples", type=int, default=0, help="held-out paragraphs evaluated (0 = all)")
    p.add_argument("--train-probe", type=int, default=None, metavar="N",
                   help="also log cosine/knn10 on N training paragraphs (train_cosine, train_knn10), to see how "
                        "much of the fit is memorised (default: as many as held-out paragraphs; 0 = off)")
    p.add_argument("--save-every", type=int, default=100, help="steps between saved run states (default 100)")
    p.add_argument("--state", default=None, help="run state file for --resume (default OUT.state)")
    p.add_argument("--log", default=None, help="JSONL metrics log (default OUT.metrics.jsonl)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also plot cosine/knn10 and sparsity against steps")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --state, exactly")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order, dropout and paragraph split")
    add_option_flags(p, CRITERION_OPTIONS, "criterion options")
    p.add_argument("--out", required=True, help="output sparsecraft checkpoint (.safetensors)")
    p.add_argument("--export-hf", default=None, metavar="DIR", help="also write a transformers model directory")
    p.add_argument("--force", action="store_true", help="overwrite --out / --export-hf / an old run state")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    """The run's :class:`GradualConfig`, checked; one-line errors name the flags."""
    from ..errors import SparsecraftError, check_positive_int, check_sparsity
    from ..patterns import get_pattern
    from ..posttrain.gradual import GradualConfig

    chosen = SALIENCIES.get(args.criterion)
    reject_inapplicable(args, CRITERION_OPTIONS, [o.name for o in chosen.options], f"criterion {args.criterion}")
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
        if get_pattern(args.pattern).fixed_density is not None:
            raise SparsecraftError(f"--sparsity does not apply to pattern {args.pattern} (its density is fixed); "
                                   "remove it")
    for flag in ("steps", "batch_size", "eval_every", "save_every"):
        check_positive_int(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.train_probe is not None:
        check_positive_int(args.train_probe, "--train-probe", minimum=0)
    check_positive_int(args.seq_len, "--seq-len", minimum=4)
    if not 0 < args.cycle_floor <= 1:
        raise SparsecraftError(f"--cycle-floor must be in (0, 1] (a fraction of the peak rate), got {args.cycle_floor}")
    options = {o.name: getattr(args, o.name) for o in chosen.options if getattr(args, o.name) is not None}
    config = GradualConfig(
        sparsity=0.8 if args.sparsity is None else args.sparsity, pattern=args.pattern, criterion=args.criterion,
        allocation=args.allocation, steps=args.steps, initial_sparsity=args.initial_sparsity,
        prune_start=args.prune_start, prune_end=args.prune_end, prune_every=args.prune_every, lr=args.lr,
        lr_schedule=args.lr_schedule, cycle_floor=args.cycle_floor, warmup=args.warmup,
        weight_decay=args.weight_decay, loss=args.loss, seed=args.seed, dropout=args.dropout,
        criterion_options=options)
    return config.resolved()


def run(args: argparse.Namespace) -> int:
    """Validate everything, then train (or resume) to the last step and write the checkpoint."""
    from pathlib import Path

    from ..errors import SparsecraftError
    from ..io import check_output
    from ..models.hf import export_pretrained, hf_spec, load_pretrained, model_path
    from ..posttrain.gradual import GradualDistiller
    from ..posttrain.hf import encode, eval_texts, text_file_paragraphs
    from ..posttrain.longrun import Interrupted, MetricsLog, load_state, plot_metrics, read_metrics, run_to_end
    from ..posttrain.metrics import EmbeddingAgreement, probes

    config = _config(args)
    check_output(args.out, args.force)
    if args.export_hf:
        check_output(args.export_hf, args.force)
    state_path = Path(args.state or f"{args.out}.state")
    log_path = Path(args.log or f"{args.out}.metrics.jsonl")
    for extra in (state_path, log_path, *([Path(args.plot)] if args.plot else [])):
        if not extra.parent.is_dir():
            raise SparsecraftError(f"directory {extra.parent} does not exist; create it first")
    state = load_state(state_path) if args.resume else None
    if state is None and state_path.exists() and not args.force:
        raise SparsecraftError(f"a saved run is at {state_path}: continue it with --resume, or pass --force to "
                               "start over")
    model_path(args.model)
    from ..data import load_text

    splits = load_text(args.seed)
    held_out = eval_texts(args.eval_samples, args.seed)
    train = text_file_paragraphs(args.text, exclude=splits.eval) if args.text else splits.train
    settings = {"model": args.model, "text": str(Path(args.text).resolve()) if args.text else "pydoc",
                "texts": len(train), "batch_size": args.batch_size, "seq_len": args.seq_len,
                "layers": args.layers, "keep_dense": args.keep_dense}
    if state is not None and state.get("extra", {}).get("settings") != settings:
        raise SparsecraftError(f"{state_path} was saved with other data or model settings "
                               f"({state.get('extra', {}).get('settings')}); resume with the same ones")
    student, tokenizer = load_pretrained(args.model)
    teacher, _ = load_pretrained(args.model)
    batches = encode(tokenizer, train, args.seq_len, batch_size=args.batch_size, by_length=True)
    distiller = GradualDistiller(student, teacher, batches, config, layers=csv_list(args.layers) or None,
                                 keep_dense=csv_list(args.keep_dense))
    if state is not None:
        distiller.load_state_dict(state)
    agreements = [EmbeddingAgreement(teacher, encode(tokenizer, held_out, args.seq_len, by_length=True))]
    seen = min(len(train), len(held_out) if args.train_probe is None else args.train_probe)
    if seen:
        agreements.append(EmbeddingAgreement(teacher, encode(tokenizer, train[:seen], args.seq_len, by_length=True),
                                             prefix="train_"))
    log = MetricsLog(log_path, resume_step=distiller.step if state is not None else None)
    try:
        run_to_end(distiller, state_path=state_path, save_every=args.save_every, evaluate=probes(*agreements),
                   eval_every=args.eval_every, log=log, progress=not args.json,
                   state_extra={"settings": settings})
    except Interrupted as stop:
        print(f"sparsecraft distill: {stop}", file=sys.stderr)
        return 130
    rows = read_metrics(log_path)
    final = rows[-1]
    metadata = {"method": f"gradual-{config.criterion}", "source_model": args.model, "distill": config.to_dict(),
                "settings": settings, "cosine": final["cosine"], "knn10": final["knn10"],
                "overall_sparsity": distiller.sparsity()}
    distiller.sparsifier.save(args.out, force=args.force, model_spec=hf_spec(args.model, student), extra=metadata)
    if args.export_hf:
        export_pretrained(student, tokenizer, args.export_hf, args.force)
    if args.plot:
        plot_metrics(rows, args.plot, title=f"{args.model} {config.pattern} {config.criterion}")
    state_path.unlink(missing_ok=True)
    title = (f"{config.criterion} {config.pattern} on {args.model}: {distiller.sparsity():.1%} sparsity after "
             f"{config.steps} steps, cosine {final['cosine']:.4f}, knn10 {final['knn10']:.3f} -> {args.out}")
    print_rows(rows, COLUMNS, title=title, as_json=args.json,
               extra={"out": str(args.out), "log": str(log_path), "export_hf": args.export_hf, **metadata})
    return 0
