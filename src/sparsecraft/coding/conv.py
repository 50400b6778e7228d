"""Convolutional sparse coding (CSC) with heterogeneous kernel sizes, on torch convolutions.

An image ``x`` (H, W) is modelled as ``sum_k d_k * z_k`` where each kernel ``d_k`` has its own odd
size and each code map ``z_k`` (H, W) is sparse. Codes are inferred by FISTA with any registered
penalty (l1, l0, CEL0; the prox runs on zero-copy numpy views; float32 throughout), kernels are learned by projected
gradient steps (unit-norm kernels) on mini-batches of image crops. Mixing kernel sizes is the
"Kernel Heterogeneity Improves Sparseness of Natural Images Representations" question: at equal
reconstruction error, does a heterogeneous bank give sparser codes than a single size?
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, check_fitted, check_int, check_positive, rng
from .penalties import PENALTIES


def image_crops(size: int = 64, n_crops: int = 32, whiten: bool = True, random_state: Any = 0) -> np.ndarray:
    """Random grey crops of scikit-learn's sample photos, zero-mean, unit variance.

    Parameters
    ----------
    size : int, default=64
        Side of the square crops in pixels (>= 8).
    n_crops : int, default=32
    whiten : bool, default=True
        Apply the usual sparse-coding pre-filter ``|f| exp(-(|f|/f0)^4)`` (Olshausen & Field 1997),
        which flattens the 1/f spectrum of natural images.
    random_state : int, numpy Generator or None, default=0

    Returns
    -------
    crops : ndarray of shape (n_crops, size, size)
        Scaled to unit average energy per pixel.
    """
    from sklearn.datasets import load_sample_images

    size = check_int(size, "size", low=8)
    gen = rng(random_state)
    grey = [img.astype(np.float64).mean(axis=2) / 255.0 for img in load_sample_images().images]
    crops = np.empty((check_int(n_crops, "n_crops"), size, size))
    for i in range(len(crops)):
        g = grey[gen.integers(len(grey))]
        r, c = gen.integers(0, g.shape[0] - size + 1), gen.integers(0, g.shape[1] - size + 1)
        crops[i] = g[r:r + size, c:c + size]
    crops -= crops.mean(axis=(1, 2), keepdims=True)
    if whiten:
        f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
        filt = f * np.exp(-((f / 0.4) ** 4))
        crops = np.real(np.fft.ifft2(np.fft.fft2(crops) * filt))
    return crops / np.sqrt(max(float((crops**2).mean()), 1e-300))


class ConvSparseCoding(ParamsMixin):
    """Learn a bank of kernels of (possibly different) odd sizes and sparse-code images with it.

    Parameters
    ----------
    kernel_sizes : sequence of int
        One odd size per kernel, e.g. ``[5]*8 + [9]*8 + [13]*8``.
    penalty : str, default="l1"
        A name in ``PENALTIES`` (``l1``, ``l0``, ``cel0``).
    lam : float, default=0.1
        Penalty weight, in squared pixel units (> 0).
    n_steps : int, default=100
        Kernel learning steps, one mini-batch each.
    batch_size : int, default=8
        Images per step.
    code_iter : int, default=50
        FISTA iterations per code inference during learning.
    lr : float, default=0.05
        Kernel step, divided by each kernel's code energy.
    random_state : int, numpy Generator or None, default=None
        Seeds the initial kernels (image patches) and the batches.

    Attributes
    ----------
    kernels_ : list of torch.Tensor
        One (n_g, 1, s, s) float32 tensor of unit-norm kernels per distinct size s (ascending).
    sizes_ : list of int
        The distinct kernel sizes, ascending.
    """

    def __init__(self, kernel_sizes: Sequence[int], penalty: str = "l1", lam: float = 0.1, n_steps: int = 100,
                 batch_size: int = 8, code_iter: int = 50, lr: float = 0.05, random_state: Any = None) -> None:
        self.kernel_sizes, self.penalty, self.lam = kernel_sizes, penalty, lam
        self.n_steps, self.batch_size, self.code_iter, self.lr = n_steps, batch_size, code_iter, lr
        self.random_state = random_state

    # -- linear operators ---------------------------------------------------------------------------
    def _synth(self, codes: list[torch.Tensor], kernels: list[torch.Tensor] | None = None) -> torch.Tensor:
        ks = self.kernels_ if kernels is None else kernels
        return sum(F.conv_transpose2d(z, d, padding=d.shape[-1] // 2) for z, d in zip(codes, ks))  # type: ignore[return-value]

    def _adjoint(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.conv2d(x, d, padding=d.shape[-1] // 2) for d in self.kernels_]

    def _lipschitz(self, shape: tuple[int, int]) -> float:
        """||D||_2^2 of the synthesis operator by power iteration (warm-started between calls)."""
        v = self._power_v
        if v is None or tuple(v[0].shape[-2:]) != tuple(shape):
            gen = torch.Generator().manual_seed(0)
            v = [torch.randn(1, d.shape[0], *shape, generator=gen) for d in self.kernels_]
            rounds = 30
        else:
            rounds = 5
        est = 0.0
        for _ in range(rounds):
            v = self._adjoint(self._synth(v))
            est = float(torch.sqrt(sum((t**2).sum() for t in v)))
            v = [t / est for t in v]
        self._power_v = v
        return est * 1.1

    # -- inference ------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, n_iter: int, lam: float) -> list[torch.Tensor]:
        pen = PENALTIES.get(self.penalty)
        L = self._lipschitz(tuple(x.shape[-2:]))
        step = (1.0 if pen.convex else 0.99) / L
        norms = [np.linalg.norm(d.reshape(d.shape[0], -1).numpy(), axis=1) for d in self.kernels_]
        z = [torch.zeros(x.shape[0], d.shape[0], *x.shape[-2:]) for d in self.kernels_]
        y, t = [c.clone() for c in z], 1.0
        for _ in range(n_iter):
            grads = self._adjoint(self._synth(y) - x)
            new = []
            for yg, gg, nr in zip(y, grads, norms):
                v = (yg - step * gg).numpy()
                flat = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)            # (n_g, rest)
                out = pen.prox(flat, lam, step, nr).astype(v.dtype, copy=False).reshape(np.moveaxis(v, 1, 0).shape)
                new.append(torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, 0, 1))))
            t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            y = [a + (t - 1) / t_new * (a - b) for a, b in zip(new, z)]
            z, t = new, t_new
        return z

    def _check_images(self, images: Any) -> torch.Tensor:
        arr = as_matrix(images, "images", ndim=3)
        return torch.from_numpy(arr[:, None].astype(np.float32))

    def _check_params(self) -> list[int]:
        """Check the parameters; return ``kernel_sizes`` as a list."""
        try:
            sizes = list(self.kernel_sizes)
        except TypeError:
            raise SparsecraftError(f"kernel_sizes must be a list of odd sizes, got {self.kernel_sizes!r}") from None
        if not sizes:
            raise SparsecraftError("kernel_sizes is empty; give one odd size per kernel, e.g. [5]*8 + [9]*8")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 or s % 2 == 0:
                raise SparsecraftError(f"kernel_sizes must be odd positive integers, got {s!r}")
        PENALTIES.get(self.penalty)
        check_positive(self.lam, "lam")
        return [int(s) for s in sizes]

    def fit(self, images: Any, y: Any = None) -> "ConvSparseCoding":
        """Learn the kernels.

        Parameters
        ----------
        images : array-like of shape (n_images, H, W)
            H and W at least the largest kernel size.
        y : ignored

        Returns
        -------
        self
        """
        all_sizes = self._check_params()
        X = self._check_images(images)
        if max(all_sizes) > min(X.shape[-2:]):
            raise SparsecraftError(f"kernel size {max(all_sizes)} exceeds the image size {tuple(X.shape[-2:])}")
        gen = rng(self.random_state)
        self._power_v = None  # a power-iteration warm start from an earlier fit would not fit this bank
        sizes = sorted(set(all_sizes))
        self.sizes_ = sizes
        kernels = []
        for s in sizes:
            count = all_sizes.count(s)
            # initialize from random image patches of that size (centered, unit norm)
            idx = gen.integers(0, X.shape[0], count)
            r = gen.integers(0, X.shape[2] - s + 1, count)
            c = gen.integers(0, X.shape[3] - s + 1, count)
            d = np.stack([X[i, 0, a:a + s, b:b + s].numpy() for i, a, b in zip(idx, r, c)])
            d = d - d.mean(axis=(1, 2), keepdims=True) + 1e-3 * gen.standard_normal(d.shape)
            d /= np.linalg.norm(d.reshape(count, -1), axis=1)[:, None, None]
            kernels.append(torch.from_numpy(d[:, None].astype(np.float32)))
        self.kernels_ = kernels
        batch = check_int(self.batch_size, "batch_size")
        for _ in range(check_int(self.n_steps, "n_steps")):
            xb = X[torch.from_numpy(gen.choice(X.shape[0], min(batch, X.shape[0]), replace=False))]
            codes = self._encode(xb, check_int(self.code_iter, "code_iter"), self.lam)
            ks = [d.clone().requires_grad_(True) for d in self.kernels_]
            loss = 0.5 * ((self._synth(codes, ks) - xb) ** 2).sum() / xb.shape[0]
            grads = torch.autograd.grad(loss, ks)
            with torch.no_grad():
                new = []
                for d, g, z in zip(ks, grads, codes):
                    # step lr / (per-kernel code energy), the scale of that kernel's Lipschitz constant
                    energy = (z**2).sum(dim=(0, 2, 3)).clamp_min(1e-12) / xb.shape[0]
                    d = d - self.lr * g / energy[:, None, None, None]
                    d = d / torch.linalg.vector_norm(d, dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                    new.append(d.detach())
            self.kernels_ = new
        return self

    def transform(self, images: Any, lam: float | None = None, n_iter: int = 200) -> list[np.ndarray]:
        """Sparse code maps of images.

        Parameters
        ----------
        images : array-like of shape (n_images, H, W)
        lam : float, optional
            Penalty weight (default: the ``lam`` used in fit).
        n_iter : int, default=200
            FISTA iterations.

        Returns
        -------
        codes : list of ndarray
            Per kernel size (ascending), an (n_images, n_g, H, W) float32 array.
        """
        check_fitted(self, "kernels_")
        X = self._check_images(images)
        lam_v = self.lam if lam is None else check_positive(lam, "lam")
        return [z.numpy() for z in self._encode(X, check_int(n_iter, "n_iter"), lam_v)]

    def inverse_transform(self, codes: list[np.ndarray]) -> np.ndarray:
        """Images synthesized from code maps.

        Parameters
        ----------
        codes : list of array-like
            As returned by :meth:`transform`: per kernel size, (n_images, n_g, H, W).

        Returns
        -------
        images : ndarray of shape (n_images, H, W)
        """
        check_fitted(self, "kernels_")
        if len(codes) != len(self.kernels_):
            raise SparsecraftError(f"codes has {len(codes)} groups but the bank has {len(self.kernels_)} kernel sizes")
        images = self._synth([torch.from_numpy(np.asarray(c, dtype=np.float32)) for c in codes])
        return images[:, 0].numpy().astype(np.float64)

    def kernels(self) -> list[np.ndarray]:
        """The learned kernels.

        Returns
        -------
        kernels : list of ndarray
            Per distinct size s (ascending), an (n_g, s, s) float32 array of unit-norm kernels.
        """
        check_fitted(self, "kernels_")
        return [d[:, 0].numpy() for d in self.kernels_]
