"""Sparse representations: activation sparsity, sparse autoencoders, MoE routing, top-k attention.

* :mod:`.activations`: measure near-zero activations per layer; ``TopKActivation`` and
  ``sparsify_activations`` enforce k active MLP units per token (Lazy Neuron Phenomenon).
* :mod:`.sparse_ffn`: ``SparseActivationFFN`` computes a ReLU FFN over its active units only
  (each token's rows of a transposed ``W2``; optional low-rank ``ActivePredictor`` to skip ``W1``
  rows too); ``relufy`` / ``use_sparse_ffn`` swap them into a ``TinyTransformer``.
* :mod:`.sae`: ``SparseAutoencoder`` with TopK / feature-choice (uniform or Zipf capacities) /
  mutual-choice rules (``SAE_RULES``) and the aux_k / aux_zipf losses (``SAE_AUX_LOSSES``).
* :mod:`.moe`: ``MoEFeedForward`` (experts + a router from ``ROUTERS``, chunk-sparse inference).
* :mod:`.routers`: ``ROUTERS``: ``topk`` (Switch balance loss), ``blockffn`` (ReLU + RMSNorm,
  chunk-level sparsity objectives), ``comet`` (tree gate, permutation local search); TLS / CLS.
* :mod:`.sparsifiner`: Sparsifiner's learned low-rank connectivity predictor (instance-dependent
  sparse attention for ``models.TinyViT``), fixed local windows, and the distillation losses.
* :mod:`.attention`: ``TopKSelfAttention`` (k keys per query, optionally ranked by Double Sparsity
  label channels) and ``sparsify_attention`` for ``TinyTransformer``.
* :mod:`.double_sparsity`: Double Sparsity at decode time: ``LabelKVCache`` (label channels kept
  contiguous apart from the full K/V), ``sparse_decode_attention``, ``DoubleSparseDecoder``.
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
from .attention import TopKSelfAttention, calibrate_label_channels, check_label_channels, sparsify_attention
from .double_sparsity import (
    DoubleSparseDecoder,
    LabelKVCache,
    decode_quality,
    dense_decode_attention,
    random_label_channels,
    select_tokens,
    sparse_decode_attention,
)
from .moe import MoEFeedForward, PackedExperts, moe_aux_loss, routing_masks, use_moe
from .routers import (
    ROUTERS,
    BlockFFNRouter,
    COMETRouter,
    Router,
    Routing,
    TopKRouter,
    activation_locality_loss,
    build_router,
    chunk_level_sparsity,
    chunk_sparsification_loss,
    load_balancing_loss,
    smooth_step,
    token_level_sparsity,
)
from .sae import (
    SAE_AUX_LOSSES,
    SAE_RULES,
    FeatureUsage,
    SAEHistory,
    SparseAutoencoder,
    active_matches,
    auxiliary_loss,
    dictionary_recovery,
    feature_capacities,
    fit_zipf,
    reconstruction_mse,
    sparse_dictionary_data,
    train_sae,
    zipf_density,
)
from .sparse_ffn import (
    ActivePredictor,
    SparseActivationFFN,
    predictor_recall,
    relufy,
    train_predictor,
    use_sparse_ffn,
)
from .sparsifiner import (
    ConnectivityPredictor,
    attention_macs,
    kept_teacher_mass,
    train_sparse_attention,
    use_dense_attention,
    use_local_windows,
    use_sparsifiner,
)

__all__ = [
    "ActivePredictor",
    "SparseActivationFFN",
    "predictor_recall",
    "relufy",
    "train_predictor",
    "use_sparse_ffn",
    "ROUTERS",
    "BlockFFNRouter",
    "COMETRouter",
    "Router",
    "TopKRouter",
    "activation_locality_loss",
    "build_router",
    "chunk_level_sparsity",
    "chunk_sparsification_loss",
    "routing_masks",
    "smooth_step",
    "token_level_sparsity",
    "ConnectivityPredictor",
    "attention_macs",
    "kept_teacher_mass",
    "train_sparse_attention",
    "use_dense_attention",
    "use_local_windows",
    "use_sparsifiner",
    "SAE_AUX_LOSSES",
    "SAE_RULES",
    "FeatureUsage",
    "ActivationMonitor",
    "DoubleSparseDecoder",
    "LabelKVCache",
    "LayerActivationSparsity",
    "MoEFeedForward",
    "PackedExperts",
    "Routing",
    "SAEHistory",
    "SparseAutoencoder",
    "TopKActivation",
    "TopKSelfAttention",
    "activation_sparsity",
    "active_matches",
    "auxiliary_loss",
    "calibrate_label_channels",
    "check_label_channels",
    "decode_quality",
    "dense_decode_attention",
    "dictionary_recovery",
    "feature_capacities",
    "fit_zipf",
    "load_balancing_loss",
    "measure_activation_sparsity",
    "moe_aux_loss",
    "random_label_channels",
    "reconstruction_mse",
    "select_tokens",
    "sparse_decode_attention",
    "sparse_dictionary_data",
    "sparsify_activations",
    "sparsify_attention",
    "topk_mask",
    "train_sae",
    "use_moe",
    "zipf_density",
]
