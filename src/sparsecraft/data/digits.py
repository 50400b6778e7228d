"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), no download needed."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SparsecraftError
from .base import DataSplits, seeded_subset, standardize


def load_digits(seed: int = 0, test_fraction: float = 0.2, calib_size: int = 128) -> DataSplits:
    """Load digits as float32 images ``(N, 1, 8, 8)`` with a stratified train/test split.

    The split is :func:`sklearn.model_selection.train_test_split` with ``stratify=y`` and
    ``random_state=seed``; pixels are standardized with the train set's scalar mean and std.

    Parameters
    ----------
    seed : int, default=0
    test_fraction : float, default=0.2
        Share of the 1797 images in the test set, in (0, 1).
    calib_size : int, default=128
        Training images in ``calib_x``.

    Returns
    -------
    DataSplits
        10 classes, inputs (N, 1, 8, 8) float32.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise SparsecraftError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train_x, test_x = standardize(torch.from_numpy(x_tr), torch.from_numpy(x_te))
    return DataSplits(
        name="digits",
        train_x=train_x,
        train_y=torch.from_numpy(y_tr),
        test_x=test_x,
        test_y=torch.from_numpy(y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        calib_x=seeded_subset(train_x, calib_size, seed),
    )
