"""Offline datasets as torch tensors, deterministic given a seed.

``load_dataset(name, seed=0, **kwargs)`` returns a :class:`DataSplits`; names live in the
``DATASETS`` registry: ``digits`` (sklearn 8x8 images), ``mnist1d`` (generated locally) and
``text`` (byte-level LM windows of Python's pydoc topics).
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from .base import DataSplits
from .digits import load_digits
from .mnist1d import load_mnist1d
from .text import ByteTokenizer, TextSplits, lm_windows, load_text, load_text_lm, paragraphs

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")
DATASETS.register("digits")(load_digits)
DATASETS.register("mnist1d")(load_mnist1d)
DATASETS.register("text")(load_text_lm)


def load_dataset(name: str, seed: int = 0, **kwargs: Any) -> DataSplits:
    """Load a registered dataset.

    Parameters
    ----------
    name : str
        A name in ``DATASETS`` (``digits``, ``mnist1d``, ``text``).
    seed : int, default=0
        Seeds the split, generation and calibration subset: the same seed gives the same tensors.
    **kwargs
        Passed to the dataset's loader.

    Returns
    -------
    DataSplits
    """
    return DATASETS.get(name)(seed=seed, **kwargs)


__all__ = [
    "DATASETS",
    "ByteTokenizer",
    "DataSplits",
    "TextSplits",
    "lm_windows",
    "load_dataset",
    "load_digits",
    "load_mnist1d",
    "load_text",
    "load_text_lm",
    "paragraphs",
]
