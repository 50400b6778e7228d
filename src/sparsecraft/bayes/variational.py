"""Mean-field Gaussian variational layers and the metrics of a predictive distribution.

A :class:`BayesLinear` holds q(w) = N(mu, sigma^2) per weight and bias, ``sigma = softplus(rho)``
(Blundell et al. 2015, "Weight Uncertainty in Neural Networks"); each training forward pass draws
one sample by the reparameterisation trick ``w = mu + sigma * eps``. It subclasses ``nn.Linear``
with ``weight`` = mu, so :func:`sparsecraft.find_targets` selects it and a
:class:`~sparsecraft.Sparsifier` masks it as any Linear: where the mask (the ``weight_mask`` buffer
the Sparsifier keeps) is False the weight is exactly zero (a point mass, no noise, no KL term).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int


def _rho(sigma: float) -> float:
    """``rho`` with ``softplus(rho) = sigma``."""
    return math.log(math.expm1(sigma))


class BayesLinear(nn.Linear):
    """Linear layer with a factorised Gaussian posterior over its weights and bias.

    Parameters
    ----------
    in_features, out_features : int
    sigma_init : float
        Initial posterior standard deviation of every weight and bias (> 0).
    prior_sigma : float
        Standard deviation of the zero-mean Gaussian prior (> 0).

    Input ``(N, in_features)``, output ``(N, out_features)``. In training mode (or with
    ``sample=True``) every call draws fresh noise; in eval mode it uses the means.
    """

    def __init__(self, in_features: int, out_features: int, sigma_init: float = 1e-2,
                 prior_sigma: float = 1.0) -> None:
        super().__init__(in_features, out_features)
        if not (sigma_init > 0 and prior_sigma > 0):
            raise SparsecraftError(f"sigma_init and prior_sigma must be > 0, got {sigma_init!r}, {prior_sigma!r}")
        self.rho_init = _rho(sigma_init)
        self.prior_sigma = float(prior_sigma)
        self.weight_rho = nn.Parameter(torch.full_like(self.weight, self.rho_init))
        self.bias_rho = nn.Parameter(torch.full_like(self.bias, self.rho_init))
        self.sample = False

    def active(self) -> torch.Tensor | None:
        """The Sparsifier's mask of ``weight`` (True = in the subspace), or None when dense."""
        return getattr(self, "weight_mask", None)

    def weight_sigma(self) -> torch.Tensor:
        """Posterior standard deviation of every weight, shape (out_features, in_features)."""
        return F.softplus(self.weight_rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.sample):
            return F.linear(x, self.weight, self.bias)
        noise = self.weight_sigma() * torch.randn_like(self.weight)
        mask = self.active()
        w = self.weight + (noise if mask is None else noise * mask)
        b = self.bias + F.softplus(self.bias_rho) * torch.randn_like(self.bias)
        return F.linear(x, w, b)

    def kl(self) -> torch.Tensor:
        """KL(q || prior) in nats, summed over the bias and the weights in the subspace."""
        mask = self.active()
        kw = _gaussian_kl(self.weight, self.weight_sigma(), self.prior_sigma)
        kw = kw.sum() if mask is None else (kw * mask).sum()
        return kw + _gaussian_kl(self.bias, F.softplus(self.bias_rho), self.prior_sigma).sum()


def _gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, prior_sigma: float) -> torch.Tensor:
    """Elementwise KL(N(mu, sigma^2) || N(0, prior_sigma^2))."""
    return torch.log(prior_sigma / sigma) + (sigma ** 2 + mu ** 2) / (2 * prior_sigma ** 2) - 0.5


