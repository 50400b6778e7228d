"""Sparsifiner: instance-dependent sparse attention for vision transformers from a learned low-rank
connectivity predictor (Wei et al. 2023, "Sparsifiner: Learning Sparse Instance-Dependent Attention
for Efficient Vision Transformers").

Per attention layer and head, a cheap predictor projects the block input ``x`` ``(N, T, d)`` to
rank-``r`` queries and keys, ``q_r = x A_q``, ``k_r = x A_k`` (``d -> heads * r``), and scores every
token pair, ``C = softmax(q_r k_r^T / sqrt(r))`` ``(N, heads, T, T)``. The binarised connectivity
mask keeps the ``budget`` best-scored keys per query, and the layer's attention runs over those keys
only (:func:`sparsecraft.models.vit.attend_to_keys`), so the mask differs per image. The top-k
choice has no gradient: the predictor learns from the dense teacher's attention maps.

Training (:func:`train_sparse_attention`), from a trained dense ViT as teacher and initial weights:

* ``L_cls``: cross-entropy on the labels;
* ``L_distill``: ``KL(teacher logits || student logits)`` (knowledge distillation, as the paper's
  DynamicViT-style recipe);
* ``L_conn``: ``KL(A_teacher || C)`` per layer and head, the connectivity predictor's distillation
  from the teacher's dense attention;
* ``L_sparse``: the row entropy of ``C``, which concentrates the predicted connectivity on few keys
  so that the ``budget`` kept keys hold most of it. (The paper regularises the connectivity scores
  towards sparsity; an L1 norm of a row-softmax is constant, so we penalise its entropy.)

Fixed local windows (each patch's nearest patches, :func:`use_local_windows`) are the structured
baseline; they train with the same ``L_cls + L_distill``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_learning_rate, check_positive_int
from ..models.vit import PatchAttention, TinyViT, local_window_keys


class ConnectivityPredictor(nn.Module):
    """Low-rank connectivity scores and the top-``budget`` key indices per query.

    Parameters
    ----------
    d_model : int
    num_heads : int
    rank : int
        Width ``r`` of the low-rank queries and keys per head.
    budget : int
        Keys kept per query (``B``).

    Attributes
    ----------
    last_connectivity : torch.Tensor of shape (N, heads, T, T) or None
        ``C`` of the last forward.
    """

    def __init__(self, d_model: int, num_heads: int, rank: int, budget: int) -> None:
        super().__init__()
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.rank = check_positive_int(rank, "rank")
        self.budget = check_positive_int(budget, "budget")
        self.q_low = nn.Linear(d_model, num_heads * rank, bias=False)
        self.k_low = nn.Linear(d_model, num_heads * rank, bias=False)
        self.last_connectivity: torch.Tensor | None = None

    def connectivity(self, x: torch.Tensor) -> torch.Tensor:
        """``C = softmax(q_r k_r^T / sqrt(r))`` for block input ``x`` ``(N, T, d)``: ``(N, heads, T, T)``."""
        n, t, _ = x.shape
        q = self.q_low(x).view(n, t, self.num_heads, self.rank).transpose(1, 2)
        k = self.k_low(x).view(n, t, self.num_heads, self.rank).transpose(1, 2)
        return (q @ k.transpose(-1, -2) / math.sqrt(self.rank)).softmax(-1)

    def forward(self, attn: PatchAttention, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Key indices ``(N, heads, T, budget)`` for :class:`PatchAttention` (its selector)."""
        if self.budget > x.shape[1]:
            raise SparsecraftError(f"budget {self.budget} exceeds the {x.shape[1]} tokens per image")
        conn = self.connectivity(x)
        self.last_connectivity = conn
        return conn.detach().topk(self.budget, dim=-1).indices


