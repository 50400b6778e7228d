"""Small in-project models: ``mlp``, ``cnn`` (a tiny ResNet, 1-D or 2-D), ``transformer`` and ``vit``.

``build_model(name, **kwargs)`` constructs by name; ``model_for_data(name, data, **kwargs)`` sizes
the model for a dataset (input shape, number of classes, classification vs LM);
``model_spec`` / ``build_from_spec`` describe and rebuild a model for checkpoints.
"""
from __future__ import annotations

from ..training.fit import evaluate, evaluate_loss
from .base import MODELS, DataSpec, build_model, model_for_data
from .mlp import MLP
from .resnet import BasicBlock, ResNet1d, ResNetCNN
from .spec import build_from_spec, fits_spec, model_spec
from .train import train_classifier
from .transformer import SelfAttention, TinyTransformer
from .vit import TinyViT

__all__ = [
    "MODELS",
    "MLP",
    "BasicBlock",
    "DataSpec",
    "ResNet1d",
    "ResNetCNN",
    "SelfAttention",
    "TinyTransformer",
    "TinyViT",
    "build_from_spec",
    "build_model",
    "evaluate",
    "evaluate_loss",
    "fits_spec",
    "model_for_data",
    "model_spec",
    "train_classifier",
]
