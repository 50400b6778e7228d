"""Sparse coding and sparse recovery: scikit-learn-style estimators on numpy.

Pursuit and thresholding (:mod:`.estimators`, :mod:`.encode`), sparse Bayesian learning
(:mod:`.sbl`), dictionary learning (:mod:`.dictionary`), probabilistic sparse coding
(:mod:`.probabilistic`), fast and sparse Walsh-Hadamard transforms (:mod:`.wht`). See docs/coding.md.
"""
from .dictionary import DictionaryLearning, image_patches, match_dictionaries
from .encode import ENCODERS, SparseEncoder, sparse_encode
from .estimators import IHT, OMP, Lasso
from .penalties import PENALTIES
from .probabilistic import BinarySparseCoding, SpikeAndSlabSparseCoding
from .sbl import SBL, KroneckerSBL
from .wht import SparseWHTResult, fwht, sparse_wht

__all__ = [
    "BinarySparseCoding", "DictionaryLearning", "SpikeAndSlabSparseCoding", "image_patches",
    "match_dictionaries", "ENCODERS", "IHT", "OMP", "PENALTIES", "SBL", "KroneckerSBL", "Lasso", "SparseEncoder",
    "SparseWHTResult", "fwht", "sparse_encode", "sparse_wht",
]
