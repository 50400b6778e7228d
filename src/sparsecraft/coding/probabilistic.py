"""Probabilistic sparse coding trained by truncated EM (the model family of the ProSper library).

Generative models with binary latents ``s in {0,1}^H`` (prior ``pi_h``) and Gaussian observation
noise ``sigma2``:

- :class:`BinarySparseCoding` (BSC; Henniges, Puertas, Bornschein, Eggert & Lucke, 2010):
  ``y = W s + noise``.
- :class:`SpikeAndSlabSparseCoding` (Gaussian sparse coding, GSC; Sheikh, Shelton & Lucke, 2014):
  ``y = W (s * z) + noise`` with a Gaussian slab ``z_h ~ N(mu_h, psi_h)``, a non-standard prior
  that gives continuous sparse codes with exact zeros.

Truncated EM (Lucke & Eggert, JMLR 2010): for each data point a selection function picks ``H'``
candidate latents, the posterior is evaluated exactly on all states with at most ``gamma`` of them
active, and the M-step is closed form. The prior and noise parameters are learned too, and a short
deterministic annealing phase (posterior temperature from ``anneal`` down to 1) avoids poor local
optima. Shapes follow scikit-learn: data (n_samples, n_features); ``components_`` is W^T (H, D).
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, check_fitted, check_int, check_positive, rng


def truncated_states(n_candidates: int, max_active: int) -> np.ndarray:
    """All binary patterns with at most ``max_active`` ones, the zero state first.

    Parameters
    ----------
    n_candidates : int
    max_active : int

    Returns
    -------
    states : ndarray of shape (S, n_candidates)
        0/1 floats, ``S = sum_{a <= max_active} C(n_candidates, a)``.
    """
    rows = [np.zeros(n_candidates)]
    for a in range(1, max_active + 1):
        for idx in combinations(range(n_candidates), a):
            r = np.zeros(n_candidates)
            r[list(idx)] = 1.0
            rows.append(r)
    return np.array(rows)


_EM_PARAMETERS = """
    Parameters
    ----------
    n_components : int
        Number of latent causes H.
    n_candidates : int, default=6
        Candidate latents H' per data point picked by the selection function (at most H).
    max_active : int, default=3
        Largest number of simultaneously active latents gamma in the truncated state space.
    n_iter : int, default=60
        EM iterations per run.
    anneal : float, default=2.0
        Start temperature (>= 1) of the posterior, lowered linearly to 1.
    anneal_iters : int, default=20
        Iterations of the annealing phase.
    n_init : int, default=1
        EM runs from different initializations; the most likely one is kept.
    random_state : int, numpy Generator or None, default=None
        Seeds the initializations.
