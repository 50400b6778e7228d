"""The sparsity section of a model card (``README.md``): sparsity per layer, how it was pruned, quality."""
from __future__ import annotations

import math
from typing import Any, Mapping

from torch import nn

from ..sparsifier import report_rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    return str(v).replace("|", "/")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows])


def model_card(model: nn.Module, *, method: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None,
               layer_metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Markdown: the model's sparsity per Linear layer, the pruning method and quality metrics.

    Parameters
    ----------
    model : nn.Module
        The pruned model; the zeros of each Linear weight are counted (masks baked in or not).
    method : mapping, optional
        How it was pruned (``{"method": "wanda", "pattern": "2:4", ...}``); non-scalar values are skipped.
    metrics : mapping, optional
        Quality metrics measured by the caller (``{"cosine to dense": 0.97}``).
    layer_metrics : mapping, optional
        ``{layer name or weight name: {metric: value}}`` added as columns of the per-layer table
        (e.g. posttrain's ``rel_error``).

    Returns
    -------
    str
        A ``## Sparsity (sparsecraft)`` section, ending with a newline.
    """
    weights = {f"{n}.weight": m.weight.detach() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    rows = report_rows({n: w != 0 for n, w in weights.items()})
    extra_cols: list[str] = []
    for r in rows:
        found = (layer_metrics or {}).get(r["layer"]) or (layer_metrics or {}).get(r["layer"].removesuffix(".weight"))
        for k, v in (found or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                r[k] = v
                extra_cols += [k] if k not in extra_cols else []
    total = rows[-1]
    lines = ["## Sparsity (sparsecraft)", "",
             f"{total['sparsity']:.1%} of the {total['params']:,} Linear weights are exact zeros "
             f"({len(rows) - 1} Linear layers; embeddings and other parameters are dense).", ""]
    scalars = {k: v for k, v in (method or {}).items()
               if isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and math.isnan(v))}
    if scalars:
        lines += ["### How it was pruned", ""] + [f"- {k}: {_cell(v)}" for k, v in scalars.items()] + [""]
    if metrics:
        lines += ["### Quality", ""] + _table([{"metric": k, "value": v} for k, v in metrics.items()],
                                              ["metric", "value"]) + [""]
    lines += ["### Sparsity per layer", ""]
    lines += _table(rows, ["layer", "shape", "params", "kept", "sparsity", *extra_cols])
    return "\n".join(lines) + "\n"
