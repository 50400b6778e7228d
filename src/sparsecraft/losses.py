"""Loss functions shared by criteria, training loops and evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of class logits.

    Parameters
    ----------
    logits : Tensor, shape ``(N, C)`` or ``(N, T, V)`` (a language model)
    target : Tensor of int64, shape ``(N,)`` or ``(N, T)``

    Returns
    -------
    Tensor
        Scalar mean over examples (every token counts once).
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
