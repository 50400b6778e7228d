"""How far a pruned model is from its dense original.

* :func:`sentence_embeddings`: mean pooling over real tokens, then L2 normalisation (the
  sentence-transformers recipe for all-MiniLM-L6-v2), shape ``(N, d)``;
* :func:`mean_cosine`: mean cosine similarity between dense and sparse embeddings of the same text;
* :func:`knn_agreement`: every eval paragraph queries the others; the mean overlap of the top-k
  neighbour sets found with dense and with sparse embeddings (1.0 = identical retrieval);
* :func:`layer_errors`: per Linear, ``||W X - W' X||^2 / ||W X||^2`` on the inputs the *sparse*
  model feeds that layer;
* :func:`perplexity`: ``exp`` of the mean next-token cross-entropy of a causal LM.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..calibration import InputRecorder, relative_error
from ..errors import SparsecraftError
from .pipeline import Batch, block_targets


def hidden_states(output: Any) -> torch.Tensor:
    """Last hidden states ``(B, T, d)`` of a transformers model output or a plain tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output[0]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``hidden`` ``(B, T, d)`` over the real tokens (``attention_mask`` ``(B, T)``; all if None)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@torch.no_grad()
def sentence_embeddings(model: nn.Module, batches: Sequence[Batch]) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings ``(N, d)`` of tokenized ``batches`` (in order)."""
    model.eval()
    out = []
    for batch in batches:
        out.append(F.normalize(mean_pool(hidden_states(model(**batch)), batch["attention_mask"]), dim=-1))
    return torch.cat(out)


def mean_cosine(dense: torch.Tensor, sparse: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows of two ``(N, d)`` embedding matrices."""
    return float(F.cosine_similarity(dense, sparse, dim=-1).mean())


def neighbours(emb: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(N, k)`` of each row's ``k`` most cosine-similar other rows."""
    e = F.normalize(emb, dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-math.inf)
    return torch.topk(sim, k, dim=1).indices


def knn_agreement(dense: torch.Tensor, sparse: torch.Tensor, k: int = 10) -> float:
    """Mean ``|top-k_dense(i) ∩ top-k_sparse(i)| / k`` over all rows ``i`` used as queries."""
    if not 1 <= k < len(dense):
        raise SparsecraftError(f"k={k} nearest neighbours need k >= 1 and more than k texts, got {len(dense)} texts; "
                               "give more texts or a smaller k")
    a, b = neighbours(dense, k), neighbours(sparse, k)
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1)
    return float(hits.float().mean() / k)


@torch.no_grad()
def layer_errors(dense: nn.Module, sparse: nn.Module, batches: Sequence[Batch]) -> dict[str, float]:
    """Relative reconstruction error of every Linear in the sparse model's blocks.

    ``dense`` and ``sparse`` must share module names; each error is measured on the inputs the
    sparse model gives that layer (real tokens only).
    """
    dense_mods = dict(dense.named_modules())
    targets = [t for ts in block_targets(sparse) for t in ts]
    sparse.eval()
    with InputRecorder({t.module_name: t.module for t in targets}) as recorder:
        for batch in batches:
            recorder.token_mask = batch.get("attention_mask")
            sparse(**batch)
    return {t.module_name: relative_error(dense_mods[t.module_name].weight, t.param, recorder.stats[t.module_name].gram)
            for t in targets}


def perplexity(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 64) -> float:
    """``exp`` of the mean next-token cross-entropy of a causal LM on ids ``(N, T)``."""
    from ..models import evaluate_loss

    return math.exp(evaluate_loss(model, inputs, targets, batch_size))


def summarize(dense_emb: torch.Tensor, sparse_emb: torch.Tensor, errors: Mapping[str, float],
              k: int = 10) -> dict[str, Any]:
    """The headline metrics as one dict: cosine, top-k agreement, mean/max layer error."""
    errs = list(errors.values())
    return {
        "cosine": mean_cosine(dense_emb, sparse_emb),
        f"knn{k}": knn_agreement(dense_emb, sparse_emb, k),
        "mean_layer_error": sum(errs) / len(errs) if errs else 0.0,
        "max_layer_error": max(errs) if errs else 0.0,
    }


class EmbeddingAgreement:
    """How close a model's sentence embeddings stay to a dense model's on fixed batches.

    ``EmbeddingAgreement(dense, batches)(model)`` gives ``{"cosine": ..., "knn10": ...}`` (see
    :func:`mean_cosine`, :func:`knn_agreement`); the dense embeddings are computed once. With
    ``prefix="train_"`` the keys are ``train_cosine`` / ``train_knn10`` (a probe on training text,
    logged next to the held-out one, shows how much of a run's fit is memorised).
    """

    def __init__(self, dense: nn.Module, batches: Sequence[Batch], k: int = 10, prefix: str = "") -> None:
        self.batches, self.k, self.prefix = batches, k, prefix
        self.dense = sentence_embeddings(dense, batches)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        emb = sentence_embeddings(model, self.batches)
        return {f"{self.prefix}cosine": mean_cosine(self.dense, emb),
                f"{self.prefix}knn{self.k}": knn_agreement(self.dense, emb, self.k)}


def probes(*agreements: EmbeddingAgreement) -> Callable[[nn.Module], dict[str, float]]:
    """One ``evaluate(model)`` callable that reports the keys of every probe (held-out, training text)."""
    return lambda model: {key: value for probe in agreements for key, value in probe(model).items()}


@torch.no_grad()
def speed_vs_dense(dense: nn.Module, sparse: nn.Module, sample: Batch, rounds: int = 9,
                   warmup: int = 1) -> dict[str, float]:
    """Time ``sparse`` converted to the CPU kernels (:func:`sparsecraft.inference.convert`) against ``dense``.

    Both run ``sample`` in turn, round after round (:func:`sparsecraft.timing.compare`, median).

    Returns
    -------
    dict
        ``dense_ms``, ``sparse_ms``, ``speedup`` (dense / converted) and ``bytes`` (weight bytes of
        the converted Linears / their dense bytes).
    """
    import copy

    from ..inference import convert
    from ..timing import compare

    converted, layers = convert(copy.deepcopy(sparse))
    times = compare({"dense": lambda: dense(**sample), "sparse": lambda: converted(**sample)}, rounds=rounds,
                    warmup=warmup, stat="median")
    return {"dense_ms": 1000 * times["dense"], "sparse_ms": 1000 * times["sparse"],
            "speedup": times["dense"] / times["sparse"],
            "bytes": sum(c.nbytes for c in layers) / max(1, sum(c.dense_nbytes for c in layers))}
