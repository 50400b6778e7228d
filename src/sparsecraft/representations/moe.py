"""Mixture-of-experts feed-forward layer with top-k routing and a load-balancing loss.

A router scores every token against ``n_experts`` experts; each token is sent to its ``k`` best
experts and the output is the gate-weighted sum of those experts' outputs (Shazeer et al. 2017,
"Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer"; Lepikhin et al.
2021, GShard). Experts run only on the tokens routed to them. The auxiliary load-balancing loss is
Switch Transformer's (Fedus et al. 2022): ``n_experts * sum_e f_e * P_e`` with ``f_e`` the share of
routing slots that went to expert ``e`` and ``P_e`` its mean router probability; it equals 1 for a
perfectly uniform router and grows as routing collapses.

Context from the seeds: COMET (Ibrahim et al. 2023) replaces top-k with a differentiable tree gate
and BlockFFN (Song et al. 2025) a ReLU + RMSNorm router; both measure the same token-level sparsity
(``k / n_experts`` of the experts per token) that this plain top-k gate fixes exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..models.transformer import FeedForward


@dataclass
class Routing:
    """One forward's routing of T tokens.

    Attributes
    ----------
    experts : torch.Tensor of shape (T, k), int64
        Expert ids per token.
    gates : torch.Tensor of shape (T, k)
        Gate weights (rows sum to 1 when gates are renormalised).
    probs : torch.Tensor of shape (T, n_experts)
        Router softmax.
    """

    experts: torch.Tensor
    gates: torch.Tensor
    probs: torch.Tensor

    def load(self, n_experts: int) -> torch.Tensor:
        """Tokens routed to each expert.

        Parameters
        ----------
        n_experts : int

        Returns
        -------
        torch.Tensor of shape (n_experts,), int64
        """
        return torch.bincount(self.experts.reshape(-1), minlength=n_experts)


class MoEFeedForward(nn.Module):
    """Drop-in for ``FeedForward``: ``(..., d_model) -> (..., d_model)``.

    ``n_experts`` experts, each a ``FeedForward(d_model, hidden)``; a bias-free linear ``router``;
    every token uses exactly ``k`` experts with softmax gates (renormalised over the chosen ``k``
    when ``normalize_gates``). After each forward, ``self.aux_loss`` holds the load-balancing loss
    (add ``aux_weight * aux_loss`` to the training loss) and ``self.routing`` the :class:`Routing`.

    Parameters
    ----------
    d_model : int
        Token width.
    n_experts : int
    k : int, default=2
        Experts per token, at most ``n_experts``.
    hidden : int, optional
        Hidden width of each expert (default ``4 * d_model``).
    normalize_gates : bool, default=True
        Renormalise the gates over the chosen ``k`` experts.
    """

    def __init__(
        self, d_model: int, n_experts: int, k: int = 2, hidden: int | None = None, normalize_gates: bool = True
    ) -> None:
        super().__init__()
        d_model = check_positive_int(d_model, "d_model")
        self.n_experts = check_positive_int(n_experts, "n_experts")
        self.k = check_positive_int(k, "k")
        if k > n_experts:
            raise SparsecraftError(f"k ({k}) must not exceed n_experts ({n_experts})")
        hidden = check_positive_int(hidden if hidden is not None else 4 * d_model, "hidden")
        self.normalize_gates = normalize_gates
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, hidden) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())
        self.routing: Routing | None = None

    def route(self, x: torch.Tensor) -> Routing:
        """Route tokens.

        Parameters
        ----------
        x : torch.Tensor of shape (T, d_model)

        Returns
        -------
        Routing
        """
        probs = self.router(x).softmax(dim=-1)
        gates, experts = probs.topk(self.k, dim=-1)
        if self.normalize_gates:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return Routing(experts, gates, probs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate-weighted sum of each token's ``k`` experts, ``(..., d_model) -> (..., d_model)``."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        routing = self.route(tokens)
        out = torch.zeros_like(tokens)
        flat_experts = routing.experts.reshape(-1)
        flat_gates = routing.gates.reshape(-1)
        token_of_slot = torch.arange(len(tokens), device=x.device).repeat_interleave(self.k)
        order = flat_experts.argsort(stable=True)
        counts = torch.bincount(flat_experts, minlength=self.n_experts).tolist()
        start = 0
        for e, count in enumerate(counts):
            if count:
                slots = order[start : start + count]
                idx = token_of_slot[slots]
                y = self.experts[e](tokens[idx]) * flat_gates[slots, None]
                out.index_add_(0, idx, y)
            start += count
        self.routing = routing
        self.aux_loss = load_balancing_loss(routing, self.n_experts)
        return out.view(shape)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, k={self.k}"


def load_balancing_loss(routing: Routing, n_experts: int) -> torch.Tensor:
    """Switch-style ``n_experts * sum_e f_e * P_e``: 1 when balanced, ``n_experts`` at collapse.

    ``f_e`` (share of the ``T * k`` routing slots sent to ``e``) is a constant; the gradient flows
    through ``P_e`` (mean router probability of ``e``).

    Parameters
    ----------
    routing : Routing
    n_experts : int

    Returns
    -------
    torch.Tensor, scalar
        In [1, n_experts] up to the constant f.
    """
    slots = routing.experts.numel()
    f = routing.load(n_experts).to(routing.probs.dtype) / slots
    p = routing.probs.mean(dim=0)
    return n_experts * (f * p).sum()


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the load-balancing losses of a model's MoE layers (after a forward).

    Parameters
    ----------
    model : nn.Module
        Contains :class:`MoEFeedForward` layers.

    Returns
    -------
    torch.Tensor, scalar
        Differentiable; add ``aux_weight`` times it to the training loss.
    """
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoEFeedForward)]
    if not losses:
        raise SparsecraftError("model has no MoEFeedForward layers; call use_moe(model, ...) first")
    return torch.stack(losses).sum()


def use_moe(model: nn.Module, n_experts: int, k: int = 2, hidden: int | None = None) -> list[str]:
    """Replace every ``FeedForward`` (e.g. ``TinyTransformer`` blocks' ``mlp``) by a fresh :class:`MoEFeedForward`.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    n_experts : int
    k : int, default=2
        Experts per token.
    hidden : int, optional
        Expert hidden width; default the replaced layer's hidden width divided by ``k``, so active
        compute per token matches the dense layer.

    Returns
    -------
    list of str
        Names of the replaced modules.
    """
    targets = [
        (name, parent, child_name)
        for name, parent in model.named_modules()
        for child_name, child in parent.named_children()
        if isinstance(child, FeedForward)
    ]
    if not targets:
        raise SparsecraftError("model has no FeedForward layers to turn into experts")
    replaced = []
    for name, parent, child_name in targets:
        dense = getattr(parent, child_name)
        width = hidden if hidden is not None else max(1, dense.fc1.out_features // k)
        setattr(parent, child_name, MoEFeedForward(dense.fc1.in_features, n_experts, k, width))
        replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
