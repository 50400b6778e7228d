"""A ReLU feed-forward block that computes only over its non-zero activations.

Li et al. 2023, "The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in Transformers"
(ICLR), report that a few percent of a trained transformer's ReLU MLP activations are non-zero per
token, and that this sparsity could cut the MLP's cost. :class:`SparseActivationFFN` makes it pay:

* the second Linear is stored transposed, ``w2t`` of shape ``(hidden, d_out)``, so the row of each
  active hidden unit is contiguous; each token sums the rows of its own active units weighted by
  their activations (one ``F.embedding_bag`` call per token block, no copy of the gathered rows),
  skipping every zero. The result equals the dense block.
* Amdahl: the first Linear is needed to know which units are active, so with it dense the block can
  be at most ~2x faster. An optional :class:`ActivePredictor` (a low-rank map ``x -> logits``
  trained on the model's own activations, as in Liu et al. 2023, "Deja Vu: Contextual Sparsity for
  Efficient LLMs at Inference Time") picks ``candidates`` units per token block before the first
  Linear, so both Linears only touch those rows. Units missed by the predictor are lost (its recall
  is measured by :func:`predictor_recall`); the result is then an approximation.
* ``k`` keeps only the ``k`` largest activations per token (top-k, a guaranteed budget).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from .activations import TopKActivation, topk_mask


class ActivePredictor(nn.Module):
    """Low-rank predictor of which hidden units of a ReLU FFN fire: ``(..., d) -> (..., hidden)`` logits.

    Parameters
    ----------
    d_in : int
        Input width of the FFN.
    hidden : int
        Hidden width of the FFN.
    rank : int
        Width of the bottleneck; costs ``rank * (d_in + hidden)`` multiply-adds per token.
    """

    def __init__(self, d_in: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(check_positive_int(d_in, "d_in"), check_positive_int(rank, "rank"), bias=False)
        self.up = nn.Linear(rank, check_positive_int(hidden, "hidden"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., hidden)``; positive means "predicted active"."""
        return self.up(self.down(x))


def _check_relu(act: nn.Module) -> int | None:
    """The top-k budget encoded in ``act`` (None: plain ReLU); raise for other activations."""
    if isinstance(act, nn.ReLU):
        return None
    if isinstance(act, nn.Sequential) and len(act) == 2 and isinstance(act[0], nn.ReLU) \
            and isinstance(act[1], TopKActivation) and act[1].k is not None:
        return act[1].k
    raise SparsecraftError(
        f"SparseActivationFFN needs an nn.ReLU activation (optionally followed by TopKActivation(k=...)), "
        f"got {type(act).__name__}; ReLU-fy the model first (relufy)"
    )


