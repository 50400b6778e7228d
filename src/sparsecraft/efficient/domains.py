"""A second text domain for the byte-level decoder LM: Python standard-library source code.

The tiny decoder (``sparsecraft.posttrain.decoder``) learns English reference prose (pydoc topics);
fine-tuning it on source code is a domain shift, and its pydoc perplexity afterwards measures
forgetting. The files ship with Python, so the text is offline and fixed per interpreter version.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..data import ByteTokenizer, lm_windows
from ..errors import SparsecraftError

TRAIN_MODULES = ("textwrap", "difflib", "fractions", "statistics", "heapq", "bisect", "shlex", "string",
                 "calendar", "colorsys", "fnmatch", "glob", "pprint", "queue", "sched", "graphlib")
TEST_MODULES = ("numbers", "copy", "keyword", "reprlib", "quopri", "tokenize")


def module_source(name: str) -> str:
    """The source text of the pure-Python standard-library module ``name``."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise SparsecraftError(f"{name!r} is not a pure-Python module with a source file; pick another module")
    return Path(spec.origin).read_text(encoding="utf-8")


def source_lm(seq_len: int = 64, train_modules: tuple[str, ...] = TRAIN_MODULES,
              test_modules: tuple[str, ...] = TEST_MODULES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """Next-byte windows of standard-library source: train from ``train_modules``, test from ``test_modules``.

    Parameters
    ----------
    seq_len : int, default=64
    train_modules, test_modules : tuple of str
        Disjoint module names.

    Returns
    -------
    train_x, train_y, test_x, test_y : torch.Tensor of shape (N, seq_len), int64
    """
    if set(train_modules) & set(test_modules):
        raise SparsecraftError("train_modules and test_modules overlap; held-out code must be other modules")
    tok = ByteTokenizer()
    train = lm_windows(tok.encode_paragraphs([module_source(m) for m in train_modules]), seq_len)
    test = lm_windows(tok.encode_paragraphs([module_source(m) for m in test_modules]), seq_len)
    return (*train, *test)