class BayesMLP(nn.Module):
    """``Flatten -> [BayesLinear -> ReLU] * len(hidden) -> BayesLinear``; logits (N, num_classes).

    Parameters
    ----------
    in_features, num_classes : int
    hidden : sequence of int
    sigma_init, prior_sigma : float
        As :class:`BayesLinear`.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (128, 128),
                 sigma_init: float = 1e-2, prior_sigma: float = 1.0) -> None:
        super().__init__()
        sizes = [check_positive_int(in_features, "in_features")]
        sizes += [check_positive_int(h, "hidden size") for h in hidden]
        blocks: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [BayesLinear(a, b, sigma_init, prior_sigma), nn.ReLU()]
        blocks.append(BayesLinear(sizes[-1], check_positive_int(num_classes, "num_classes"), sigma_init, prior_sigma))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of :meth:`BayesLinear.kl` over the model's Bayesian layers (nats; 0 if there are none)."""
    return sum((m.kl() for m in model.modules() if isinstance(m, BayesLinear)), torch.zeros(()))


def elbo_loss(model: nn.Module, n_train: int, kl_weight: float = 1.0):
    """The negative ELBO per training example, as a ``loss_fn(logits, y)`` for :func:`~sparsecraft.training.fit`.

    Parameters
    ----------
    model : nn.Module
        Its KL term is read at each call (after the forward pass that produced ``logits``).
    n_train : int
        Training-set size N: the loss is ``CE(logits, y) + kl_weight * KL / N``.
    kl_weight : float
        1.0 is the ELBO; smaller values temper the posterior.

    Returns
    -------
    callable
    """
    n_train = check_positive_int(n_train, "n_train")

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y) + kl_weight * kl_divergence(model) / n_train

    return loss


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, samples: int = 16, batch_size: int = 512) -> torch.Tensor:
    """Monte-Carlo predictive class probabilities: the mean of ``samples`` sampled softmaxes.

    A model without Bayesian layers gives its (deterministic) softmax. The model's mode is restored.

    Parameters
    ----------
    model : nn.Module
    x : Tensor of shape (N, ...)
    samples : int
    batch_size : int

    Returns
    -------
    Tensor of shape (N, num_classes)
        Rows sum to 1.
    """
    samples = check_positive_int(samples, "samples")
    layers = [m for m in model.modules() if isinstance(m, BayesLinear)]
    was = model.training
    model.eval()
    for m in layers:
        m.sample = True
    try:
        draws = samples if layers else 1
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            out.append(torch.stack([F.softmax(model(xb), -1) for _ in range(draws)]).mean(0))
        return torch.cat(out)
    finally:
        for m in layers:
            m.sample = False
        model.train(was)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the |accuracy - confidence| of equal-width confidence bins, weighted by
    the fraction of examples in each.

    Parameters
    ----------
    probs : Tensor of shape (N, C)
        Predictive probabilities.
    y : Tensor of int64, shape (N,)
    bins : int

    Returns
    -------
    float
        In [0, 1].
    """
    bins = check_positive_int(bins, "bins")
    if probs.ndim != 2 or len(probs) != len(y) or len(y) == 0:
        raise SparsecraftError(f"probs must be (N, C) with N = len(y) > 0, got {tuple(probs.shape)} and {len(y)}")
    conf, pred = probs.max(-1)
    correct = (pred == y).double()
    which = torch.clamp((conf.double() * bins).ceil().long() - 1, 0, bins - 1)   # bin b holds (b/B, (b+1)/B]
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        sel = which == b
        if bool(sel.any()):
            ece += sel.double().mean() * (correct[sel].mean() - conf[sel].double().mean()).abs()
    return float(ece)


def predictive_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL and ECE of predictive probabilities.

    Parameters
    ----------
    probs : Tensor of shape (N, C)
    y : Tensor of int64, shape (N,)
    bins : int
        ECE bins.

    Returns
    -------
    dict
        ``accuracy`` (fraction), ``nll`` (mean nats per example, probabilities floored at 1e-12),
        ``ece`` (fraction), ``entropy`` (mean predictive entropy, nats).
    """
    ece = expected_calibration_error(probs, y, bins)
    p = probs.double().clamp_min(1e-12)
    return {"accuracy": float((probs.argmax(-1) == y).double().mean()),
            "nll": float(-p.gather(1, y[:, None]).log().mean()),
            "ece": ece,
            "entropy": float(-(p * p.log()).sum(-1).mean())}
