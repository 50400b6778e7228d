"""Text for post-training pruning of Hugging Face models: calibration and evaluation paragraphs
(disjoint splits of Python's own pydoc text, offline) and their tokenized batches.

Loading the models themselves lives in :mod:`sparsecraft.models.hf`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import SparsecraftError


def encode(
    tokenizer: Any, texts: Sequence[str], seq_len: int = 128, batch_size: int = 16, by_length: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Tokenize ``texts`` into batches of ``input_ids``/``attention_mask`` ``(B, <=seq_len)``.

    With ``by_length`` the texts are batched in order of length (less padding, same statistics).
    """
    if seq_len < 4:
        raise SparsecraftError(f"seq_len must be >= 4 tokens, got {seq_len}")
    texts = sorted(texts, key=len) if by_length else list(texts)
    batches = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], truncation=True, max_length=seq_len,
                        padding=True, return_tensors="pt")
        batches.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})
    return batches


def calibration_texts(n: int, seed: int = 0) -> list[str]:
    """The first ``n`` calibration paragraphs of the pydoc text (disjoint from the eval ones)."""
    from ..data import load_text

    available = load_text(seed).calibration
    if not 1 <= n <= len(available):
        raise SparsecraftError(f"--calib-samples must be between 1 and {len(available)} paragraphs, got {n}")
    return available[:n]


def eval_texts(n: int = 0, seed: int = 0) -> list[str]:
    """The first ``n`` evaluation paragraphs (all when ``n == 0``), disjoint from calibration."""
    from ..data import load_text

    available = load_text(seed).eval
    if not 0 <= n <= len(available):
        raise SparsecraftError(f"--eval-samples must be between 0 (all) and {len(available)}, got {n}")
    return available[: n or len(available)]


def text_file_paragraphs(path: str, exclude: Sequence[str] = ()) -> list[str]:
    """A user's training text: one paragraph per non-empty line of a UTF-8 file.

    Lines equal to one of ``exclude`` (the held-out paragraphs, flattened to one line) are dropped,
    so training never sees evaluation text.
    """
    from pathlib import Path

    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SparsecraftError(f"cannot read text file {p}: {getattr(err, 'strerror', None) or err}") from None
    held_out = {" ".join(t.split()) for t in exclude}
    texts = [line.strip() for line in lines if line.strip() and " ".join(line.split()) not in held_out]
    if not texts:
        raise SparsecraftError(f"{p} holds no paragraphs (one per line) outside the held-out text")
    return texts
