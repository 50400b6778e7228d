"""User-facing errors.

Every mistake a user can make (bad sparsity, unknown name, shape that does not fit a pattern,
corrupt checkpoint, existing output file) raises :class:`SparsecraftError` with a one-line message
saying what is wrong and what to do. The CLI turns it into that line on stderr and exit code 2.
"""
from __future__ import annotations

import math


class SparsecraftError(ValueError):
    """A user error: the message is one line, says what is wrong and how to fix it."""


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Check a sparsity.

    Parameters
    ----------
    sparsity : float
        Fraction of zeros.
    name : str, default="sparsity"
        What to call it in the error message.

    Returns
    -------
    float
        ``sparsity``, in [0, 1).

    Raises
    ------
    SparsecraftError
        If it is not a number in [0, 1) (a percentage such as 90 included).
    """
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise SparsecraftError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise SparsecraftError(
            f"{name} must be a fraction in [0, 1), got {sparsity!r} (use 0.9 for 90% zeros)"
        )
    return value


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Check a positive integer.

    Parameters
    ----------
    value : object
    name : str
        What to call it in the error message.
    minimum : int, default=1

    Returns
    -------
    int
        ``value``, an int >= ``minimum``.

    Raises
    ------
    SparsecraftError
        If it is not an int (bools excluded) or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SparsecraftError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_learning_rate(lr: object, name: str = "lr") -> float:
    """Check a learning rate.

    Parameters
    ----------
    lr : object
    name : str, default="lr"
        What to call it in the error message (``--lr`` on the command line).

    Returns
    -------
    float
        ``lr``, a finite number > 0 (inf or NaN would turn every weight non-finite).

    Raises
    ------
    SparsecraftError
        If it is not a finite number > 0.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise SparsecraftError(f"{name} must be a finite number > 0, got {lr!r}")
    return float(lr)
