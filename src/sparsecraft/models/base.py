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
