"""Input checks shared by the coding estimators: every bad input becomes a one-line SparsecraftError."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError


def as_matrix(value: Any, name: str, ndim: int = 2, dtype: type = np.float64) -> np.ndarray:
    """Return ``value`` as a finite float array with ``ndim`` dimensions, or raise naming ``name``."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise SparsecraftError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    if arr.ndim != ndim:
        raise SparsecraftError(f"{name} must be {ndim}-D, got shape {arr.shape}; reshape it first")
    if arr.size == 0:
        raise SparsecraftError(f"{name} is empty (shape {arr.shape}); pass at least one value")
    if not np.all(np.isfinite(arr)):
        raise SparsecraftError(f"{name} contains NaN or inf; remove or impute those entries")
    return arr


def as_vector(value: Any, n_rows: int, name: str = "y", rows_of: str = "X") -> np.ndarray:
    """Return ``value`` as a finite 1-D array of ``n_rows`` entries (one per row of ``rows_of``)."""
    arr = as_matrix(value, name, ndim=1)
    if arr.shape[0] != n_rows:
        raise SparsecraftError(
            f"{name} has {arr.shape[0]} entries but {rows_of} has {n_rows} rows; pass matching shapes"
        )
    return arr


def as_targets(y: Any, n_rows: int, name: str = "y") -> tuple[np.ndarray, bool]:
    """Return ``y`` as a 2-D (n_rows, n_targets) array and whether it was 1-D."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise SparsecraftError(f"{name} must be a numeric array, got {type(y).__name__}") from None
    if arr.ndim not in (1, 2):
        raise SparsecraftError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    was_1d = arr.ndim == 1
    arr = as_matrix(arr.reshape(arr.shape[0], -1), name)
    if arr.shape[0] != n_rows:
        raise SparsecraftError(
            f"{name} has {arr.shape[0]} rows but the design/dictionary has {n_rows}; pass matching shapes"
        )
    return arr, was_1d


def check_k(k: Any, dim: int, name: str = "k") -> int:
    """Return ``k`` as an int in [1, dim], or raise naming ``name``."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise SparsecraftError(f"{name} must be a positive integer, got {k!r}")
    if not 1 <= int(k) <= dim:
        raise SparsecraftError(f"{name}={k} must lie in [1, {dim}] (the dimension); choose a smaller {name}")
    return int(k)


def check_positive(value: Any, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or >= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SparsecraftError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SparsecraftError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_int(value: Any, name: str, low: int = 1) -> int:
    """Return ``value`` as an int >= ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise SparsecraftError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_fitted(estimator: Any, attr: str = "coef_") -> None:
    """Raise if ``estimator`` has not been fitted yet."""
    if not hasattr(estimator, attr):
        raise SparsecraftError(f"{type(estimator).__name__} is not fitted yet; call fit() first")


def rng(random_state: Any) -> np.random.Generator:
    """A numpy Generator from None, an int seed or an existing Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)
