"""Fast and sparse Walsh-Hadamard transforms.

Convention (unnormalized): ``X[k] = sum_i x[i] (-1)^<i,k>`` and ``x[i] = (1/n) sum_k X[k] (-1)^<i,k>``,
where ``<i,k>`` is the parity of the bitwise AND, for ``n = 2^N``.

:func:`sparse_wht` recovers a K-sparse spectrum from O(K N) time-domain samples in the style of
SPRIGHT (Li, Bradley & Ramchandran, "SPRIGHT: A Fast and Robust Framework for Sparse Walsh-Hadamard
Transform"): the signal is subsampled on ``C`` random F2-subspaces of size B ~ K (aliasing the
spectrum into B bins per subspace), each with ``P (N + 1)`` delays; bins are classified as zero-ton,
single-ton or multi-ton, the index bits of a single-ton are decoded by majority vote over the ``P``
random delay pairs (this is what makes it noise robust), and found coefficients are peeled from
every bin they alias into until nothing new is found.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import SparsecraftError
from ._validation import as_matrix, check_int, check_positive, rng


def check_power_of_two(n: int, name: str) -> int:
    """log2 of a power of two.

    Parameters
    ----------
    n : int
    name : str
        What ``n`` is, for the error message.

    Returns
    -------
    int
        ``log2(n)``.

    Raises
    ------
    SparsecraftError
        If ``n`` is not a power of two >= 2.
    """
    if n < 2 or n & (n - 1):
        raise SparsecraftError(f"{name} must be a power of two (2, 4, 8, ...), got {n}; pad or crop it")
    return n.bit_length() - 1


def fwht(x: Any) -> np.ndarray:
    """Unnormalized fast Walsh-Hadamard transform along the last axis.

    Parameters
    ----------
    x : array-like of shape (..., n)
        ``n`` a power of two.

    Returns
    -------
    ndarray of shape (..., n)
        ``X[k] = sum_i x[i] (-1)^<i,k>``; ``fwht(fwht(x)) = n x``.
    """
    a = as_matrix(x, "x", ndim=max(np.ndim(x), 1))
    n = a.shape[-1]
    check_power_of_two(n, "length of x")
    out = a.reshape(-1, n).copy()
    h = 1
    while h < n:
        v = out.reshape(out.shape[0], -1, 2, h)
        top, bot = v[:, :, 0, :].copy(), v[:, :, 1, :]
        v[:, :, 0, :] += bot
        v[:, :, 1, :] = top - bot
        h *= 2
    return out.reshape(a.shape)


def _parity(v: np.ndarray) -> np.ndarray:
    """Parity of the set bits of each non-negative int64 (as 0/1)."""
    v = v.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        v ^= v >> shift
    return v & 1


@dataclass
class SparseWHTResult:
    """A recovered sparse spectrum and the cost paid.

    Attributes
    ----------
    indices : ndarray of shape (K,), int64
        Spectral indices found, ascending.
    values : ndarray of shape (K,)
        Their WHT coefficients.
    n : int
        Signal length.
    n_samples : int
        Time-domain samples read.
    """

    indices: np.ndarray
    values: np.ndarray
    n: int
    n_samples: int

    def dense(self) -> np.ndarray:
        """The full spectrum.

        Returns
        -------
        ndarray of shape (n,)
            ``values`` at ``indices``, zeros elsewhere.
        """
        out = np.zeros(self.n)
        out[self.indices] = self.values
        return out


def sparse_wht(
    signal: Any,
    k: int,
    n: int | None = None,
    n_subspaces: int = 3,
    n_delay_groups: int = 4,
    bins_per_k: float = 1.0,
    noise_std: float = 0.0,
    max_peel: int = 30,
    max_rounds: int = 4,
    random_state: Any = None,
) -> SparseWHTResult:
    """Recover the K-sparse WHT of ``signal`` from few samples.

    Uses ``n_subspaces * B * n_delay_groups * (N + 1)`` samples per round with
    ``B = 2^ceil(log2(bins_per_k * k))``; a round that leaves unexplained bins (a peeling failure)
    is followed by a fresh one, up to ``max_rounds``.

    Parameters
    ----------
    signal : array-like of shape (n,) or callable
        The time-domain signal, ``n = 2^N``, or a callable mapping an int64 index array to values
        (then pass ``n``); only the sampled entries are read.
    k : int
        Sparsity K of the spectrum (at most n).
    n : int, optional
        Signal length, required when ``signal`` is a callable.
    n_subspaces : int, default=3
        Random F2-subspaces (hashes) per round.
    n_delay_groups : int, default=4
        Random delay groups P used for majority-vote bit decoding.
    bins_per_k : float, default=1.0
        Bins per expected non-zero.
    noise_std : float, default=0.0
        Standard deviation of additive time-domain noise (0 for exact data); sets the single-ton test.
    max_peel : int, default=30
        Peeling passes per round.
    max_rounds : int, default=4
    random_state : int, numpy Generator or None, default=None

    Returns
    -------
    SparseWHTResult
        Indices and values of the recovered spectrum and the samples read.
    """
    if callable(signal):
        if n is None:
            raise SparsecraftError("n is required when signal is a callable; pass n=2**N")
        query: Callable[[np.ndarray], np.ndarray] = signal
        length = check_int(n, "n", low=2)
    else:
        arr = as_matrix(signal, "signal", ndim=1)
        length = arr.shape[0]
        if n is not None and n != length:
            raise SparsecraftError(f"n={n} does not match len(signal)={length}")
        query = arr.__getitem__
    N = check_power_of_two(length, "n" if callable(signal) else "len(signal)")
    k = check_int(k, "k")
    if k > length:
        raise SparsecraftError(f"k={k} exceeds the signal length {length}; choose k <= {length}")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    gen = rng(random_state)
    b = int(min(N, max(1, np.ceil(np.log2(max(bins_per_k * k, 1.0))))))
    Bn = 1 << b
    P = check_int(n_delay_groups, "n_delay_groups")
    unit = 1 << np.arange(N, dtype=np.int64)
    # delays: P random bases, each followed by its N single-bit flips
    base = gen.integers(0, length, size=P, dtype=np.int64)
    delays = np.concatenate([base[:, None], base[:, None] ^ unit[None, :]], axis=1).ravel()  # (P*(N+1),)
    noise_var = (length**2 / Bn) * noise_std**2    # variance of one scaled bin value U
    found: dict[int, float] = {}
    n_samples, threshold = 0, None
    for _ in range(check_int(max_rounds, "max_rounds")):
        subspaces = [_measure(query, length, N, b, delays, gen) for _ in range(check_int(n_subspaces, "n_subspaces"))]
        n_samples += len(subspaces) * delays.size * Bn
        if threshold is None:
            floor = 1e-10 * max(1.0, max(float(np.abs(U).max()) for _, U in subspaces)) ** 2
            threshold = 4.0 * noise_var + floor
        for kk, alpha in found.items():                 # remove what earlier rounds already found
            signs = 1.0 - 2.0 * _parity(delays & kk)
            for cols, U in subspaces:
                U[:, _hash(kk, cols)] -= alpha * signs
        _peel(subspaces, delays, P, N, threshold, found, max_peel)
        if all(((U**2).mean(axis=0) <= threshold).all() for _, U in subspaces):
            break                                        # every bin explained: done
    keys = np.array(sorted(k_ for k_, v in found.items() if v != 0.0), dtype=np.int64)
    return SparseWHTResult(keys, np.array([found[int(i)] for i in keys]), length, n_samples)


def _measure(query: Callable[[np.ndarray], np.ndarray], n: int, N: int, b: int, delays: np.ndarray,
             gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample on one random subspace for every delay; return H's columns and the scaled bins (D, B)."""
    Bn = 1 << b
    cols = _random_full_rank(N, b, gen)
    m_idx = np.arange(Bn, dtype=np.int64)
    Hm = np.zeros(Bn, dtype=np.int64)
    for j in range(b):
        Hm ^= np.where((m_idx >> j) & 1, cols[j], 0)
    idx = Hm[None, :] ^ delays[:, None]
    U = fwht(np.asarray(query(idx.ravel()), dtype=np.float64).reshape(idx.shape)) * (n / Bn)
    return cols, U


