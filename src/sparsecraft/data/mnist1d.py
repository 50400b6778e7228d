"""MNIST-1D (Greydanus & Steinbach, 2020/2024), generated locally with ``mnist1d.data.make_dataset``.

``mnist1d.data.get_dataset`` would download a pickle; we never call it. ``make_dataset`` reseeds
Python's and numpy's global random generators, so we save and restore their state around it.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import check_positive_int
from ..io import atomic_path
from .base import DataSplits, seeded_subset, standardize

SEQ_LEN = 40


def default_cache_dir() -> Path:
    """Where generated data is cached.

    Returns
    -------
    Path
        ``$SPARSECRAFT_CACHE`` or ``~/.cache/sparsecraft``.
    """
    return Path(os.environ.get("SPARSECRAFT_CACHE", Path.home() / ".cache" / "sparsecraft"))


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}


def _cached(num_samples: int, seed: int, cache_dir: Path) -> dict[str, np.ndarray]:
    path = cache_dir / "mnist1d" / f"n{num_samples}_seed{seed}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: regenerate and overwrite below
    arrays = _generate(num_samples, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return arrays


def load_mnist1d(
    seed: int = 0,
    num_samples: int = 5000,
    calib_size: int = 128,
    cache: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> DataSplits:
    """Generate MNIST-1D with mnist1d's fixed 80/20 split.

    Signals are standardized with the train set's scalar mean and std.

    Parameters
    ----------
    seed : int, default=0
        Seeds the generator (the library's own default is 42).
    num_samples : int, default=5000
        Total examples (>= 20; a multiple of 10 is best: mnist1d makes ``num_samples // 10`` per
        class); lower it for fast tests.
    calib_size : int, default=128
        Training signals in ``calib_x``.
    cache : bool, default=False
        Store the generated arrays under ``cache_dir`` and reuse them.
    cache_dir : str or PathLike, optional
        Default :func:`default_cache_dir`.

    Returns
    -------
    DataSplits
        10 classes, inputs (N, 1, 40) float32.
    """
    check_positive_int(num_samples, "num_samples", minimum=20)
    if cache:
        arrays = _cached(num_samples, seed, Path(cache_dir) if cache_dir else default_cache_dir())
    else:
        arrays = _generate(num_samples, seed)
    train_x = torch.from_numpy(arrays["x"].astype(np.float32))[:, None, :]
    test_x = torch.from_numpy(arrays["x_test"].astype(np.float32))[:, None, :]
    train_x, test_x = standardize(train_x, test_x)
    return DataSplits(
        name="mnist1d",
        train_x=train_x,
        train_y=torch.from_numpy(arrays["y"].astype(np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
        input_shape=(1, SEQ_LEN),
        calib_x=seeded_subset(train_x, calib_size, seed),
    )
