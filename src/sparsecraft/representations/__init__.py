"""Sparse representations: activation sparsity, sparse autoencoders, MoE routing, top-k attention.

* :mod:`.activations`: measure near-zero activations per layer; ``TopKActivation`` and
  ``sparsify_activations`` enforce k active MLP units per token (Lazy Neuron Phenomenon).
* :mod:`.sae`: ``SparseAutoencoder`` with TopK / feature-choice / mutual-choice rules (``SAE_RULES``).
* :mod:`.moe`: ``MoEFeedForward`` top-k router with a Switch-style load-balancing loss.
* :mod:`.attention`: ``TopKSelfAttention`` (k keys per query, optionally ranked by Double Sparsity
  label channels) and ``sparsify_attention`` for ``TinyTransformer``.
"""
from __future__ import annotations

from .activations import (
    ActivationMonitor,
    LayerActivationSparsity,
    TopKActivation,
    activation_sparsity,
    measure_activation_sparsity,
    sparsify_activations,
    topk_mask,
)
from .attention import TopKSelfAttention, calibrate_label_channels, sparsify_attention
from .moe import MoEFeedForward, Routing, load_balancing_loss, moe_aux_loss, use_moe
from .sae import (
    SAE_RULES,
    SAEHistory,
    SparseAutoencoder,
    dictionary_recovery,
    feature_choice_m,
    reconstruction_mse,
    sparse_dictionary_data,
    train_sae,
)

__all__ = [
    "SAE_RULES",
    "ActivationMonitor",
    "LayerActivationSparsity",
    "MoEFeedForward",
    "Routing",
    "SAEHistory",
    "SparseAutoencoder",
    "TopKActivation",
    "TopKSelfAttention",
    "activation_sparsity",
    "calibrate_label_channels",
    "dictionary_recovery",
    "feature_choice_m",
    "load_balancing_loss",
    "measure_activation_sparsity",
    "moe_aux_loss",
    "reconstruction_mse",
    "sparse_dictionary_data",
    "sparsify_activations",
    "sparsify_attention",
    "topk_mask",
    "train_sae",
    "use_moe",
]
