"""User-facing errors.

Every mistake a user can make (bad sparsity, unknown name, shape that does not fit a pattern,
corrupt checkpoint, existing output file) raises :class:`SparsecraftError` with a one-line message
saying what is wrong and what to do. The CLI turns it into that line on stderr and exit code 2.
"""
from __future__ import annotations


class SparsecraftError(ValueError):
    """A user error: the message is one line, says what is wrong and how to fix it."""


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float after checking it lies in [0, 1)."""
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
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SparsecraftError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
