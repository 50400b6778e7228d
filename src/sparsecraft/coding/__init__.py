"""Sparse coding and sparse recovery: scikit-learn-style estimators on numpy.

Pursuit and thresholding (:mod:`.estimators`, :mod:`.encode`), sparse Bayesian learning
(:mod:`.sbl`), fast and sparse Walsh-Hadamard transforms (:mod:`.wht`). See docs/coding.md.
"""
from .encode import ENCODERS, SparseEncoder, sparse_encode
from .estimators import IHT, OMP, Lasso
from .penalties import PENALTIES
from .sbl import SBL, KroneckerSBL
from .wht import SparseWHTResult, fwht, sparse_wht

__all__ = [
    "ENCODERS", "IHT", "OMP", "PENALTIES", "SBL", "KroneckerSBL", "Lasso", "SparseEncoder",
    "SparseWHTResult", "fwht", "sparse_encode", "sparse_wht",
]
