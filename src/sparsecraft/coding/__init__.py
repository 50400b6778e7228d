"""Sparse coding and sparse recovery: scikit-learn-style estimators on numpy.

Pursuit and thresholding (:mod:`.estimators`, :mod:`.encode`), sparse Bayesian learning
(:mod:`.sbl`), dictionary learning (:mod:`.dictionary`),
convolutional sparse coding (:mod:`.conv`), probabilistic sparse coding
(:mod:`.probabilistic`), spectral unmixing (:mod:`.unmixing`), LDP sparse regression
(:mod:`.ldp`), fast and sparse Walsh-Hadamard transforms (:mod:`.wht`). See docs/coding.md.
"""
from .conv import ConvSparseCoding, image_crops
from .dictionary import DictionaryLearning, image_patches, match_dictionaries
from .encode import ENCODERS, SparseEncoder, sparse_encode
from .estimators import IHT, OMP, Lasso
from .ldp import LDPSparseRegression
from .penalties import PENALTIES
from .probabilistic import BinarySparseCoding, SpikeAndSlabSparseCoding
from .sbl import SBL, KroneckerSBL
from .unmixing import SparseUnmixing, synthetic_mixture
from .wht import SparseWHTResult, fwht, sparse_wht

__all__ = [
    # estimators
    "BinarySparseCoding", "ConvSparseCoding", "DictionaryLearning", "IHT", "KroneckerSBL", "LDPSparseRegression",
    "Lasso", "OMP", "SBL", "SparseEncoder", "SparseUnmixing", "SpikeAndSlabSparseCoding",
    # functions, registries and results
    "ENCODERS", "PENALTIES", "SparseWHTResult", "fwht", "image_crops", "image_patches", "match_dictionaries",
    "sparse_encode", "sparse_wht", "synthetic_mixture",
]
