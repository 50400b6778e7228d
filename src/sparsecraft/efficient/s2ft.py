"""S2FT (Yang et al. 2024, "S2FT: Efficient, Scalable and Generalizable LLM Fine-tuning by Structured
Sparsity"): "select sparsely, compute densely".

In every transformer block a few attention heads and FFN channels are selected (at random, as the
paper's default, or by the norm of their output-projection columns). The coupled weights on both sides
of each structure are co-permuted so that the selected heads / channels come first: rows of the
q/k/v projections (whole heads) with columns of the attention output projection, rows (and bias) of
the FFN up projection with columns of the down projection. The permutation does not change the
function. Only the leading columns of the two output projections then train, as one dense
``(out, k)`` sub-matrix each: the backward pass keeps only the selected ``k`` input features of those
layers and the optimizer state is ``out * k`` per layer (partial back-propagation). Merging
concatenates the sub-matrix back and undoes the permutation, so the merged model has the original
layout and architecture: no inference cost.

Blocks are recognised by their modules: sparsecraft's ``SelfAttention`` / ``FeedForward`` (q_proj,
k_proj, v_proj, out_proj; fc1, fc2) and BERT-style layers from transformers (attention.self.query/
key/value, attention.output.dense; intermediate.dense, output.dense), e.g. MiniLM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..options import Option
from .base import METHODS, Adapter, plain_linear, replace_module


@dataclass
class Coupled:
    """One coupled structure: ``producers`` write ``groups`` groups of ``group_size`` output rows each,
    which ``consumer`` reads as the same columns (heads: q/k/v -> out; channels: fc1 -> fc2)."""

    producers: list[str]
    consumer: str
    groups: int
    group_size: int


def coupled_structures(model: nn.Module, within: nn.Module | str | None = None) -> list[tuple[Coupled, Coupled]]:
    """``(attention heads, FFN channels)`` of every transformer block of ``model``, in module order.

    Parameters
    ----------
    model : nn.Module
    within : nn.Module or str, optional
        Only blocks inside this submodule.

    Returns
    -------
    list of (Coupled, Coupled)

    Raises
    ------
    SparsecraftError
        If no block is recognised.
    """
    scope = ""
    if isinstance(within, str):
        scope = within
    elif within is not None:
        scope = next((n for n, m in model.named_modules() if m is within), None)
        if scope is None:
            raise SparsecraftError("the module to select blocks within is not part of the model")
    found = []
    for name, m in model.named_modules():
        if scope and not (name == scope or name.startswith(scope + ".")):
            continue
        p = name + "." if name else ""
        attn, mlp = getattr(m, "attn", None), getattr(m, "mlp", None)
        if attn is not None and mlp is not None and hasattr(attn, "q_proj") and hasattr(mlp, "fc2"):
            heads = Coupled([f"{p}attn.q_proj", f"{p}attn.k_proj", f"{p}attn.v_proj"], f"{p}attn.out_proj",
                            attn.num_heads, attn.head_dim)
            ffn = Coupled([f"{p}mlp.fc1"], f"{p}mlp.fc2", mlp.fc1.out_features, 1)
            found.append((heads, ffn))
        elif hasattr(m, "attention") and hasattr(m, "intermediate") and hasattr(getattr(m, "attention"), "self"):
            s = m.attention.self
            heads = Coupled([f"{p}attention.self.query", f"{p}attention.self.key", f"{p}attention.self.value"],
                            f"{p}attention.output.dense", s.num_attention_heads, s.attention_head_size)
            ffn = Coupled([f"{p}intermediate.dense"], f"{p}output.dense", m.intermediate.dense.out_features, 1)
            found.append((heads, ffn))
    if not found:
        where = f" inside {scope!r}" if scope else ""
        raise SparsecraftError(f"found no transformer block (attention + FFN){where} for S2FT; it knows "
                               "sparsecraft's TinyTransformer and BERT-style transformers models")
    return found


class SplitLinear(nn.Module):
    """``nn.Linear`` whose first ``k`` input columns train: ``y = x[:, :k] W_t^T + x[:, k:] W_f^T + b``.

    Only the ``k`` selected input features are kept for the backward pass (a contiguous copy, so
    the full input can be freed) and only ``weight_train`` ``(out, k)`` has a gradient.
    """

    def __init__(self, base: nn.Linear, k: int) -> None:
        super().__init__()
        w = base.weight.detach()
        self.k = k
        self.weight_train = nn.Parameter(w[:, :k].clone())
        self.register_buffer("weight_frozen", w[:, k:].clone())
        self.register_buffer("bias", None if base.bias is None else base.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x[..., self.k:], self.weight_frozen, self.bias) + F.linear(
            x[..., : self.k].contiguous(), self.weight_train)

    def merged(self) -> nn.Linear:
        return plain_linear(torch.cat([self.weight_train.detach(), self.weight_frozen], 1), self.bias)


def _group_order(selected: torch.Tensor, groups: int, group_size: int) -> torch.Tensor:
    """Element permutation putting the ``selected`` groups first (in order), then the rest."""
    chosen = set(selected.tolist())
    rest = torch.tensor([g for g in range(groups) if g not in chosen], dtype=torch.long)
    order = torch.cat([selected.long(), rest])
    return (order[:, None] * group_size + torch.arange(group_size)).reshape(-1)


@torch.no_grad()
def permute_coupled(model: nn.Module, c: Coupled, perm: torch.Tensor) -> None:
    """Apply the element permutation ``perm`` to the output rows of ``c.producers`` (and their biases)
    and to the input columns of ``c.consumer``; the model computes the same function."""
    for name in c.producers:
        lin = model.get_submodule(name)
        lin.weight.copy_(lin.weight[perm])
        if lin.bias is not None:
            lin.bias.copy_(lin.bias[perm])
    lin = model.get_submodule(c.consumer)
    lin.weight.copy_(lin.weight[:, perm])


def _count(fraction: float, groups: int) -> int:
    return 0 if fraction == 0 else min(groups, max(1, round(fraction * groups)))


@METHODS.register("s2ft")
class S2FT(Adapter):
    """Train a few heads' and FFN channels' columns of each block's output projections, co-permuted to be dense."""

    options = (
        Option("head_fraction", float, 0.25, "fraction of attention heads per block that train", bounds="[0, 1]"),
        Option("channel_fraction", float, 0.0625, "fraction of FFN channels per block that train", bounds="[0, 1]"),
        Option("select", str, "random", "how heads/channels are chosen: at random or by the largest "
               "L2 norm of their output-projection columns", choices=("random", "norm")),
        Option("seed", int, 0, "seed of the random selection"),
    )

    def __init__(self, model: nn.Module, layers: Any = None, keep_dense: Any = (), within: Any = None,
                 head_fraction: float = 0.25, channel_fraction: float = 0.0625, select: str = "random",
                 seed: int = 0) -> None:
        super().__init__(model)
        if layers or keep_dense:
            raise SparsecraftError("s2ft selects whole blocks, not layers; use within= to restrict it to a "
                                   "submodule instead of layers/keep_dense")
        if head_fraction == 0 and channel_fraction == 0:
            raise SparsecraftError("s2ft needs head_fraction or channel_fraction above 0; nothing would train")
        gen = torch.Generator().manual_seed(seed)
        self.layers: dict[str, SplitLinear] = {}
        self.perms: list[tuple[Coupled, torch.Tensor]] = []
        self.selected: dict[str, list[int]] = {}
        for heads, ffn in coupled_structures(model, within):
            for c, fraction in ((heads, head_fraction), (ffn, channel_fraction)):
                k = _count(fraction, c.groups)
                if k == 0:
                    continue
                chosen = self._choose(c, k, select, gen)
                perm = _group_order(chosen, c.groups, c.group_size)
                permute_coupled(model, c, perm)
                self.perms.append((c, perm))
                self.selected[c.consumer] = sorted(chosen.tolist())
                wrapped = SplitLinear(model.get_submodule(c.consumer), k * c.group_size)
                replace_module(model, c.consumer, wrapped)
                self.layers[c.consumer] = wrapped

    def _choose(self, c: Coupled, k: int, select: str, gen: torch.Generator) -> torch.Tensor:
        if select == "random":
            return torch.randperm(c.groups, generator=gen)[:k]
        w = self.model.get_submodule(c.consumer).weight.detach()
        norms = w.pow(2).sum(0).reshape(c.groups, c.group_size).sum(1)
        return torch.topk(norms, k).indices

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [m.weight_train for m in self.layers.values()]

    def _merge(self) -> None:
        for name, m in self.layers.items():
            replace_module(self.model, name, m.merged())
        for c, perm in reversed(self.perms):
            permute_coupled(self.model, c, torch.argsort(perm))
