"""Dense retrieval baseline: mean-pooled transformer embeddings, cosine similarity, exact top-k.

This is how sentence-transformers' all-MiniLM-L6-v2 embeds text (mean of the last hidden states
over non-padding tokens, then L2-normalised). Unlike the inference-free sparse retriever, every
query goes through the model.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SparsecraftError
from .index import check_k, top_k


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, H] unit-norm mean of [B, L, H] token states over the [B, L] mask's non-padding tokens."""
    m = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * m).sum(1) / m.sum(1).clamp_min(1.0)
    return nn.functional.normalize(pooled, dim=-1)


class DenseRetriever:
    """Exact cosine top-k over mean-pooled embeddings of a transformer encoder.

    Parameters
    ----------
    model : nn.Module
        A transformers encoder (e.g. ``load_pretrained("minilm")[0]``).
    tokenizer : its tokenizer
    doc_embeddings : torch.Tensor
        [N, H] unit-norm document embeddings (:meth:`embed` or :func:`mean_pool` of cached states).
    max_length : int, default=128
        Tokens per query, special tokens included.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, doc_embeddings: torch.Tensor, max_length: int = 128) -> None:
        if doc_embeddings.ndim != 2 or doc_embeddings.shape[0] == 0:
            raise SparsecraftError(f"need [N, H] document embeddings with N >= 1, got {tuple(doc_embeddings.shape)}")
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length
        self.doc_embeddings = doc_embeddings

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """[len(texts), H] unit-norm embeddings."""
        out = []
        for i in range(0, len(texts), batch_size):
            b = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
            out.append(mean_pool(self.model(**b).last_hidden_state, b["attention_mask"]))
        return torch.cat(out) if out else torch.zeros(0, self.doc_embeddings.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the document embedding matrix (the dense 'index')."""
        return int(self.doc_embeddings.numel() * self.doc_embeddings.element_size())

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` documents by cosine similarity: ``(ids, scores)``, best first."""
        check_k(k)
        sims = (self.doc_embeddings @ self.embed([query])[0]).numpy()
        return top_k(sims, k)
