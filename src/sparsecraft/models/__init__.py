"""Small in-project models: ``mlp``, ``cnn`` (a tiny ResNet, 1-D or 2-D) and ``transformer``.

``build_model(name, **kwargs)`` constructs by name; ``model_for_data(name, data, **kwargs)`` sizes
the model for a dataset (input shape, number of classes, classification vs LM).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .base import MODELS, DataSpec
from .mlp import MLP
from .resnet import BasicBlock, ResNet1d, ResNetCNN
from .train import TrainHistory, evaluate, evaluate_loss, train_classifier
from .transformer import SelfAttention, TinyTransformer


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct model ``name`` (see ``MODELS.names()``) with its constructor ``kwargs``."""
    return MODELS.get(name)(**kwargs)


def model_for_data(name: str, data: DataSpec, **kwargs: Any) -> nn.Module:
    """Construct model ``name`` sized for ``data`` (a ``DataSplits``); ``kwargs`` override defaults."""
    return MODELS.get(name).for_data(data, **kwargs)


__all__ = [
    "MODELS",
    "MLP",
    "BasicBlock",
    "ResNet1d",
    "ResNetCNN",
    "SelfAttention",
    "TinyTransformer",
    "TrainHistory",
    "build_model",
    "evaluate",
    "evaluate_loss",
    "model_for_data",
    "train_classifier",
]
