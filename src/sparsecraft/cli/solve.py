"""``sparsecraft solve``: sparse recovery of y ~= A x from a .npz file (Lasso, OMP, IHT, l0, CEL0, SBL)."""
from __future__ import annotations

import argparse
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import SparsecraftError
from ..io import atomic_path, check_output
from ._common import print_rows

METHODS = ("lasso", "ista", "omp", "iht", "l0", "cel0", "sbl")
COLUMNS = ("target", "method", "nonzeros", "rel_residual", "seconds")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``solve`` subcommand and its options.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``sparsecraft`` command's subcommands.
    """
    p = subparsers.add_parser(
        "solve", help="sparse recovery of y ~= A x from a .npz file",
        description="Recover sparse x from y ~= A x. FILE.npz holds A (n, d) and y (n,) or (n, t) "
                    "(one column per target). Lasso/ista use --alpha (scikit-learn scaling), omp/iht "
                    "--k non-zeros, l0/cel0 --lam, sbl learns everything. No intercept is fitted.",
    )
    p.add_argument("--data", required=True, help=".npz file with arrays A and y")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--k", type=int, help="non-zeros per target (omp, iht)")
    p.add_argument("--alpha", type=float, help="l1 weight, 1/(2n)||y - Ax||^2 + alpha ||x||_1 (lasso, ista)")
    p.add_argument("--lam", type=float, help="penalty weight, 1/2||y - Ax||^2 + lam R(x) (l0, cel0)")
    p.add_argument("--out", help="write x (d,) or (d, t) as array 'x' to this .npz")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(func=run)


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "not found"
        raise SparsecraftError(f"--data {file} {what}; give an .npz file with arrays A and y")
    try:
        data = np.load(file, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise SparsecraftError(f"--data {file} holds one array (.npy); save A and y with np.savez")
        with data:
            missing = [k for k in ("A", "y") if k not in data.files]
            if missing:
                have = ", ".join(data.files) or "none"
                raise SparsecraftError(f"--data {file} lacks array(s) {', '.join(missing)}; it has: {have}")
            A, y = np.asarray(data["A"]), np.asarray(data["y"])
    except SparsecraftError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120] or type(err).__name__
        raise SparsecraftError(f"--data {file} is not a readable .npz file ({reason}); it is corrupt, "
                               "truncated or of another format") from None
    _check_problem(file, A, y)
    return A, y


def _check_problem(file: Path, A: np.ndarray, y: np.ndarray) -> None:
    """One-line errors for arrays that do not make a real problem y ~= A x."""
    for name, arr in (("A", A), ("y", y)):
        if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
            raise SparsecraftError(f"--data {file}: {name} has dtype {arr.dtype}; give real numbers")
    if A.ndim != 2 or 0 in A.shape:
        raise SparsecraftError(f"--data {file}: A must be a non-empty 2-D array (n, d), got shape {A.shape}")
    if y.ndim not in (1, 2) or len(y) != A.shape[0]:
        raise SparsecraftError(f"--data {file}: y must have shape ({A.shape[0]},) or ({A.shape[0]}, t) to match "
                               f"A {A.shape}, got {y.shape}")


def _solve(method: str, A: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    from ..coding import IHT, OMP, SBL, Lasso, sparse_encode

    def need(name: str) -> float:
        value = getattr(args, name)
        if value is None:
            raise SparsecraftError(f"--method {method} needs --{name}")
        return value

    if method in ("lasso", "ista"):
        est = Lasso(alpha=need("alpha"), solver="fista" if method == "lasso" else "ista", fit_intercept=False)
        return est.fit(A, y).coef_.T
    if method in ("omp", "iht"):
        k = int(need("k"))
        if not 1 <= k <= min(A.shape):
            raise SparsecraftError(f"--k {k} must lie in [1, {min(A.shape)}] (rows and columns of A)")
        cls = OMP if method == "omp" else IHT
        return cls(n_nonzero_coefs=k, fit_intercept=False).fit(A, y).coef_.T
    if method in ("l0", "cel0"):
        Y = y.reshape(len(y), -1)
        codes = sparse_encode(Y.T, A.T, method, lam=need("lam"), max_iter=5000).T
        return codes[:, 0] if y.ndim == 1 else codes
    if y.ndim != 1:
        return np.column_stack([SBL().fit(A, col).coef_ for col in y.T])
    return SBL().fit(A, y).coef_


def run(args: argparse.Namespace) -> int:
    """Run ``sparsecraft solve`` (exit codes: see :mod:`sparsecraft.cli`)."""
    if args.out:
        check_output(args.out, args.force)
    A, y = _load(args.data)
    t0 = time.perf_counter()
    x = _solve(args.method, A, y, args)
    seconds = time.perf_counter() - t0
    X, Y = x.reshape(A.shape[1], -1), y.reshape(len(y), -1)
    res = np.linalg.norm(A @ X - Y, axis=0) / np.maximum(np.linalg.norm(Y, axis=0), 1e-300)
    rows = [{"target": j, "method": args.method, "nonzeros": int(np.count_nonzero(X[:, j])),
             "rel_residual": float(res[j]), "seconds": seconds} for j in range(X.shape[1])]
    if args.out:
        with atomic_path(args.out, args.force) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x)
    print_rows(rows, COLUMNS, title=f"sparse recovery of {args.data}", as_json=args.json,
               extra={"data": args.data, "method": args.method, "out": args.out})
    return 0