class LocalWindow:
    """Fixed key sets: each query's ``budget`` nearest patches, the same for every image and head."""

    def __init__(self, grid: int, budget: int) -> None:
        self.keys = local_window_keys(grid, budget)

    def __call__(self, attn: PatchAttention, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n, h = q.shape[:2]
        return self.keys.to(q.device).expand(n, h, *self.keys.shape)


def use_sparsifiner(model: TinyViT, budget: int, rank: int = 4, seed: int = 0) -> list[ConnectivityPredictor]:
    """Give every attention layer of ``model`` a connectivity predictor keeping ``budget`` keys per query.

    Parameters
    ----------
    model : TinyViT
        Changed in place.
    budget : int
        Keys per query, in ``[1, T]``.
    rank : int, default=4
        Low-rank width per head.
    seed : int, default=0
        Seeds the predictors' initial weights.

    Returns
    -------
    list of ConnectivityPredictor
        One per layer, first layer first.
    """
    _check_budget(model, budget)
    predictors = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for attn in model.attentions():
            pred = ConnectivityPredictor(attn.q_proj.in_features, attn.num_heads, rank, budget)
            attn.set_selector(pred)
            predictors.append(pred)
    return predictors


def use_local_windows(model: TinyViT, budget: int) -> None:
    """Restrict every attention layer of ``model`` to each patch's ``budget`` nearest patches (in place)."""
    _check_budget(model, budget)
    for attn in model.attentions():
        attn.set_selector(LocalWindow(model.grid, budget))


def use_dense_attention(model: TinyViT) -> None:
    """Remove any key selection: every layer attends densely again (in place)."""
    for attn in model.attentions():
        attn.set_selector(None)


def _check_budget(model: TinyViT, budget: int) -> None:
    if not isinstance(model, TinyViT):
        raise SparsecraftError(f"sparse ViT attention needs a TinyViT, got {type(model).__name__}")
    if not (isinstance(budget, int) and 1 <= budget <= model.num_tokens):
        raise SparsecraftError(f"budget must be an int in [1, {model.num_tokens}] keys per query, got {budget!r}")


def attention_macs(model: TinyViT, budget: int | None = None, rank: int | None = None) -> dict[str, int]:
    """Multiply-accumulates per image of the multi-head self-attention layers.

    Parameters
    ----------
    model : TinyViT
    budget : int, optional
        Keys per query; ``None`` is dense attention (``T`` keys).
    rank : int, optional
        Low-rank width of a connectivity predictor per head (its projections ``2 T d H r`` and scores
        ``H T^2 r`` are added); ``None``: no predictor (dense or fixed windows).

    Returns
    -------
    dict
        ``attention`` (``Q K^T`` and ``A V``: ``2 T B d``), ``predictor``, ``projections`` (q, k, v,
        out: ``4 T d^2``) and ``mhsa`` (their sum), each summed over the layers.
    """
    t = model.num_tokens
    keys = t if budget is None else budget
    layers = model.attentions()
    d = layers[0].q_proj.in_features
    heads = layers[0].num_heads
    attention = len(layers) * 2 * t * keys * d
    predictor = 0 if rank is None else len(layers) * (2 * t * d * heads * rank + heads * t * t * rank)
    projections = len(layers) * 4 * t * d * d
    return {"attention": attention, "predictor": predictor, "projections": projections,
            "mhsa": attention + predictor + projections}


@dataclass
class SparseAttentionHistory:
    """Per-epoch means of the loss terms of :func:`train_sparse_attention`.

    Attributes
    ----------
    cls, distill, conn, sparse : list of float
    """

    cls: list[float] = field(default_factory=list)
    distill: list[float] = field(default_factory=list)
    conn: list[float] = field(default_factory=list)
    sparse: list[float] = field(default_factory=list)


def train_sparse_attention(
    student: TinyViT,
    teacher: TinyViT,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    distill_weight: float = 1.0,
    conn_weight: float = 1.0,
    sparse_weight: float = 0.01,
    seed: int = 0,
) -> SparseAttentionHistory:
    """Fine-tune a sparse-attention ``student`` against a dense ``teacher`` with the Sparsifiner losses.

    ``L = L_cls + distill_weight L_distill + conn_weight L_conn + sparse_weight L_sparse`` (module
    docstring); the connectivity terms apply only to layers with a :class:`ConnectivityPredictor`
    (fixed windows train with ``L_cls + L_distill``). AdamW at a constant learning rate.

    Parameters
    ----------
    student : TinyViT
        Sparse attention installed (:func:`use_sparsifiner` or :func:`use_local_windows`); trained in place.
    teacher : TinyViT
        Dense, same ``num_tokens``; frozen.
    x : torch.Tensor of shape (N, C, S, S)
    y : torch.Tensor of int64, shape (N,)
    epochs, batch_size, seed : int
    lr : float
    distill_weight, conn_weight, sparse_weight : float
        Non-negative loss weights.

    Returns
    -------
    SparseAttentionHistory
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_learning_rate(lr)
    for value, name in ((distill_weight, "distill_weight"), (conn_weight, "conn_weight"),
                        (sparse_weight, "sparse_weight")):
        if not (math.isfinite(value) and value >= 0):
            raise SparsecraftError(f"{name} must be finite and >= 0, got {value}")
    if teacher.num_tokens != student.num_tokens or any(a.selector is not None for a in teacher.attentions()):
        raise SparsecraftError("the teacher must be a dense TinyViT with the student's number of patches")
    if len(x) != len(y):
        raise SparsecraftError(f"x has {len(x)} rows but y has {len(y)}")
    teacher.eval()
    for attn in teacher.attentions():
        attn.record = True
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = SparseAttentionHistory()
    try:
        for _ in range(epochs):
            student.train()
            sums = torch.zeros(4)
            batches = 0
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                with torch.no_grad():
                    t_logits = teacher(x[idx])
                t_attn = [a.last_attention for a in teacher.attentions()]
                logits = student(x[idx])
                terms = _loss_terms(student, logits, t_logits, t_attn, y[idx])
                loss = (terms[0] + distill_weight * terms[1] + conn_weight * terms[2]
                        + sparse_weight * terms[3])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([t.detach() for t in terms])
                batches += 1
            for name, value in zip(("cls", "distill", "conn", "sparse"), (sums / batches).tolist()):
                getattr(history, name).append(value)
    finally:
        for attn in teacher.attentions():
            attn.record = False
            attn.last_attention = None
    student.eval()
    return history


def _loss_terms(student: TinyViT, logits: torch.Tensor, t_logits: torch.Tensor,
                t_attn: list[torch.Tensor | None], y: torch.Tensor) -> list[torch.Tensor]:
    cls = F.cross_entropy(logits, y)
    distill = F.kl_div(logits.log_softmax(-1), t_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    conn = logits.new_zeros(())
    sparse = logits.new_zeros(())
    for attn, target in zip(student.attentions(), t_attn):
        pred = attn.selector
        if isinstance(pred, ConnectivityPredictor) and pred.last_connectivity is not None:
            c = pred.last_connectivity.clamp_min(1e-9)
            conn = conn + (target * (target.clamp_min(1e-9).log() - c.log())).sum(-1).mean()
            sparse = sparse + -(c * c.log()).sum(-1).mean()
    return [cls, distill, conn, sparse]


@torch.no_grad()
def kept_teacher_mass(student: TinyViT, teacher: TinyViT, x: torch.Tensor) -> float:
    """Share of the dense teacher's attention probability that falls on the student's kept keys.

    Both see the same images; the student's key sets come from its own selectors.

    Parameters
    ----------
    student, teacher : TinyViT
    x : torch.Tensor of shape (N, C, S, S)

    Returns
    -------
    float
        Mean over layers, heads and queries of ``sum_{j kept} A_teacher[i, j]`` (1.0 for dense).
    """
    if any(a.selector is None for a in student.attentions()):
        raise SparsecraftError("kept_teacher_mass needs a student with sparse attention in every layer")
    models = (student, teacher)
    for model in models:
        model.eval()
        for attn in model.attentions():
            attn.record = True
    try:
        student(x)
        teacher(x)
        masses = [t.last_attention.gather(-1, s.last_keys).sum(-1).mean()
                  for s, t in zip(student.attentions(), teacher.attentions())]
    finally:
        for model in models:
            for attn in model.attentions():
                attn.record = False
                attn.last_attention = attn.last_keys = None
    return float(torch.stack(masses).mean())


__all__ = [
    "ConnectivityPredictor",
    "LocalWindow",
    "SparseAttentionHistory",
    "attention_macs",
    "kept_teacher_mass",
    "train_sparse_attention",
    "use_dense_attention",
    "use_local_windows",
    "use_sparsifiner",
]