"""


class _TruncatedEM(ParamsMixin):
    """Shared truncated-EM loop; subclasses define selection scores, log-joints and M-steps."""

    def __init__(self, n_components: int, n_candidates: int = 6, max_active: int = 3, n_iter: int = 60,
                 anneal: float = 2.0, anneal_iters: int = 20, n_init: int = 1, random_state: Any = None) -> None:
        self.n_components, self.n_candidates, self.max_active = n_components, n_candidates, max_active
        self.n_iter, self.anneal, self.anneal_iters, self.random_state = n_iter, anneal, anneal_iters, random_state
        self.n_init = n_init

    # -- to implement -------------------------------------------------------------------------
    def _init_params(self, Y: np.ndarray, gen: np.random.Generator) -> None:
        raise NotImplementedError

    def _selection(self, Y: np.ndarray) -> np.ndarray:   # (N, H) higher = more likely active alone
        raise NotImplementedError

    def _log_joint(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _m_step(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray, q: np.ndarray, cache: Any) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _checked(self, X: Any) -> tuple[np.ndarray, int, int]:
        Y = as_matrix(X, "X")
        H = check_int(self.n_components, "n_components")
        Hp = min(check_int(self.n_candidates, "n_candidates"), H)
        gamma = min(check_int(self.max_active, "max_active"), Hp)
        return Y, Hp, gamma

    def _posterior(self, Y: np.ndarray,
                   temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]:
        _, Hp, gamma = self._checked(Y)
        P = truncated_states(Hp, gamma)
        C = np.argsort(-self._selection(Y), axis=1)[:, :Hp]            # (N, H') candidates
        logj, cache = self._log_joint(Y, C, P)                          # (N, S)
        z = logj / temperature
        m = z.max(axis=1, keepdims=True)
        q = np.exp(z - m)
        norm = q.sum(axis=1, keepdims=True)
        log_evidence = (m[:, 0] + np.log(norm[:, 0])) if temperature == 1.0 else np.full(len(Y), np.nan)
        return C, P, q / norm, cache, log_evidence

    def fit(self, X: Any, y: Any = None) -> "_TruncatedEM":
        """Learn W, the prior and the noise by truncated EM.

        With ``n_init > 1`` EM restarts from that many initializations and keeps the run with the
        highest final (truncated) log-likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        Y, _, _ = self._checked(X)
        gen = rng(self.random_state)
        n_iter = check_int(self.n_iter, "n_iter")
        T0 = check_positive(self.anneal, "anneal")
        if T0 < 1.0:
            raise SparsecraftError(f"anneal must be >= 1 (the start temperature), got {self.anneal!r}")
        best: dict[str, Any] | None = None
        for _ in range(check_int(self.n_init, "n_init")):
            self._init_params(Y, gen)
            self.log_likelihood_ = []
            for it in range(n_iter):
                frac = min(it / max(self.anneal_iters, 1), 1.0)
                C, P, q, cache, ev = self._posterior(Y, T0 + (1.0 - T0) * frac)
                self._m_step(Y, C, P, q, cache)
                self.log_likelihood_.append(float(np.mean(ev)))
            self.log_likelihood_.append(float(np.mean(self._posterior(Y)[4])))   # at the final parameters
            if best is None or self.log_likelihood_[-1] > best["log_likelihood_"][-1]:
                best = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        assert best is not None
        vars(self).update(best)
        self.n_features_in_ = Y.shape[1]
        return self

    def _scatter(self, C: np.ndarray, local: np.ndarray) -> np.ndarray:
        """(N, H') values at candidate positions -> (N, H)."""
        out = np.zeros((C.shape[0], self.n_components))
        np.put_along_axis(out, C, local, axis=1)
        return out

    def _scatter_outer(self, C: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Sum over n of (N, H', H') candidate blocks -> (H, H)."""
        H = self.n_components
        out = np.zeros(H * H)
        flat = (C[:, :, None] * H + C[:, None, :]).ravel()
        np.add.at(out, flat, local.ravel())
        return out.reshape(H, H)

    def transform(self, X: Any) -> np.ndarray:
        """Posterior mean of the code: E[s] for BSC, E[s*z] for GSC.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
        """
        check_fitted(self, "components_")
        Y = as_matrix(X, "X")
        if Y.shape[1] != self.n_features_in_:
            raise SparsecraftError(f"X has {Y.shape[1]} features but the model was fitted on {self.n_features_in_}")
        C, P, q, cache, _ = self._posterior(Y)
        return self._code_mean(C, P, q, cache)

    def _code_mean(self, C: np.ndarray, P: np.ndarray, q: np.ndarray, cache: Any) -> np.ndarray:
        return self._scatter(C, q @ P)

    def score(self, X: Any) -> float:
        """Mean truncated log-likelihood per data point (a lower bound on the true one).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        float
            In nats.
        """
        check_fitted(self, "components_")
        return float(np.mean(self._posterior(as_matrix(X, "X"))[4]))


class BinarySparseCoding(_TruncatedEM):
    __doc__ = """Binary sparse coding ``y = W s + N(0, sigma2 I)``, ``s_h ~ Bernoulli(pi)``, by truncated EM.
""" + _EM_PARAMETERS + """
    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        W^T, one latent's contribution per row.
    pi_ : float
        Prior probability of each latent being active.
    noise_var_ : float
        Observation noise variance sigma2.
    log_likelihood_ : list of float
        Mean truncated log-likelihood per iteration of the kept run (the last at the final parameters).
    n_features_in_ : int
    """

    def _init_params(self, Y: np.ndarray, gen: np.random.Generator) -> None:
        H, D = self.n_components, Y.shape[1]
        self.components_ = Y.mean(axis=0) + Y.std(axis=0) * 0.25 * gen.standard_normal((H, D))
        self.pi_ = 1.0 / H
        self.noise_var_ = float(Y.var())

    def _selection(self, Y: np.ndarray) -> np.ndarray:
        W = self.components_
        return -((Y[:, None, :] - W[None]) ** 2).sum(axis=2)   # singleton fit

    def _log_joint(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, Any]:
        Wc = self.components_[C]                                  # (N, H', D)
        WS = np.einsum("sh,nhd->nsd", P, Wc)                      # (N, S, D)
        err = ((Y[:, None, :] - WS) ** 2).sum(axis=2)
        H, D, pi = self.n_components, Y.shape[1], np.clip(self.pi_, 1e-6, 1 - 1e-6)
        act = P.sum(axis=1)
        prior = act * np.log(pi) + (H - act) * np.log1p(-pi)
        return prior[None, :] - err / (2 * self.noise_var_) - 0.5 * D * np.log(2 * np.pi * self.noise_var_), None

    def _m_step(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray, q: np.ndarray, cache: Any) -> None:
        N, D = Y.shape
        Es = self._scatter(C, q @ P)                               # (N, H)
        Ess = self._scatter_outer(C, np.einsum("ns,sh,sg->nhg", q, P, P))
        YEs = Y.T @ Es                                             # (D, H)
        W = np.linalg.solve(Ess + 1e-8 * np.eye(len(Ess)), YEs.T).T   # (D, H)
        resid = (Y**2).sum() - 2 * np.sum(W * YEs) + np.sum((W.T @ W) * Ess)
        self.components_ = W.T
        self.noise_var_ = max(float(resid) / (N * D), 1e-8)
        self.pi_ = float(np.clip(Es.sum() / (N * self.n_components), 1e-4, 1 - 1e-4))


class SpikeAndSlabSparseCoding(_TruncatedEM):
    __doc__ = """Spike-and-slab (Gaussian) sparse coding ``y = W (s * z) + noise``, ``z_h ~ N(mu_h, psi_h)``.
""" + _EM_PARAMETERS + """
    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        W^T, one latent's contribution per row.
    pi_, mu_, psi_ : ndarray of shape (n_components,)
        Prior activation probability, slab mean and slab variance per latent.
    noise_var_ : float
        Observation noise variance sigma2.
    log_likelihood_ : list of float
        Mean truncated log-likelihood per iteration of the kept run (the last at the final parameters).
    n_features_in_ : int
    """

    def _init_params(self, Y: np.ndarray, gen: np.random.Generator) -> None:
        H, D = self.n_components, Y.shape[1]
        self.components_ = Y.std(axis=0) * gen.standard_normal((H, D))
        self.pi_ = np.full(H, 1.0 / H)
        self.mu_ = np.zeros(H)
        self.psi_ = np.ones(H)
        self.noise_var_ = float(Y.var())

    def _selection(self, Y: np.ndarray) -> np.ndarray:
        W, s2 = self.components_, self.noise_var_
        w2 = (W**2).sum(axis=1)                                   # (H,)
        c = self.psi_ * w2
        R2 = (Y**2).sum(axis=1)[:, None] - 2 * self.mu_ * (Y @ W.T) + (self.mu_**2 * w2)[None]
        wr = Y @ W.T - self.mu_ * w2                              # w^T (y - w mu)
        quad = (R2 - self.psi_ * wr**2 / (s2 + c)) / s2
        pi = np.clip(self.pi_, 1e-6, 1 - 1e-6)
        return np.log(pi / (1 - pi)) - 0.5 * np.log1p(c / s2) - 0.5 * quad

    def _log_joint(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, Any]:
        s2, D = self.noise_var_, Y.shape[1]
        Wc = self.components_[C]                                  # (N, H', D)
        WtW = np.einsum("nhd,ngd->nhg", Wc, Wc)                   # (N, H', H')
        Wty = np.einsum("nhd,nd->nh", Wc, Y)                      # (N, H')
        mu, psi = self.mu_[C], self.psi_[C]                       # (N, H')
        M = P[None, :, :]                                         # (1, S, H')
        psi_t = np.where(M > 0, psi[:, None, :], 1.0)             # (N, S, H')
        mu_t = M * mu[:, None, :]
        WtW_s = WtW[:, None] * (M[..., :, None] * M[..., None, :])
        Lam = WtW_s / s2 + (1.0 / psi_t)[..., None] * np.eye(P.shape[1])
        Lam_inv = np.linalg.inv(Lam)
        WtWmu = (WtW_s @ mu_t[..., None])[..., 0]
        Wtr = M * (Wty[:, None, :] - WtWmu)                        # W~^T (y - W~ mu~)
        rr = (Y**2).sum(axis=1)[:, None] - 2 * (mu_t * Wty[:, None, :]).sum(axis=2) + (mu_t * WtWmu).sum(axis=2)
        quad = rr / s2 - (Wtr * (Lam_inv @ Wtr[..., None])[..., 0]).sum(axis=2) / s2**2
        logdet = D * np.log(s2) + np.log(psi_t).sum(axis=2) + np.linalg.slogdet(Lam)[1]
        pi = np.clip(self.pi_, 1e-6, 1 - 1e-6)
        prior = np.log1p(-pi).sum() + np.einsum("sh,nh->ns", P, np.log(pi / (1 - pi))[C])
        logj = prior - 0.5 * (logdet + quad + D * np.log(2 * np.pi))
        kappa = (Lam_inv @ (mu_t / psi_t + M * Wty[:, None, :] / s2)[..., None])[..., 0]
        return logj, (kappa * M, Lam_inv)

    def _code_mean(self, C: np.ndarray, P: np.ndarray, q: np.ndarray, cache: Any) -> np.ndarray:
        kappa, _ = cache
        return self._scatter(C, np.einsum("ns,nsh->nh", q, kappa))

    def _m_step(self, Y: np.ndarray, C: np.ndarray, P: np.ndarray, q: np.ndarray, cache: Any) -> None:
        kappa, Lam_inv = cache
        N, D = Y.shape
        M = P[None]
        Esz = self._scatter(C, np.einsum("ns,nsh->nh", q, kappa))                       # (N, H)
        second = (Lam_inv + kappa[..., :, None] * kappa[..., None, :]) * (M[..., :, None] * M[..., None, :])
        local = np.einsum("ns,nshg->nhg", q, second)                                    # (N, H', H')
        Eszz = self._scatter_outer(C, local)
        Es = self._scatter(C, q @ P)
        YEsz = Y.T @ Esz
        W = np.linalg.solve(Eszz + 1e-8 * np.eye(len(Eszz)), YEsz.T).T                   # (D, H)
        resid = (Y**2).sum() - 2 * np.sum(W * YEsz) + np.sum((W.T @ W) * Eszz)
        s_sum = np.maximum(Es.sum(axis=0), 1e-8)
        sz_sum = Esz.sum(axis=0)
        szz_sum = np.diagonal(Eszz)
        mu = sz_sum / s_sum
        self.components_ = W.T
        self.noise_var_ = max(float(resid) / (N * D), 1e-8)
        self.pi_ = np.clip(Es.mean(axis=0), 1e-4, 1 - 1e-4)
        self.mu_ = mu
        self.psi_ = np.maximum((szz_sum - 2 * mu * sz_sum + mu**2 * s_sum) / s_sum, 1e-4)
