"""Sparse Subspace Variational Inference (Li et al. 2024, "Training Bayesian Neural Networks with
Sparse Subspace Variational Inference").

The mean-field posterior lives on a sparse subspace of fixed size from the first step to the last:
a random subspace (per-layer density from the allocation, ERK or uniform) is drawn at the start;
the variational parameters (mu, sigma) of the weights in it are trained by the reparameterisation
trick on the negative ELBO, and every ``update_every`` steps the subspace is updated by removal and
addition: the active weights with the lowest removal score leave it (``snr``: |mu| / sigma, the
signal-to-noise ratio of the weight's posterior; ``magnitude``: |mu|) and as many inactive ones
enter it by the largest dense gradient magnitude of mu (or at random), the fraction cosine-decayed
to 0 at ``end_fraction`` of training. A weight entering the subspace starts at mu = 0 and
sigma = the layer's initial sigma; one leaving it becomes an exact zero without noise or KL term.

The subspace is the ``weight_mask`` of a :class:`~sparsecraft.Sparsifier` over the :class:`BayesLinear`
layers' means, and the removal/addition schedule is the drop/grow machinery of
:class:`sparsecraft.training.dst.DropGrow` with a removal score of its own: SSVI is that updater.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..criteria import Calib
from ..errors import SparsecraftError
from ..options import Option
from ..training.base import SparsityConfig
from ..training.dst import DropGrow
from ..training.fit import FitResult, fit
from .variational import BayesLinear, elbo_loss

REMOVAL_CRITERIA = ("snr", "magnitude")


class SSVI(DropGrow):
    """Drop/grow on the posterior means of :class:`BayesLinear` layers with a removal criterion.

    Parameters
    ----------
    config : SparsityConfig, optional
        Sparsity of the subspace (default 0.9, ERK).
    total_steps : int, optional
    seed : int
    update_every, drop_fraction, end_fraction, decay, grow
        As :class:`~sparsecraft.training.dst.DropGrow` (defaults here: cosine decay, gradient addition).
    remove : {"snr", "magnitude"}
        Removal score: ``|mu| / sigma`` or ``|mu|`` (lowest leave the subspace).
    """

    name = "ssvi"
    decay = "cosine"
    grow = "gradient"
    options = DropGrow.options + (
        Option("remove", str, "snr", "removal criterion: snr (|mu|/sigma) or magnitude (|mu|)",
               choices=REMOVAL_CRITERIA),
    )

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 update_every: int | None = None, drop_fraction: float = 0.3, end_fraction: float = 0.75,
                 decay: str | None = None, grow: str | None = None, remove: str = "snr") -> None:
        super().__init__(config, total_steps, seed, update_every, drop_fraction, end_fraction, decay, grow)
        if remove not in REMOVAL_CRITERIA:
            raise SparsecraftError(f"remove must be one of {', '.join(REMOVAL_CRITERIA)}, got {remove!r}")
        self.remove = remove

    def setup(self, calib: Calib) -> None:
        targets, _ = self.config.targets(self.model)   # checked before any mask zeroes a weight
        plain = [t for t in targets if not isinstance(t.module, BayesLinear)]
        if plain:
            raise SparsecraftError(f"SSVI needs BayesLinear layers; {plain[0].name} is a "
                                   f"{type(plain[0].module).__name__} (use BayesMLP)")
        super().setup(calib)

    def drop_scores(self, name: str) -> torch.Tensor:
        module = self.sparsifier.targets[name].module
        mu = module.weight.detach().abs()
        return mu / module.weight_sigma().detach() if self.remove == "snr" else mu

    @torch.no_grad()
    def entered(self, name: str, where: torch.Tensor) -> None:
        module = self.sparsifier.targets[name].module
        module.weight_rho[where] = module.rho_init


def train_bayes(model: nn.Module, data: Any, updater: DropGrow | None = None, epochs: int = 1,
                batch_size: int = 64, lr: float = 3e-3, seed: int = 0, kl_weight: float = 1.0,
                progress: bool = False) -> FitResult:
    """Train a Bayesian model on the negative ELBO with :func:`~sparsecraft.training.fit`.

    Parameters
    ----------
    model : nn.Module
        With :class:`BayesLinear` layers (e.g. :class:`BayesMLP`).
    data : DataSplits or (Tensor, Tensor)
    updater : SSVI, optional
        ``None`` trains the dense mean-field posterior.
    epochs, batch_size : int
    lr : float
        AdamW (cosine-decayed).
    seed : int
    kl_weight : float
        Weight of KL / N in the loss (1.0: the ELBO).
    progress : bool

    Returns
    -------
    FitResult
    """
    n = len(data[0]) if isinstance(data, (tuple, list)) else len(data.train_x)
    return fit(model, data, updater, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
               loss_fn=elbo_loss(model, n, kl_weight))