class SparseActivationFFN(nn.Module):
    """``fc2(relu(fc1(x)))`` (optionally top-k) computed over the active hidden units only.

    Input ``(..., d_in)``, output ``(..., d_out)``. The second Linear is one ``embedding_bag`` per
    token block: each token sums the rows of ``w2t`` of its own active units, weighted by their
    activations (no copy of the gathered rows). With no predictor the output equals the dense block
    (to float rounding).

    Parameters
    ----------
    fc1, fc2 : nn.Linear
        ``fc1``: ``d_in -> hidden``; ``fc2``: ``hidden -> d_out``. Weights are copied.
    k : int, optional
        Keep the ``k`` largest activations per token (top-k budget); None keeps every positive one.
    block_size : int, optional
        Tokens sharing one predicted set of units (None: the whole input is one block). Without a
        predictor it only bounds the work per step: each token always reads only its own active rows.
    predictor : ActivePredictor, optional
        If given, only the ``candidates`` units with the largest predicted logits (union over the
        block) are computed in both Linears.
    candidates : int, optional
        Units per token taken from the predictor (required with ``predictor``).

    Attributes
    ----------
    last_active : torch.Tensor or None
        int64 ``(n_tokens,)``: non-zero activations of each token in the last forward.
    last_gathered : int
        Weight rows read in the last forward: W2 rows summed over tokens, plus the W1 rows of the
        predicted sets (summed over blocks).
    """

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, k: int | None = None, block_size: int | None = None,
                 predictor: ActivePredictor | None = None, candidates: int | None = None) -> None:
        super().__init__()
        if fc1.out_features != fc2.in_features:
            raise SparsecraftError(
                f"fc1 gives {fc1.out_features} hidden units but fc2 takes {fc2.in_features}; pass the "
                "two Linears of one FFN"
            )
        hidden = fc1.out_features
        self.k = None if k is None else min(check_positive_int(k, "k"), hidden)
        self.block_size = None if block_size is None else check_positive_int(block_size, "block_size")
        if (predictor is None) != (candidates is None):
            raise SparsecraftError("give predictor and candidates together (candidates: units per token kept)")
        if predictor is not None:
            if predictor.up.out_features != hidden or predictor.down.in_features != fc1.in_features:
                raise SparsecraftError(
                    f"predictor maps {predictor.down.in_features} -> {predictor.up.out_features} but the FFN "
                    f"is {fc1.in_features} -> {hidden}; train it on this FFN"
                )
            candidates = min(check_positive_int(candidates, "candidates"), hidden)
        self.predictor = predictor
        self.candidates = candidates
        with torch.no_grad():
            self.w1 = nn.Parameter(fc1.weight.detach().clone().contiguous(), requires_grad=False)
            b1 = fc1.bias.detach().clone() if fc1.bias is not None else torch.zeros(hidden)
            self.b1 = nn.Parameter(b1, requires_grad=False)
            self.w2t = nn.Parameter(fc2.weight.detach().t().contiguous(), requires_grad=False)
            b2 = fc2.bias.detach().clone() if fc2.bias is not None else torch.zeros(fc2.out_features)
            self.b2 = nn.Parameter(b2, requires_grad=False)
        self.last_active: torch.Tensor | None = None
        self.last_gathered = 0

    @classmethod
    def from_feedforward(cls, ffn: nn.Module, **kwargs: object) -> "SparseActivationFFN":
        """Build from a module with ``fc1``, ``act``, ``fc2`` (``TinyTransformer``'s ``FeedForward``).

        A ``TopKActivation(k=...)`` after the ReLU (from :func:`sparsify_activations`) becomes ``k``.
        """
        if not all(hasattr(ffn, a) for a in ("fc1", "act", "fc2")):
            raise SparsecraftError(f"{type(ffn).__name__} has no fc1/act/fc2; pass a FeedForward block")
        k = _check_relu(ffn.act)
        if k is not None:
            kwargs.setdefault("k", k)
        return cls(ffn.fc1, ffn.fc2, **kwargs)  # type: ignore[arg-type]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.w1.shape[1]:
            raise SparsecraftError(f"input has {x.shape[-1]} features, the FFN expects {self.w1.shape[1]}")
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[0]
        block = n if self.block_size is None else self.block_size
        out = torch.empty(n, self.w2t.shape[1], dtype=flat.dtype)
        active = torch.empty(n, dtype=torch.int64)
        gathered = 0
        for start in range(0, n, max(block, 1)):
            xb = flat[start : start + block]
            if self.predictor is None:
                rows = None
                h = F.relu(F.linear(xb, self.w1, self.b1))
            else:
                rows = self.predictor(xb).topk(self.candidates, dim=-1).indices
                rows = rows[0] if len(xb) == 1 else rows.unique()
                h = F.relu(F.linear(xb, self.w1.index_select(0, rows), self.b1.index_select(0, rows)))
                gathered += len(rows)
            if self.k is not None and self.k < h.shape[-1]:
                h = h * topk_mask(h, self.k)
            tok, col = h.nonzero(as_tuple=True)  # row-major: each token's active units are contiguous
            counts = torch.bincount(tok, minlength=len(xb))
            offsets = torch.zeros_like(counts)
            offsets[1:] = counts.cumsum(0)[:-1]
            units = col if rows is None else rows.index_select(0, col)
            # one bag per token: sum of its active units' W2 rows weighted by their activations
            out[start : start + len(xb)] = F.embedding_bag(units, self.w2t, offsets, mode="sum",
                                                           per_sample_weights=h[tok, col]) + self.b2
            active[start : start + len(xb)] = counts
            gathered += len(units)
        self.last_active = active
        self.last_gathered = gathered
        return out.reshape(*x.shape[:-1], -1)

    def extra_repr(self) -> str:
        return (f"d_in={self.w1.shape[1]}, hidden={self.w1.shape[0]}, d_out={self.w2t.shape[1]}, k={self.k}, "
                f"block_size={self.block_size}, candidates={self.candidates}")


def relufy(model: nn.Module) -> list[str]:
    """Replace every ``FeedForward``-style ``act`` (a module with ``fc1``/``act``/``fc2``) by ``nn.ReLU`` in place.

    The "ReLU-fication" of a GELU model; fine-tune afterwards to recover quality.

    Returns
    -------
    list of str
        Names of the replaced activation modules.
    """
    blocks = [(n, m) for n, m in model.named_modules() if all(hasattr(m, a) for a in ("fc1", "act", "fc2"))]
    if not blocks:
        raise SparsecraftError("model has no FeedForward block (fc1/act/fc2) to ReLU-fy")
    names = []
    for name, module in blocks:
        if not isinstance(module.act, nn.ReLU):
            module.act = nn.ReLU()
            names.append(f"{name}.act" if name else "act")
    return names


