"""Model specs: a JSON-able description of an in-project model, stored with checkpoints so that a
model can be rebuilt without its training data."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from torch import nn

from .base import build_model, model_for_data
from .hf import HF, from_hf_spec


def model_spec(name: str, data: Any, **kwargs: Any) -> dict[str, Any]:
    """JSON-able description of in-project model ``name`` sized for ``data``.

    Store it with a checkpoint (``Sparsifier.save(..., model_spec=...)``) so that
    ``read_checkpoint(path).build_model()`` can rebuild the model without the data.

    Parameters
    ----------
    name : str
        A registered model name.
    data : DataSplits
        The dataset the model is sized for (its ``name``, ``input_shape``, ``num_classes``, ``task``).
    **kwargs
        Constructor overrides passed to :func:`model_for_data`.

    Returns
    -------
    dict
        ``{"name", "kwargs", "data": {"name", "input_shape", "num_classes", "task"}}``.
    """
    return {"name": name, "kwargs": kwargs,
            "data": {"name": data.name, "input_shape": list(data.input_shape),
                     "num_classes": data.num_classes, "task": data.task}}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Construct the (untrained) model a spec describes.

    Parameters
    ----------
    spec : dict
        From :func:`model_spec` (without a ``"data"`` entry the ``kwargs`` alone size the model),
        or from :func:`sparsecraft.models.hf.hf_spec` (a transformers model rebuilt from its config).

    Returns
    -------
    nn.Module
    """
    if spec.get("name") == HF:
        return from_hf_spec(spec)
    if spec.get("data"):
        data = SimpleNamespace(**{**spec["data"], "input_shape": tuple(spec["data"]["input_shape"])})
        return model_for_data(spec["name"], data, **spec.get("kwargs", {}))
    return build_model(spec["name"], **spec.get("kwargs", {}))


def fits_spec(model: nn.Module, spec: dict[str, Any]) -> bool:
    """True when ``model`` has exactly the state (names and shapes) that ``build_from_spec(spec)`` has.

    A model whose channels were removed physically (``masksparsity``) no longer fits its spec, so
    its checkpoint must not claim it.

    Parameters
    ----------
    model : nn.Module
    spec : dict
        From :func:`model_spec`.

    Returns
    -------
    bool
    """
    fresh = build_from_spec(spec).state_dict()
    mine = model.state_dict()
    return fresh.keys() == mine.keys() and all(fresh[k].shape == mine[k].shape for k in fresh)