def _peel(subspaces: list[tuple[np.ndarray, np.ndarray]], delays: np.ndarray, P: int, N: int,
          threshold: float, found: dict[int, float], max_peel: int) -> None:
    """Find single-ton bins, decode their index by majority vote, subtract them everywhere; repeat."""
    unit = 1 << np.arange(N, dtype=np.int64)
    for _ in range(max_peel):
        new = 0
        for cols, U in subspaces:
            for j in np.flatnonzero((U**2).mean(axis=0) > threshold):
                col = U[:, j].reshape(P, N + 1)
                votes = (col[:, 1:] * col[:, :1]) < 0          # bit i of k is 1 where the sign flips
                kk = int((votes.mean(axis=0) > 0.5) @ unit)
                signs = 1.0 - 2.0 * _parity(delays & kk)
                alpha = float(U[:, j] @ signs) / delays.size
                if ((U[:, j] - alpha * signs) ** 2).mean() > threshold or alpha**2 <= threshold:
                    continue                                    # multi-ton (or noise)
                if _hash(kk, cols) != j:
                    continue                                    # decoded index does not hash here
                found[kk] = found.get(kk, 0.0) + alpha
                for cols2, U2 in subspaces:
                    U2[:, _hash(kk, cols2)] -= alpha * signs
                new += 1
        if not new:
            return


def _hash(k: int, cols: np.ndarray) -> int:
    """Bin of spectral index ``k`` under H: bit j is <k, column_j>."""
    bits = _parity(np.int64(k) & cols)
    return int(bits @ (1 << np.arange(cols.size)))


def _random_full_rank(N: int, b: int, gen: np.random.Generator) -> np.ndarray:
    """b linearly independent random vectors of F2^N, as ints (the columns of H)."""
    while True:
        cols = gen.integers(1, 1 << N, size=b, dtype=np.int64)
        basis: list[int] = []
        for c in cols.tolist():
            for v in basis:
                c = min(c, c ^ v)
            if c:
                basis = sorted(basis + [c], reverse=True)
        if len(basis) == b:
            return cols
