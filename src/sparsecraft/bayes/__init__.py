"""Bayesian neural networks: mean-field Gaussian layers, calibration metrics, and Sparse Subspace
Variational Inference (SSVI), whose posterior lives on a sparse subspace of fixed size.

``variational``: :class:`BayesLinear` (an ``nn.Linear`` whose ``weight`` is the posterior mean, so
the pruning pipeline's selector and Sparsifier treat it as any Linear), :class:`BayesMLP`,
:func:`kl_divergence`, :func:`elbo_loss`, :func:`predict` (Monte-Carlo predictive) and the metrics
:func:`expected_calibration_error` / :func:`predictive_metrics`. ``ssvi``: the :class:`SSVI` updater
and :func:`train_bayes`.
"""
from .ssvi import REMOVAL_CRITERIA, SSVI, train_bayes
from .variational import (
    BayesLinear,
    BayesMLP,
    elbo_loss,
    expected_calibration_error,
    kl_divergence,
    predict,
    predictive_metrics,
)

__all__ = [
    "REMOVAL_CRITERIA", "SSVI", "BayesLinear", "BayesMLP", "elbo_loss", "expected_calibration_error",
    "kl_divergence", "predict", "predictive_metrics", "train_bayes",
]