def use_sparse_ffn(model: nn.Module, **kwargs: object) -> list[str]:
    """Swap every ReLU ``FeedForward`` block of ``model`` for a :class:`SparseActivationFFN` (in place).

    Parameters
    ----------
    model : nn.Module
    **kwargs
        Passed to :class:`SparseActivationFFN` (``k``, ``block_size``); a ``predictors`` dict by block
        name with ``candidates`` attaches a trained :class:`ActivePredictor` per block.

    Returns
    -------
    list of str
        Names of the replaced blocks.
    """
    predictors: dict[str, ActivePredictor] = kwargs.pop("predictors", None) or {}  # type: ignore[assignment]
    targets = [(n, m) for n, m in model.named_modules() if all(hasattr(m, a) for a in ("fc1", "act", "fc2"))]
    if not targets:
        raise SparsecraftError("model has no FeedForward block (fc1/act/fc2) to make sparse")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        extra = dict(kwargs)
        if name in predictors:
            extra["predictor"] = predictors[name]
        elif predictors:
            extra.pop("candidates", None)
        setattr(parent, child, SparseActivationFFN.from_feedforward(module, **extra))
    return [n for n, _ in targets]


@torch.no_grad()
def collect_ffn_inputs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Inputs of every FeedForward block (``fc1``/``act``/``fc2``) of ``model`` on ``inputs``.

    Parameters
    ----------
    model : nn.Module
        Run as is (set eval mode first).
    inputs : torch.Tensor of shape (N, ...)
        Model inputs.
    batch_size : int, default=64

    Returns
    -------
    dict of str to torch.Tensor
        Block name -> ``(n_tokens, d_in)`` FFN inputs, tokens of all inputs stacked.
    """
    blocks = [(n, m) for n, m in model.named_modules() if all(hasattr(m, a) for a in ("fc1", "act", "fc2"))]
    if not blocks:
        raise SparsecraftError("model has no FeedForward block (fc1/act/fc2) to collect inputs of")
    seen: dict[str, list[torch.Tensor]] = {n: [] for n, _ in blocks}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen[n].append(args[0].flatten(0, -2)))
               for n, m in blocks]
    try:
        for start in range(0, len(inputs), check_positive_int(batch_size, "batch_size")):
            model(inputs[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def train_predictor(fc1: nn.Linear, inputs: torch.Tensor, rank: int, steps: int = 300, lr: float = 1e-2,
                    batch_size: int = 256, seed: int = 0) -> ActivePredictor:
    """Fit an :class:`ActivePredictor` to ``relu(fc1(x)) > 0`` with a class-balanced BCE loss.

    Parameters
    ----------
    fc1 : nn.Linear
        The FFN's first Linear (``d_in -> hidden``).
    inputs : torch.Tensor of shape (N, d_in)
        FFN inputs collected from the model (e.g. the block's ``ln2`` outputs).
    rank : int
    steps, batch_size : int
    lr : float
        Adam learning rate.
    seed : int

    Returns
    -------
    ActivePredictor
        In eval mode.
    """
    if inputs.dim() != 2 or inputs.shape[1] != fc1.in_features:
        raise SparsecraftError(
            f"inputs must be (N, {fc1.in_features}) FFN inputs, got {tuple(inputs.shape)}"
        )
    steps = check_positive_int(steps, "steps")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pred = ActivePredictor(fc1.in_features, fc1.out_features, rank)
    with torch.no_grad():
        labels = (fc1(inputs) > 0).float()
    pos = labels.mean().clamp(1e-4, 1 - 1e-4)
    weight = (1 - pos) / pos  # rare positives: missing one costs as much as all false alarms together
    opt = torch.optim.Adam(pred.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=gen)
        loss = F.binary_cross_entropy_with_logits(pred(inputs[idx]), labels[idx], pos_weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pred.eval()


@torch.no_grad()
def predictor_recall(predictor: ActivePredictor, fc1: nn.Linear, inputs: torch.Tensor, candidates: int) -> float:
    """Share of truly active units (``fc1(x) > 0``) among the ``candidates`` top-predicted ones.

    Parameters
    ----------
    predictor : ActivePredictor
    fc1 : nn.Linear
    inputs : torch.Tensor of shape (N, d_in)
    candidates : int
        Units per token kept from the predictor.

    Returns
    -------
    float
        In [0, 1]; 1.0 when no unit is active.
    """
    candidates = min(check_positive_int(candidates, "candidates"), fc1.out_features)
    truth = fc1(inputs) > 0
    picked = torch.zeros_like(truth).scatter_(-1, predictor(inputs).topk(candidates, -1).indices, True)
    total = int(truth.sum())
    return float((truth & picked).sum()) / total if total else 1.0
