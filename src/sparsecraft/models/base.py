"""The model registry and the dataset -> model glue shared by all in-project models."""
from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from ..errors import SparsecraftError
from ..registry import Registry


class DataSpec(Protocol):
    """What a model needs to know about a dataset (``sparsecraft.data.DataSplits`` has it)."""

    num_classes: int
    input_shape: tuple[int, ...]
    task: str


class FromData(Protocol):
    """A model class that can size itself for a dataset."""

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> nn.Module: ...


MODELS: Registry[Any] = Registry("model")


def require_task(model: str, spec: DataSpec, *tasks: str) -> None:
    """Raise a one-line error if ``spec.task`` is not one ``model`` supports."""
    if spec.task not in tasks:
        raise SparsecraftError(
            f"model {model!r} does not support {spec.task!r} data; it handles: {', '.join(tasks)}"
        )


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct model ``name`` (see ``MODELS.names()``) with its constructor ``kwargs``.

    Parameters
    ----------
    name : str
        A registered model name (``"mlp"``, ``"cnn"``, ``"transformer"``).
    **kwargs
        Constructor arguments of that model class.

    Returns
    -------
    nn.Module
        A freshly initialised model (from the global torch RNG).
    """
    return MODELS.get(name)(**kwargs)


def model_for_data(name: str, data: DataSpec, **kwargs: Any) -> nn.Module:
    """Construct model ``name`` sized for ``data``.

    Parameters
    ----------
    name : str
        A registered model name.
    data : DataSpec
        Anything with ``num_classes``, ``input_shape`` and ``task`` (a ``DataSplits``).
    **kwargs
        Override the sizes the model would choose for ``data``.

    Returns
    -------
    nn.Module
    """
    return MODELS.get(name).for_data(data, **kwargs)
