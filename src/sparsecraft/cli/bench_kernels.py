"""``sparsecraft bench-kernels``: time the sparse kernels against torch dense and torch CSR."""
from __future__ import annotations

import argparse
import itertools
import os

import torch

from ..errors import SparsecraftError, check_sparsity
from ._common import console, csv_list, print_rows

# row key -> table header
COLUMNS = {"shape": "shape", "pattern": "pattern", "sparsity": "sparsity", "batch": "batch", "cache": "cache",
           "dense_ms": "dense ms", "kernel_ms": "ours ms", "kernel_vs_dense": "x dense",
           "kernel_vs_torch_csr": "x torch CSR", "dispatch_choice": "dispatch",
           "dispatch_vs_dense": "dispatched x dense", "bytes_vs_dense": "bytes/dense"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench-kernels`` subcommand and its options to ``subparsers``."""
    p = subparsers.add_parser(
        "bench-kernels", help="time sparse kernels vs torch dense and torch CSR (ratios, same run)",
        description="Prune random Linear weights by magnitude and time y = x W^T with sparsecraft's kernels, torch "
                    "dense and torch CSR, interleaved in one loop. Prints the ratios (higher is faster).",
        epilog="example: sparsecraft bench-kernels --shape 4096x4096 --sparsity 0.9,0.7 --batch 1,64 "
               "--pattern unstructured,4x1",
    )
    p.add_argument("--shape", default="4096x4096", help="comma list of OUTxIN weight shapes (default 4096x4096)")
    p.add_argument("--sparsity", default="0.9", help="comma list of sparsities in [0, 1) (default 0.9)")
    p.add_argument("--batch", default="1,64", help="comma list of batch sizes (default 1,64)")
    p.add_argument("--pattern", default="unstructured", help="comma list of unstructured, 2:4, 4x1, 8x1, 1x4")
    p.add_argument("--cold", action="store_true", help="evict caches before every call (default: warm)")
    p.add_argument("--rounds", type=int, default=15, help="timing rounds per workload (default 15)")
    p.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's default)")
    p.add_argument("--isa", default=None, help="force a kernel path: avx512, avx2 or portable")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


COPIES = 4  # the dense fp32 weight, its mask, our sparse format and torch's CSR, at most dense size each


def _check_fits_memory(out: int, inp: int) -> None:
    """One-line error when an ``out x inp`` workload cannot fit in this machine's memory."""
    need = COPIES * 4 * out * inp
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > total:
        raise SparsecraftError(f"--shape {out}x{inp} needs about {need / 2**30:.0f} GiB ({COPIES} copies of a "
                               f"{4 * out * inp / 2**30:.1f} GiB weight); this machine has {total / 2**30:.0f} GiB: "
                               "choose a smaller shape")


def run(args: argparse.Namespace) -> int:
    """Time every shape x pattern x sparsity x batch with :func:`sparsecraft.inference.bench.bench_layer`."""
    from .. import kernels
    from ..inference.bench import PATTERNS, CacheFlusher, LayerWorkload, bench_layer, parse_shape

    shapes = [parse_shape(s) for s in csv_list(args.shape)]
    for out, inp in shapes:
        _check_fits_memory(out, inp)
    sparsities = [check_sparsity(s, "--sparsity") for s in csv_list(args.sparsity)]
    try:
        batches = [int(b) for b in csv_list(args.batch)]
    except ValueError:
        raise SparsecraftError(f"--batch must be a comma list of positive integers, got {args.batch!r}") from None
    patterns = csv_list(args.pattern)
    for pat in patterns:
        if pat not in PATTERNS:
            raise SparsecraftError(f"unknown --pattern {pat!r}; choose from: {', '.join(PATTERNS)}")
    if not (shapes and sparsities and batches and patterns) or min(batches) < 1:
        raise SparsecraftError("--shape, --sparsity, --batch and --pattern each need at least one valid value")
    if args.rounds < 1:
        raise SparsecraftError("--rounds must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise SparsecraftError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if not kernels.available():
        raise SparsecraftError(f"native kernels unavailable ({kernels.build_error()}); run "
                               "`python -m sparsecraft.kernels.build` to see why")
    if args.isa:
        kernels.set_isa(args.isa)
    flusher = CacheFlusher() if args.cold else None
    rows = []
    combos = list(itertools.product(shapes, patterns, sparsities, batches))
    with console.status("timing") as status:
        for (out, inp), pat, sp, b in combos:
            if pat == "2:4" and sp != sparsities[0]:
                continue  # 2:4 has a fixed 50% sparsity
            status.update(f"{out}x{inp} {pat} sparsity {sp} batch {b}")
            rows.append(bench_layer(LayerWorkload(out, inp, sp, pat, b, args.cold), rounds=args.rounds,
                                    flusher=flusher))
    extra = {"isa": kernels.get_isa(), "threads": torch.get_num_threads()}
    if args.json:
        print_rows(rows, list(COLUMNS), as_json=True, extra=extra)
    else:
        shown = [{COLUMNS[k]: r.get(k, "") for k in COLUMNS} for r in rows]
        print_rows(shown, list(COLUMNS.values()),
                   title=f"y = x W^T: sparsecraft vs torch (ISA {extra['isa']}, {extra['threads']} threads; "
                         "x = times faster)")
    return 0
