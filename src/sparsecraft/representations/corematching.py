"""CoreMatching: core neurons and core tokens pruned together at inference, for BERT-family encoders.

Wang et al. 2025, "CoreMatching: A Co-adaptive Sparse Inference Framework with Token and Neuron
Pruning for Comprehensive Acceleration of Vision-Language Models" (ICML), building on CoreInfer:

* token-wise core neurons of token ``t``: the ``alpha`` share of its positively activated FFN neurons
  with the largest activations;
* (sentence-wise) core neurons: neurons that are token-wise core for at least a ``beta`` share of
  the tokens;
* matching score of token ``t``: ``|token-wise core(t) ∩ core neurons|``; the core tokens are the
  tokens with the largest scores. Only they continue to the later layers, and the later FFNs only
  compute the core neurons.

The paper prunes tokens at pre-fill and uses the pre-fill core neurons for the decoding steps of a
decoder. An encoder has no decoding steps, so :func:`corematching_forward` adapts it: at layer
``prune_layer`` the full FFN activations give the core neurons and core tokens; from then on only
the ``keep_tokens`` core tokens are carried, and each later layer's core neurons are found on a
``probe`` of the best-matching tokens (full FFN for those few tokens), after which both FFN Linears
run over the core neurons only for all carried tokens. ``token_keep=1`` gives neuron pruning alone,
``neurons=False`` token pruning alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int

#: Token ranking rules of :func:`corematching_forward`.
TOKEN_RULES = ("matching", "random")


def _check_share(value: float, name: str) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise SparsecraftError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def token_core_neurons(acts: torch.Tensor, alpha: float) -> torch.Tensor:
    """Token-wise core neurons: the top ``alpha`` share of each token's positive activations.

    Parameters
    ----------
    acts : torch.Tensor of shape (T, H)
        FFN hidden activations, one row per token.
    alpha : float
        In (0, 1]: share of a token's positive activations kept (at least one if any is positive).

    Returns
    -------
    torch.Tensor of bool, shape (T, H)
    """
    alpha = _check_share(alpha, "alpha")
    if acts.dim() != 2:
        raise SparsecraftError(f"acts must be (tokens, neurons), got shape {tuple(acts.shape)}")
    positive = acts > 0
    counts = torch.ceil(positive.sum(1).float() * alpha).long()  # (T,)
    order = acts.masked_fill(~positive, -math.inf).argsort(dim=1, descending=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(acts.shape[1]).expand_as(order))
    return positive & (ranks < counts[:, None])


def core_neurons(token_cores: torch.Tensor, beta: float) -> torch.Tensor:
    """Neurons that are token-wise core for at least a ``beta`` share of the tokens.

    Parameters
    ----------
    token_cores : torch.Tensor of bool, shape (T, H)
    beta : float
        In (0, 1].

    Returns
    -------
    torch.Tensor of bool, shape (H,)
    """
    beta = _check_share(beta, "beta")
    return token_cores.float().mean(0) >= beta - 1e-9


def matching_scores(token_cores: torch.Tensor, cores: torch.Tensor) -> torch.Tensor:
    """``|token-wise core(t) ∩ core neurons|`` per token: int64 ``(T,)``."""
    return (token_cores & cores[None, :]).sum(1)


@dataclass
class CoSparseStats:
    """What one :func:`corematching_forward` computed.

    Attributes
    ----------
    macs, dense_macs : int
        Multiply-adds of the linear layers and attention products, pruned and dense.
    tokens : list of int
        Tokens carried into each layer.
    neurons : list of int
        FFN neurons computed per layer (for all carried tokens).
    """

    macs: int
    dense_macs: int
    tokens: list[int]
    neurons: list[int]

    @property
    def flops_ratio(self) -> float:
        """``macs / dense_macs``."""
        return self.macs / self.dense_macs


def _attention(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    att = layer.attention.self
    heads = att.num_attention_heads
    t, d = h.shape
    q, k, v = (lin(h).view(t, heads, -1).transpose(0, 1) for lin in (att.query, att.key, att.value))
    ctx = F.scaled_dot_product_attention(q[None], k[None], v[None])[0].transpose(0, 1).reshape(t, d)
    out = layer.attention.output
    return out.LayerNorm(out.dense(ctx) + h)


def _ffn(layer: nn.Module, h: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    fc1, fc2 = layer.intermediate.dense, layer.output.dense
    if rows is None:
        a = layer.intermediate.intermediate_act_fn(fc1(h))
        y = fc2(a)
    else:
        a = layer.intermediate.intermediate_act_fn(F.linear(h, fc1.weight[rows], fc1.bias[rows]))
        y = F.linear(a, fc2.weight[:, rows], fc2.bias)
    return layer.output.LayerNorm(y + h)


@torch.no_grad()
def corematching_forward(
    model: nn.Module, input_ids: torch.Tensor, prune_layer: int = 2, token_keep: float = 1.0,
    neurons: bool = False, alpha: float = 0.4, beta: float = 0.2, probe: int = 8,
    token_rule: str = "matching", seed: int = 0, freeze_pruned: bool = False,
) -> tuple[torch.Tensor, CoSparseStats]:
    """Run a BERT-family encoder on one sequence with CoreMatching token and/or neuron pruning.

    Parameters
    ----------
    model : transformers BertModel (or a model with the same ``embeddings``/``encoder.layer`` layout)
        In eval mode.
    input_ids : torch.Tensor of int64, shape (1, T) or (T,)
        One unpadded sequence.
    prune_layer : int, default=2
        Layer (0-based) whose FFN activations choose the core tokens; pruning applies after it.
    token_keep : float, default=1.0
        Share of tokens kept as core tokens (the first token, ``[CLS]``, is always kept).
    neurons : bool, default=False
        Compute only each later layer's core neurons (found on ``probe`` best-matching tokens).
    alpha, beta : float
        Token-wise core share and core-neuron frequency threshold (CoreInfer's alpha / beta).
    probe : int, default=8
        Tokens whose full FFN activations choose a later layer's core neurons.
    token_rule : {"matching", "random"}
        Rank tokens by the matching score (CoreMatching) or at random (a control, seeded by ``seed``).
    seed : int, default=0
    freeze_pruned : bool, default=False
        Return every token: pruned tokens keep their hidden state from ``prune_layer`` (they skip
        the later layers instead of vanishing), so mean pooling still sees them.

    Returns
    -------
    hidden : torch.Tensor of shape (1, T_kept, d), or (1, T, d) with ``freeze_pruned``
        Last hidden states of the carried tokens (in their original order).
    stats : CoSparseStats
    """
    layers = model.encoder.layer
    if not 0 <= prune_layer < len(layers):
        raise SparsecraftError(f"prune_layer must be in [0, {len(layers) - 1}], got {prune_layer!r}")
    token_keep = _check_share(token_keep, "token_keep")
    _check_share(alpha, "alpha")
    _check_share(beta, "beta")
    probe = check_positive_int(probe, "probe")
    if token_rule not in TOKEN_RULES:
        raise SparsecraftError(f"unknown token_rule {token_rule!r}; choose one of {', '.join(TOKEN_RULES)}")
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise SparsecraftError(f"input_ids must be one sequence (1, T), got shape {tuple(input_ids.shape)}")
    h = model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))[0]
    d = h.shape[1]
    width = layers[0].intermediate.dense.out_features
    t_full = h.shape[0]
    macs = dense_macs = 0
    tokens, counts = [], []
    ranking: torch.Tensor | None = None  # carried tokens, best match first
    frozen: torch.Tensor | None = None
    kept: torch.Tensor | None = None
    for i, layer in enumerate(layers):
        t = h.shape[0]
        tokens.append(t)
        dense_macs += 4 * t_full * d * d + 2 * t_full * t_full * d + 2 * t_full * d * width
        macs += 4 * t * d * d + 2 * t * t * d
        h = _attention(layer, h)
        rows = None
        if i == prune_layer:
            acts = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
            cores = token_core_neurons(acts, alpha)
            scores = matching_scores(cores, core_neurons(cores, beta))
            if token_rule == "random":
                scores = torch.randperm(len(scores), generator=torch.Generator().manual_seed(seed))
            scores[0] = torch.iinfo(scores.dtype).max  # keep [CLS]
            ranking = scores.argsort(descending=True, stable=True)
        elif i > prune_layer and neurons and ranking is not None:
            sample = h[ranking[: min(probe, len(ranking))]]
            acts = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(sample))
            rows = core_neurons(token_core_neurons(acts, alpha), beta).nonzero().squeeze(1)
            macs += len(sample) * d * width
        n_rows = width if rows is None else len(rows)
        counts.append(n_rows)
        macs += 2 * t * d * n_rows
        h = _ffn(layer, h, rows)
        if i == prune_layer and token_keep < 1.0:
            best = ranking[: max(1, math.ceil(token_keep * t))]
            kept = best.sort().values  # positional order
            if freeze_pruned:
                frozen = h.clone()
            h = h[kept]
            ranking = torch.searchsorted(kept, best)  # best-first, as indices into the kept tokens
    if frozen is not None:
        frozen[kept] = h
        h = frozen
    return h[None], CoSparseStats(macs, dense_macs, tokens, counts)
