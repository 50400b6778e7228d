"""Mixture-of-experts feed-forward layer: experts, dispatch, and a router from ``ROUTERS``.

A router (:mod:`.routers`: ``topk``, ``blockffn``, ``comet``) maps every token to some of the
``n_experts`` experts with gate weights; the output is the gate-weighted sum of those experts'
outputs (Shazeer et al. 2017, "Outrageously Large Neural Networks: The Sparsely-Gated
Mixture-of-Experts Layer"; Lepikhin et al. 2021, GShard). Experts run only on the tokens routed to
them. Each router adds its own auxiliary loss (top-k: Switch Transformer's load balancing, Fedus
et al. 2022). :meth:`MoEFeedForward.chunk_sparse_forward` is BlockFFN's chunk-level inference path:
per chunk of consecutive tokens, only the union of the experts they use runs.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..models.transformer import FeedForward
from .routers import Routing, build_router


class MoEFeedForward(nn.Module):
    """Drop-in for ``FeedForward``: ``(..., d_model) -> (..., d_model)``.

    ``n_experts`` experts, each a ``FeedForward(d_model, hidden)``, and a router from ``ROUTERS``
    (default ``topk``: every token uses exactly ``k`` experts with softmax gates, renormalised over
    the chosen ``k`` when ``normalize_gates``). Experts run only on the tokens routed to them. After
    each forward, ``self.aux_loss`` holds the router's auxiliary loss (add ``aux_weight * aux_loss``
    to the training loss) and ``self.routing`` the :class:`Routing`. Inputs ``(N, T, d_model)`` are
    ``N`` sequences of ``T`` consecutive tokens (the chunk and locality objectives of ``blockffn``
    read that order); other shapes are one sequence.

    Parameters
    ----------
    d_model : int
        Token width.
    n_experts : int
    k : int, default=2
        Experts per token, at most ``n_experts`` (``blockffn``: unused unless given as the
        ``target_active`` option; ``comet``: the number of trees, at most ``k`` experts per token).
    hidden : int, optional
        Hidden width of each expert (default ``4 * d_model``).
    normalize_gates : bool, default=True
        ``topk`` only: renormalise the gates over the chosen ``k`` experts.
    router : str, default="topk"
        A name in ``ROUTERS``.
    **router_options
        Options that router declares (e.g. ``blockffn``: ``chunk_loss=0.1``).
    """

    def __init__(
        self, d_model: int, n_experts: int, k: int = 2, hidden: int | None = None, normalize_gates: bool = True,
        router: str = "topk", **router_options: Any,
    ) -> None:
        super().__init__()
        d_model = check_positive_int(d_model, "d_model")
        self.n_experts = check_positive_int(n_experts, "n_experts")
        self.k = check_positive_int(k, "k")
        if k > n_experts:
            raise SparsecraftError(f"k ({k}) must not exceed n_experts ({n_experts})")
        hidden = check_positive_int(hidden if hidden is not None else 4 * d_model, "hidden")
        if router == "topk":
            router_options.setdefault("normalize_gates", normalize_gates)
        elif not normalize_gates:
            raise SparsecraftError(f"normalize_gates applies to the topk router only, not {router!r}")
        self.router_name = router
        self.router = build_router(router, d_model, n_experts, k, **router_options)
        self.experts = nn.ModuleList(FeedForward(d_model, hidden) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())
        self.routing: Routing | None = None

    def route(self, x: torch.Tensor, seq_len: int | None = None) -> Routing:
        """Route tokens.

        Parameters
        ----------
        x : torch.Tensor of shape (T, d_model)
        seq_len : int, optional
            Tokens per sequence (default: all T).

        Returns
        -------
        Routing
        """
        return self.router(x, seq_len or x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate-weighted sum of each token's experts, ``(..., d_model) -> (..., d_model)``."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        seq_len = shape[-2] if x.dim() >= 3 else len(tokens)
        routing = self.route(tokens, seq_len)
        out = torch.zeros_like(tokens)
        used = routing.slot_mask()
        token_of_slot = torch.arange(len(tokens), device=x.device)[:, None].expand_as(routing.experts)[used]
        flat_experts = routing.experts[used]
        flat_gates = routing.gates[used]
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
        self.aux_loss = self.router.aux_loss(routing, seq_len)
        return out.view(shape)

    @torch.no_grad()
    def chunk_sparse_forward(self, x: torch.Tensor, chunk: int = 8, packed: PackedExperts | None = None
                             ) -> torch.Tensor:
        """Inference that runs, for each chunk of consecutive tokens, only the experts the chunk uses.

        Routes ``x`` chunk by chunk, then runs :class:`PackedExperts`. The result equals
        :meth:`forward`.

        Parameters
        ----------
        x : torch.Tensor of shape (T, d_model)
            Consecutive tokens of one sequence.
        chunk : int, default=8
        packed : PackedExperts, optional
            This layer's experts packed once (``PackedExperts(moe.experts)``); packed per call if None.

        Returns
        -------
        torch.Tensor of shape (T, d_model)
        """
        chunk = check_positive_int(chunk, "chunk")
        if x.dim() != 2:
            raise SparsecraftError(f"chunk_sparse_forward takes (T, d_model) tokens, got {tuple(x.shape)}")
        gates = torch.cat([self.route(x[i : i + chunk], len(x[i : i + chunk])).dense_gates(self.n_experts)
                           for i in range(0, len(x), chunk)])
        return (packed or PackedExperts(list(self.experts)))(x, gates, chunk)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, k={self.k}, router={self.router_name}"


class PackedExperts:
    """Experts' weights packed for BlockFFN's chunk-level execution (an inference copy).

    Per chunk of consecutive tokens, only the union of the experts the chunk uses runs: their rows
    of the packed ``fc1`` and ``fc2^T`` matrices are gathered and the chunk's tokens go through one
    matmul pair, weighted by the gates (zero for tokens that do not use an expert). Experts no token
    of the chunk uses are never read. The result equals the token-level MoE output.

    Parameters
    ----------
    experts : sequence of FeedForward
        ``n_experts`` experts of one hidden width and one activation class (copied, not shared).
    """

    def __init__(self, experts: Sequence[FeedForward]) -> None:
        widths = {e.fc1.out_features for e in experts}
        if not experts or len(widths) != 1 or len({type(e.act) for e in experts}) != 1:
            raise SparsecraftError("PackedExperts needs experts of one hidden width and one activation")
        self.n_experts, self.hidden = len(experts), widths.pop()
        self.act = experts[0].act
        with torch.no_grad():
            self.fc1 = torch.cat([e.fc1.weight for e in experts]).clone()  # (E * h, d)
            self.b1 = torch.cat([e.fc1.bias for e in experts]).clone()  # (E * h,)
            self.fc2t = torch.cat([e.fc2.weight.t() for e in experts]).contiguous()  # (E * h, d)
            self.b2 = torch.stack([e.fc2.bias for e in experts]).clone()  # (E, d)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, gates: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """``sum_e gates[:, e] * experts[e](x)``, chunk by chunk over the union of used experts.

        Parameters
        ----------
        x : torch.Tensor of shape (T, d_model)
        gates : torch.Tensor of shape (T, n_experts)
            Dense gates, zero where a token does not use an expert.
        chunk : int, default=8

        Returns
        -------
        torch.Tensor of shape (T, d_model)
        """
        chunk = check_positive_int(chunk, "chunk")
        if gates.shape != (x.shape[0], self.n_experts):
            raise SparsecraftError(f"gates must be (T={x.shape[0]}, n_experts={self.n_experts}), "
                                   f"got {tuple(gates.shape)}")
        out = torch.zeros_like(x)
        offsets = torch.arange(self.hidden, device=x.device)
        for start in range(0, len(x), chunk):
            part, g = x[start : start + chunk], gates[start : start + chunk]
            used = g.any(dim=0).nonzero().flatten()
            if not len(used):
                continue
            rows = (used[:, None] * self.hidden + offsets).flatten()
            g_used = g.index_select(1, used)
            hidden = self.act(F.linear(part, self.fc1.index_select(0, rows), self.b1.index_select(0, rows)))
            # g * (W2 h + b2) = W2 (g * h) + g b2: the gate scales the small hidden activations
            hidden.mul_(g_used.repeat_interleave(self.hidden, dim=1))
            torch.addmm(g_used @ self.b2.index_select(0, used), hidden, self.fc2t.index_select(0, rows),
                        out=out[start : start + chunk])
        return out


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


def use_moe(
    model: nn.Module, n_experts: int, k: int = 2, hidden: int | None = None, router: str = "topk",
    **router_options: Any,
) -> list[str]:
    """Replace every ``FeedForward`` (e.g. ``TinyTransformer`` blocks' ``mlp``) by a fresh :class:`MoEFeedForward`.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    n_experts : int
    k : int, default=2
        Experts per token (see :class:`MoEFeedForward`).
    hidden : int, optional
        Expert hidden width; default the replaced layer's hidden width divided by ``k``, so active
        compute per token matches the dense layer.
    router : str, default="topk"
        A name in ``ROUTERS``.
    **router_options
        Options of that router.

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
        setattr(parent, child_name,
                MoEFeedForward(dense.fc1.in_features, n_experts, k, width, router=router, **router_options))
        replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced


def routing_masks(model: nn.Module) -> list[torch.Tensor]:
    """The ``(T, n_experts)`` bool expert-use masks of every MoE layer's last forward.

    Parameters
    ----------
    model : nn.Module
        Contains :class:`MoEFeedForward` layers that have run.

    Returns
    -------
    list of torch.Tensor
    """
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    if not layers or any(m.routing is None for m in layers):
        raise SparsecraftError("model has no MoEFeedForward layers that have run; call use_moe and a forward first")
    return [m.routing.mask(m.n_experts) for m in layers]
