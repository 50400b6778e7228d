"""Essential sparsity (Jaiswal, Liu, Chen, Wang, "The Emergence of Essential Sparsity in Large
Pre-trained Models: The Weights that Matter", NeurIPS 2023, arXiv:2306.03805).

One-shot magnitude pruning of a pretrained model at sparsities 0, 5, ..., 95% traces a curve that
stays almost flat and then drops sharply; the *essential sparsity* is the sparsity at that sharp
drop. We find it with the Kneedle rule (Satopää et al., "Finding a 'Kneedle' in a Haystack",
ICDCS workshops 2011): normalise both axes to [0, 1] and take the point farthest above the chord
joining the first and last points of the (decreasing, concave) curve.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError
from .pipeline import prune_model

DEFAULT_SPARSITIES = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 ... 0.95


def knee_index(x: Sequence[float], y: Sequence[float]) -> int:
    """Index of the knee of a decreasing curve ``y(x)``: the largest normalised height above the
    chord from ``(x[0], y[0])`` to ``(x[-1], y[-1])``; 0 for a flat or increasing curve."""
    if len(x) != len(y) or len(x) < 3:
        raise SparsecraftError(f"a knee needs at least 3 points with matching x and y, got {len(x)} and {len(y)}")
    xs = torch.tensor(x, dtype=torch.float64)
    ys = torch.tensor(y, dtype=torch.float64)
    span_x, span_y = float(xs[-1] - xs[0]), float(ys[0] - ys[-1])
    if span_x <= 0 or span_y <= 0:
        return 0
    xn = (xs - xs[0]) / span_x
    yn = (ys - ys[-1]) / span_y
    return int(torch.argmax(yn - (1.0 - xn)))


@dataclass
class SweepResult:
    """Metric after one-shot magnitude pruning at each sparsity, and the detected sharp drop."""

    metric: str
    sparsities: list[float]
    values: list[float]
    knee: int

    @property
    def essential_sparsity(self) -> float:
        return self.sparsities[self.knee]

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "sparsities": self.sparsities, "values": self.values,
                "essential_sparsity": self.essential_sparsity, "value_at_knee": self.values[self.knee]}


def magnitude_sweep(
    model: nn.Module,
    metric: Callable[[nn.Module], float],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    name: str = "metric",
    progress: bool = False,
) -> SweepResult:
    """Prune a copy of ``model`` by layer-wise magnitude at each sparsity and evaluate ``metric``
    (higher is better, e.g. cosine similarity to the dense embeddings). ``model`` is not changed."""
    from rich.progress import Progress

    values = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("essential sparsity sweep", total=len(sparsities))
        for s in sparsities:
            pruned = copy.deepcopy(model)
            prune_model(pruned, [], "magnitude", s)
            with torch.no_grad():
                values.append(float(metric(pruned)))
            bar.advance(task)
    return SweepResult(name, [float(s) for s in sparsities], values, knee_index(list(sparsities), values))
