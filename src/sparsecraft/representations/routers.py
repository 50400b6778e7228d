"""Mixture-of-experts routers behind one interface (the ``ROUTERS`` registry).

A router maps ``T`` tokens to a :class:`Routing`: which experts each token uses and with what gate
weight; :class:`~sparsecraft.representations.moe.MoEFeedForward` runs the experts. Every router is a
class registered by name, built as ``cls(d_model, n_experts, k, **options)``, declaring its options
(``options``: :class:`~sparsecraft.options.Option`) and its auxiliary training loss
(:meth:`Router.aux_loss`). A new router is one new class here.

* ``topk``: softmax router, exactly ``k`` experts per token, Switch load-balancing loss
  (Shazeer et al. 2017; Fedus et al. 2022).
* ``blockffn``: BlockFFN (Song et al. 2025, "BlockFFN: Towards End-Side Acceleration-Friendly
  Mixture-of-Experts with Chunk-Level Activation Sparsity"): gates ``RMSNorm(ReLU(W x))`` over the
  experts: differentiable, and the number of active experts varies per token. Its training
  objectives: an L1 penalty on the gates (token-level sparsity, optionally with an adaptive
  coefficient that steers the mean number of active experts to ``target_active``), the activation
  locality loss ``BCE(sigmoid(a * z_{t-1}), sigmoid(a * z_t))`` on the pre-ReLU scores of consecutive
  tokens, the chunk sparsification loss ``mean_{chunk, e} 1 - prod_{t in chunk} (1 - p_{t,e})`` with
  ``p`` the gates normalised to sum to 1 per token, and a load-balancing term.
* ``comet``: COMET (Ibrahim et al. 2023, "COMET: Learning Cardinality Constrained Mixture of
  Experts with Trees and Local Search"): ``k`` soft binary trees of depth ``log2(n_experts)`` whose
  internal nodes route with a smooth-step function (exactly 0 or 1 outside ``[-gamma/2, gamma/2]``);
  leaf ``e`` of tree ``j`` scores ``a_{j,e}(x) + log P_j(leaf e | x)`` and one softmax runs over all
  ``k * n_experts`` scores, so once the smooth-steps saturate every tree reaches one leaf and at
  most ``k`` experts are active (the cardinality constraint). An entropy penalty on the leaf
  probabilities drives that saturation. The permutation-based local search learns, per tree, a
  permutation of the experts over the leaves (Sinkhorn-normalised scores, the nearest hard
  permutation in the forward pass, gradients through the soft one), so training can move an
  expert to another leaf, a move first-order updates of the tree cannot make.

Also here: :func:`token_level_sparsity` and :func:`chunk_level_sparsity` (the union of the experts
used by ``chunk`` consecutive tokens), BlockFFN's TLS and CLS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..options import Option
from ..registry import Registry


@dataclass
class Routing:
    """One forward's routing of T tokens over ``m`` slots per token.

    Attributes
    ----------
    experts : torch.Tensor of shape (T, m), int64
        Expert id of each slot (top-k: ``m = k``; variable routers: ``m = n_experts``, slot = expert).
    gates : torch.Tensor of shape (T, m)
        Gate weight of each slot.
    probs : torch.Tensor of shape (T, n_experts)
        Router probabilities used by the load-balancing loss.
    active : torch.Tensor of shape (T, m), bool, optional
        Which slots run their expert; None means every slot.
    scores : torch.Tensor of shape (T, n_experts), optional
        Router pre-activations (BlockFFN's locality loss reads them).
    """

    experts: torch.Tensor
    gates: torch.Tensor
    probs: torch.Tensor
    active: torch.Tensor | None = None
    scores: torch.Tensor | None = None

    def slot_mask(self) -> torch.Tensor:
        """``(T, m)`` bool: slots whose expert runs."""
        return torch.ones_like(self.experts, dtype=torch.bool) if self.active is None else self.active

    def mask(self, n_experts: int) -> torch.Tensor:
        """Experts each token uses.

        Parameters
        ----------
        n_experts : int

        Returns
        -------
        torch.Tensor of shape (T, n_experts), bool
        """
        out = torch.zeros(self.experts.shape[0], n_experts, dtype=torch.bool, device=self.experts.device)
        rows = torch.arange(self.experts.shape[0], device=out.device)[:, None].expand_as(self.experts)
        used = self.slot_mask()
        out[rows[used], self.experts[used]] = True
        return out

    def dense_gates(self, n_experts: int) -> torch.Tensor:
        """Gate matrix ``(T, n_experts)``, zero where a token does not use an expert."""
        gates = self.gates * self.slot_mask()
        return torch.zeros(self.experts.shape[0], n_experts, dtype=gates.dtype, device=gates.device).scatter_add(
            1, self.experts, gates)

    def load(self, n_experts: int) -> torch.Tensor:
        """Tokens routed to each expert.

        Parameters
        ----------
        n_experts : int

        Returns
        -------
        torch.Tensor of shape (n_experts,), int64
        """
        return torch.bincount(self.experts[self.slot_mask()], minlength=n_experts)

    def active_per_token(self) -> torch.Tensor:
        """``(T,)`` int64: experts each token uses."""
        return self.slot_mask().sum(dim=1)


def load_balancing_loss(routing: Routing, n_experts: int) -> torch.Tensor:
    """Switch-style ``n_experts * sum_e f_e * P_e``: 1 when balanced, ``n_experts`` at collapse.

    ``f_e`` (share of the active routing slots sent to ``e``) is a constant; the gradient flows
    through ``P_e`` (mean router probability of ``e``).

    Parameters
    ----------
    routing : Routing
    n_experts : int

    Returns
    -------
    torch.Tensor, scalar
        In [1, n_experts] up to the constant f (0 when no slot is active).
    """
    load = routing.load(n_experts).to(routing.probs.dtype)
    f = load / load.sum().clamp_min(1)
    p = routing.probs.mean(dim=0)
    return n_experts * (f * p).sum()


def token_level_sparsity(mask: torch.Tensor) -> float:
    """BlockFFN's TLS: the share of (token, expert) pairs that are inactive.

    Parameters
    ----------
    mask : torch.Tensor of shape (T, n_experts), bool
        Experts each token uses (:meth:`Routing.mask`).

    Returns
    -------
    float
        In [0, 1].
    """
    return 1.0 - float(mask.float().mean())


def chunk_level_sparsity(mask: torch.Tensor, chunk: int = 8, seq_len: int | None = None) -> float:
    """BlockFFN's CLS: the share of experts unused by a whole chunk of consecutive tokens.

    Tokens are cut into sequences of ``seq_len`` and each sequence into chunks of ``chunk``
    consecutive tokens (a trailing partial chunk is dropped); an expert counts as used by a chunk
    when any of its tokens uses it (the union).

    Parameters
    ----------
    mask : torch.Tensor of shape (T, n_experts), bool
    chunk : int, default=8
    seq_len : int, optional
        Tokens per sequence (default: all ``T`` tokens are one sequence).

    Returns
    -------
    float
        In [0, 1]; equals :func:`token_level_sparsity` when ``chunk == 1``.
    """
    chunk = check_positive_int(chunk, "chunk")
    seq_len = check_positive_int(seq_len or mask.shape[0], "seq_len")
    if mask.dim() != 2 or mask.shape[0] % seq_len:
        raise SparsecraftError(f"mask must be (T, n_experts) with T a multiple of seq_len={seq_len}")
    usable = seq_len - seq_len % chunk
    if usable == 0:
        raise SparsecraftError(f"chunk ({chunk}) is longer than a sequence ({seq_len} tokens)")
    seqs = mask.view(-1, seq_len, mask.shape[1])[:, :usable]
    union = seqs.reshape(seqs.shape[0], -1, chunk, mask.shape[1]).any(dim=2)
    return 1.0 - float(union.float().mean())


class Router(nn.Module):
    """Base class: ``forward(x (T, d_model), seq_len) -> Routing``; ``aux_loss(routing, seq_len)``.

    Attributes
    ----------
    options : tuple of Option
        The keyword options the constructor takes besides ``d_model, n_experts, k``.
    """

    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, d_model: int, n_experts: int, k: int) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.n_experts = check_positive_int(n_experts, "n_experts")
        self.k = check_positive_int(k, "k")
        if k > n_experts:
            raise SparsecraftError(f"k ({k}) must not exceed n_experts ({n_experts})")

    def aux_loss(self, routing: Routing, seq_len: int) -> torch.Tensor:
        """The router's auxiliary training loss for one forward (weights included).

        Parameters
        ----------
        routing : Routing
            From this router's last forward.
        seq_len : int
            Tokens per sequence in that forward (consecutive tokens share a sequence).

        Returns
        -------
        torch.Tensor, scalar
        """
        return load_balancing_loss(routing, self.n_experts)

    def _all_slots(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.n_experts, device=x.device).expand(x.shape[0], -1)


ROUTERS: Registry[type[Router]] = Registry("router")


def build_router(name: str, d_model: int, n_experts: int, k: int, **options: Any) -> Router:
    """Build the router registered as ``name``; options it does not declare are refused.

    Parameters
    ----------
    name : str
        A name in ``ROUTERS`` (``topk``, ``blockffn``, ``comet``).
    d_model, n_experts, k : int
        Token width, experts, and experts per token (BlockFFN: the target mean; COMET: trees).
    **options
        The router's declared options.

    Returns
    -------
    Router
    """
    cls = ROUTERS.get(name)
    declared = {opt.name: opt for opt in cls.options}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        valid = ", ".join(declared) or "none"
        raise SparsecraftError(f"router {name!r} has no option {unknown[0]!r}; its options: {valid}")
    checked = {key: declared[key].check(value) for key, value in options.items()}
    return cls(d_model, n_experts, k, **checked)


@ROUTERS.register("topk")
class TopKRouter(Router):
    """Softmax router; each token uses exactly its ``k`` most probable experts.

    ``weight`` ``(n_experts, d_model)`` is a bias-free linear map, so the state-dict key of a plain
    ``MoEFeedForward`` stays ``router.weight``.
    """

    options = (Option("normalize_gates", bool, True, "renormalise the chosen k gates to sum to 1"),)

    def __init__(self, d_model: int, n_experts: int, k: int = 2, normalize_gates: bool = True) -> None:
        super().__init__(d_model, n_experts, k)
        self.normalize_gates = normalize_gates
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, seq_len: int | None = None) -> Routing:
        """Route ``x`` ``(T, d_model)``."""
        probs = F.linear(x, self.weight).softmax(dim=-1)
        gates, experts = probs.topk(self.k, dim=-1)
        if self.normalize_gates:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return Routing(experts, gates, probs)


@ROUTERS.register("blockffn")
class BlockFFNRouter(Router):
    """BlockFFN's ReLU + RMSNorm router with its token- and chunk-level sparsity objectives.

    Gates ``g = scale * r / rms(r)`` with ``r = ReLU(W x)`` (``rms`` over the experts, ``scale``
    learnable per expert); an expert runs for a token iff its gate is positive.
    """

    options = (
        Option("l1", float, 0.01, "initial weight of the L1 penalty on the gates", bounds="[0, inf)"),
        Option("target_active", float, None, "steer the mean active experts per token to this (adaptive L1)",
               bounds="(0, inf)"),
        Option("adapt_rate", float, 0.05, "multiplicative step of the adaptive L1 weight", bounds="(0, 1)"),
        Option("locality", float, 0.0, "weight of the activation locality loss", bounds="[0, inf)"),
        Option("chunk_loss", float, 0.0, "weight of the chunk sparsification loss", bounds="[0, inf)"),
        Option("chunk", int, 8, "tokens per chunk of the chunk sparsification loss", bounds="[1, inf)"),
        Option("steepness", float, 10.0, "sigmoid steepness a of the locality loss", bounds="(0, inf)"),
        Option("balance", float, 0.01, "weight of the load-balancing loss", bounds="[0, inf)"),
    )

    def __init__(
        self, d_model: int, n_experts: int, k: int = 2, l1: float = 0.01, target_active: float | None = None,
        adapt_rate: float = 0.05, locality: float = 0.0, chunk_loss: float = 0.0, chunk: int = 8,
        steepness: float = 10.0, balance: float = 0.01, eps: float = 1e-6,
    ) -> None:
        super().__init__(d_model, n_experts, k)
        if target_active is not None and not 0 < target_active <= n_experts:
            raise SparsecraftError(f"target_active must lie in (0, n_experts={n_experts}], got {target_active}")
        self.proj = nn.Linear(d_model, n_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(n_experts))
        self.target_active = target_active
        self.adapt_rate = adapt_rate
        self.register_buffer("l1", torch.tensor(float(l1)))
        self.locality, self.chunk_loss, self.balance = locality, chunk_loss, balance
        self.chunk = check_positive_int(chunk, "chunk")
        self.steepness, self.eps = steepness, eps

    def forward(self, x: torch.Tensor, seq_len: int | None = None) -> Routing:
        """Route ``x`` ``(T, d_model)``; every expert is a slot, active where its gate is positive."""
        scores = self.proj(x)
        r = F.relu(scores)
        gates = self.scale * r * torch.rsqrt(r.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        probs = r / (r.sum(dim=-1, keepdim=True) + 1e-5)
        active = r > 0
        if self.training and self.target_active is not None:
            with torch.no_grad():
                step = self.adapt_rate if float(active.sum(1).float().mean()) > self.target_active else -self.adapt_rate
                self.l1.mul_(math.exp(step)).clamp_(1e-6, 1e3)
        return Routing(self._all_slots(x), gates, probs, active, scores)

    def aux_loss(self, routing: Routing, seq_len: int) -> torch.Tensor:
        loss = self.l1 * routing.gates.abs().mean() + self.balance * load_balancing_loss(routing, self.n_experts)
        if self.chunk_loss:
            loss = loss + self.chunk_loss * chunk_sparsification_loss(routing.probs, self.chunk, seq_len)
        if self.locality:
            loss = loss + self.locality * activation_locality_loss(routing.scores, seq_len, self.steepness)
        return loss


def chunk_sparsification_loss(probs: torch.Tensor, chunk: int, seq_len: int) -> torch.Tensor:
    """BlockFFN's chunk sparsification loss: mean chance that an expert fires somewhere in a chunk.

    Parameters
    ----------
    probs : torch.Tensor of shape (T, n_experts)
        Per-token activation probabilities in [0, 1] (BlockFFN: gates normalised to sum to 1).
    chunk : int
        Consecutive tokens per chunk; a trailing partial chunk of each sequence is dropped.
    seq_len : int
        Tokens per sequence.

    Returns
    -------
    torch.Tensor, scalar
        ``mean_{chunk, e} 1 - prod_{t in chunk} (1 - p_{t, e})``; 0 when nothing is left.
    """
    usable = seq_len - seq_len % chunk
    if usable == 0:
        return probs.sum() * 0
    seqs = probs.view(-1, seq_len, probs.shape[-1])[:, :usable]
    log_keep = torch.log1p(-seqs.clamp(max=1 - 1e-5)).reshape(seqs.shape[0], -1, chunk, probs.shape[-1]).sum(2)
    return 1 - log_keep.exp().mean()


def activation_locality_loss(scores: torch.Tensor, seq_len: int, steepness: float) -> torch.Tensor:
    """BlockFFN's activation locality loss between consecutive tokens of each sequence.

    ``BCE(sigmoid(a * z_{t-1}), target=sigmoid(a * z_t))`` on the pre-ReLU router scores ``z``:
    a sharpened "is active" of token ``t - 1`` is pulled toward that of token ``t``.

    Parameters
    ----------
    scores : torch.Tensor of shape (T, n_experts)
    seq_len : int
    steepness : float
        ``a``; larger is closer to the 0/1 activation pattern.

    Returns
    -------
    torch.Tensor, scalar
    """
    if seq_len < 2:
        return scores.sum() * 0
    seqs = scores.view(-1, seq_len, scores.shape[-1]) * steepness
    return F.binary_cross_entropy_with_logits(seqs[:, :-1], torch.sigmoid(seqs[:, 1:]))


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Hazimeh et al.'s smooth-step: 0 below ``-gamma/2``, 1 above ``gamma/2``, a cubic between.

    Parameters
    ----------
    t : torch.Tensor
    gamma : float
        Width of the transition, > 0.

    Returns
    -------
    torch.Tensor
        Same shape, values in [0, 1], continuously differentiable.
    """
    cubic = -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


def sinkhorn(logits: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Doubly-stochastic matrices from square score matrices by alternate row/column normalisation.

    Parameters
    ----------
    logits : torch.Tensor of shape (..., n, n)
    iterations : int, default=20

    Returns
    -------
    torch.Tensor of shape (..., n, n)
        Rows and columns each sum to 1 (up to the iteration count).
    """
    log_p = logits
    for _ in range(iterations):
        log_p = log_p - log_p.logsumexp(dim=-1, keepdim=True)
        log_p = log_p - log_p.logsumexp(dim=-2, keepdim=True)
    return log_p.exp()


def nearest_permutation(soft: torch.Tensor) -> torch.Tensor:
    """The permutation matrix with the largest overlap with each ``soft`` matrix (Hungarian method).

    Parameters
    ----------
    soft : torch.Tensor of shape (..., n, n)

    Returns
    -------
    torch.Tensor of shape (..., n, n)
        0/1 permutation matrices, same dtype and device.
    """
    from scipy.optimize import linear_sum_assignment

    flat = soft.detach().reshape(-1, *soft.shape[-2:]).cpu().numpy()
    hard = np.zeros_like(flat)
    for i, m in enumerate(flat):
        rows, cols = linear_sum_assignment(m, maximize=True)
        hard[i, rows, cols] = 1.0
    return torch.from_numpy(hard).to(soft).view(soft.shape)


@ROUTERS.register("comet")
class COMETRouter(Router):
    """COMET tree gate: ``k`` soft binary trees over ``n_experts`` (a power of two) leaves."""

    options = (
        Option("gamma", float, 1.0, "smooth-step transition width", bounds="(0, inf)"),
        Option("entropy", float, 0.05, "weight of the leaf-probability entropy penalty", bounds="[0, inf)"),
        Option("balance", float, 0.01, "weight of the load-balancing loss", bounds="[0, inf)"),
        Option("local_search", bool, False, "learn a permutation of the experts over the leaves per tree"),
        Option("temperature", float, 0.1, "Sinkhorn temperature of the permutation scores", bounds="(0, inf)"),
    )

    def __init__(
        self, d_model: int, n_experts: int, k: int = 2, gamma: float = 1.0, entropy: float = 0.05,
        balance: float = 0.01, local_search: bool = False, temperature: float = 0.1,
    ) -> None:
        super().__init__(d_model, n_experts, k)
        if n_experts < 2 or n_experts & (n_experts - 1):
            raise SparsecraftError(f"the comet router needs n_experts a power of two >= 2, got {n_experts}")
        self.depth = n_experts.bit_length() - 1
        self.gamma, self.entropy, self.balance = gamma, entropy, balance
        self.temperature = temperature
        self.selector = nn.Linear(d_model, k * (n_experts - 1), bias=False)
        nn.init.uniform_(self.selector.weight, -gamma / 100, gamma / 100)
        self.leaf = nn.Linear(d_model, k * n_experts)
        nn.init.uniform_(self.leaf.weight, -0.05, 0.05)
        nn.init.zeros_(self.leaf.bias)
        self.permutation: nn.Parameter | None = None
        if local_search:
            # scores of putting expert f at leaf e of tree j; near-uniform, so early updates can move experts
            self.permutation = nn.Parameter(0.01 * torch.randn(k, n_experts, n_experts))
        self._leaf_probs: torch.Tensor | None = None

    def leaf_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, k, n_experts)``: probability that tree ``j`` routes each token to each leaf."""
        s = smooth_step(self.selector(x), self.gamma).view(x.shape[0], self.k, self.n_experts - 1)
        probs = x.new_ones(x.shape[0], self.k, 1)
        for level in range(self.depth):
            nodes = s[..., 2**level - 1 : 2 ** (level + 1) - 1]
            probs = torch.stack([probs * nodes, probs * (1 - nodes)], dim=-1).flatten(-2)
        return probs

    def permutation_matrices(self) -> torch.Tensor:
        """``(k, n_experts, n_experts)``: leaf -> expert assignment per tree (identity without local search).

        Forward values are hard permutations; gradients flow through the Sinkhorn-normalised scores.
        """
        if self.permutation is None:
            return torch.eye(self.n_experts, device=self.leaf.weight.device).expand(self.k, -1, -1)
        soft = sinkhorn(self.permutation / self.temperature)
        return nearest_permutation(soft) + soft - soft.detach()

    def forward(self, x: torch.Tensor, seq_len: int | None = None) -> Routing:
        """Route ``x`` ``(T, d_model)``; every expert is a slot, active where its gate is positive."""
        leaf_probs = self.leaf_probabilities(x)
        logits = self.leaf(x).view(x.shape[0], self.k, self.n_experts)
        log_p = torch.where(leaf_probs > 1e-5, torch.log(leaf_probs.clamp_min(1e-6)),
                            torch.full_like(leaf_probs, float("-inf")))
        weights = (logits + log_p).flatten(1).softmax(dim=-1).view_as(logits)
        gates = torch.einsum("tje,jef->tf", weights, self.permutation_matrices())
        gates = gates / gates.sum(dim=-1, keepdim=True)
        self._leaf_probs = leaf_probs
        return Routing(self._all_slots(x), gates, gates, gates > 0)

    def aux_loss(self, routing: Routing, seq_len: int) -> torch.Tensor:
        loss = self.balance * load_balancing_loss(routing, self.n_experts)
        if self.entropy and self._leaf_probs is not None:
            p = self._leaf_probs.clamp_min(1e-6)
            loss = loss + self.entropy * (-(p * p.log()).sum(-1)).mean()
        return loss
